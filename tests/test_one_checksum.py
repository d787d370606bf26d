"""One file, one checksum across the fleet: an edited file is never applied to some schools while others hold its
original bytes (that would leave SQLx workers refusing to start on those). The plan pass refuses it before any
write on every rollout over a registry, with or without a terminal; --resume refuses it from the earlier report;
onboarding refuses it when the template (or a school the run read) holds the applied bytes. The CLI runs here as
in CI: no terminal, stdout piped."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fleetkit import (
    ROOT,
    cli,
    fleet_registry,
    make_migrations,
    make_school,
    registry_url,
    run_fleet_job,
    write_registry,
)
from pgfixtures import database_exists, execute_sync, fetch_sync, fetchval_sync, ledger, run_sync, unique_db_name

import orchestrator
from orchestrator.devserver import DevServer
from orchestrator.errors import UsageError
from orchestrator.job import Command

UUID_OSSP = ("uuid-ossp",)  # the project's migrations call uuid_generate_v4(); none is the default
SPLIT = "applying them elsewhere would split the fleet. Nothing was written"


def partly_failed_fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, dict[str, str], Path]:
    """s0 and s1 applied all three files; s2 failed at file 2 (its table already existed)."""
    migrations = make_migrations(tmp_path / "migrations")
    schools = {f"s{i}": make_school(pg, f"split_{i}") for i in range(3)}
    execute_sync(pg.url(schools["s2"]), "CREATE TABLE two (id int)")
    registry = fleet_registry(tmp_path / "tenants.yaml", pg, list(schools.values()))
    report = tmp_path / "first.json"
    first = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                "--report", str(report), "--concurrency", "1")  # fmt: skip
    assert first.returncode == 1, first.stdout + first.stderr
    # The tempting fix: edit the failing file so that it passes on s2.
    edited = migrations / "2_slow_step.sql"
    edited.write_text(edited.read_text().replace("CREATE TABLE two", "CREATE TABLE IF NOT EXISTS two"))
    return migrations, registry, schools, report


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def test_resume_refuses_to_apply_an_edited_file_that_other_schools_hold(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools, report = partly_failed_fleet(tmp_path, pg)
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--resume", str(report))  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "2_slow_step.sql: edited since 2 school(s) of that run applied it (s0, s1)" in result.stderr
    assert "new migration" in result.stderr and "split the fleet" in result.stderr
    assert versions(pg, schools["s2"]) == [1], "nothing was touched"


def ledgers(pg: DevServer, schools: dict[str, str]) -> dict[str, list[tuple[int, str, bool, bytes]]]:
    return {school_id: ledger(pg.url(db)) for school_id, db in schools.items()}


@pytest.mark.parametrize("flags", [[], ["--yes"], ["--yes", "--json"], ["--preflight", "--yes"]])
def test_the_plan_pass_refuses_before_any_write_without_a_terminal(
    tmp_path: Path, pg: DevServer, flags: list[str]
) -> None:
    migrations, registry, schools, _ = partly_failed_fleet(tmp_path, pg)
    before = ledgers(pg, schools)
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", *flags)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "version 2: the file differs from what 2 school(s) applied (s0, s1)" in result.stderr
    assert SPLIT in result.stderr and "not confirmed" not in result.stderr, "refused before any question"
    assert ledgers(pg, schools) == before, "nothing was written"
    assert versions(pg, schools["s2"]) == [1]


def test_the_python_api_gets_the_same_refusal(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools, _ = partly_failed_fleet(tmp_path, pg)
    before = ledgers(pg, schools)
    with pytest.raises(UsageError, match="version 2: the file differs from what 2 school"):
        run_fleet_job(Command.MIGRATE, registry, migrations)
    assert ledgers(pg, schools) == before


def test_without_a_plan_pass_the_first_school_holding_other_bytes_halts_the_rollout(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations, registry, schools, _ = partly_failed_fleet(tmp_path, pg)
    report = tmp_path / "second.json"
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--no-preflight", "--yes", "--concurrency", "1", "--per-server", "1",
                 "--report", str(report))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "warning: --no-preflight: no read-only plan pass" in " ".join(result.stdout.split())
    data = json.loads(report.read_text())
    by_id = {s["id"]: s["status"] for s in data["schools"]}
    assert by_id == {"s0": "modified", "s1": "skipped", "s2": "skipped"}
    assert "no new school was started" in data["halted"]
    assert versions(pg, schools["s2"]) == [1]


# --- onboarding -----------------------------------------------------------------------------------------------------


def test_creating_missing_schools_from_the_files_is_refused_when_a_school_read_holds_other_bytes(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    applied, new = make_school(pg, "onboard_applied"), unique_db_name("onboard_new")
    registry = write_registry(
        tmp_path / "t.yaml", [("old", registry_url(pg, applied), []), ("new", registry_url(pg, new), [])]
    )
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--yes")
    assert cli("migrate", *args, "--tenant", "old").returncode == 0
    edited = migrations / "3_add_three.sql"
    edited.write_text(edited.read_text().replace("CREATE TABLE three", "CREATE TABLE IF NOT EXISTS three"))
    before = ledger(pg.url(applied))

    for command in (["migrate", "--create-missing"], ["provision"]):
        result = cli(*command, *args)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "version 3: the file differs from what 1 school(s) applied (old)" in result.stderr, command
        assert not run_sync(database_exists(pg.url(), new)), "no database created"
        assert ledger(pg.url(applied)) == before


def test_onboarding_from_a_template_holding_other_bytes_is_refused(tmp_path: Path, pg: DevServer) -> None:
    # The project's schema without released.sum (which would refuse the edit before any connection).
    migrations = Path(shutil.copytree(ROOT / "migrations", tmp_path / "m", ignore=shutil.ignore_patterns("*.sum")))
    template = unique_db_name("tpl_split")
    first = orchestrator.provision(
        pg.url(unique_db_name("from_tpl")), migrations=migrations, template=template, extensions=UUID_OSSP
    )
    assert first.ok and first.notes[-1].startswith(f"created database {first.database} from template {template}")
    [edited] = migrations.glob("20250201000000_*.up.sql")
    edited.write_text(edited.read_text() + "\nCREATE TABLE edited_after_release (id int);\n")

    new = unique_db_name("onboard_split")
    result = cli("provision", "-D", pg.url(new), "--migrations", str(migrations), "--template", template, "--json",
                 "--extension", *UUID_OSSP)  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "onboarding found migration files that differ from the bytes the template holds" in result.stderr
    assert f"version 20250201000000: the file differs from what template {template} on 127.0.0.1:{pg.port} holds" in (
        result.stderr
    )
    assert result.stdout == "", "no report: refused input"
    assert not run_sync(database_exists(pg.url(), new)), "no database created"
    builds = (
        "SELECT count(*) FROM pg_database WHERE datname LIKE 'orchestrator_%' "
        "AND datname NOT LIKE 'orchestrator_spare_%'"  # other tests' spares on this server
    )
    assert fetchval_sync(pg.url(), builds) == 0, "the refresh's builds are dropped"
    with pytest.raises(UsageError, match="the template holds"):  # the admin service's hook
        orchestrator.provision(pg.url(new), migrations=migrations, template=template, extensions=UUID_OSSP)
    assert not run_sync(database_exists(pg.url(), new))


def test_in_a_run_that_wrote_elsewhere_a_refused_onboarding_is_a_modified_school_and_halts(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = Path(shutil.copytree(ROOT / "migrations", tmp_path / "m", ignore=shutil.ignore_patterns("*.sum")))
    template = unique_db_name("tpl_halt")
    built = orchestrator.provision(
        pg.url(unique_db_name("built_it")), migrations=migrations, template=template, extensions=UUID_OSSP
    )
    assert built.ok
    [edited] = migrations.glob("20250201000000_*.up.sql")
    edited.write_text(edited.read_text() + "\nCREATE TABLE edited_after_release (id int);\n")
    behind, new = make_school(pg, "behind"), unique_db_name("new_halt")  # behind: no migration yet, no template
    execute_sync(pg.url(behind), 'CREATE EXTENSION "uuid-ossp"')
    registry = write_registry(
        tmp_path / "t.yaml", [("behind", registry_url(pg, behind), []), ("new", registry_url(pg, new), [])],
        f"defaults:\n  template: {template}\n  extensions: [uuid-ossp]",
    )  # fmt: skip

    report = run_fleet_job(Command.MIGRATE, registry, migrations, create_missing=True)

    results = {o.tenant.id: o.result for o in report.outcomes}
    assert results["behind"].status.value == "applied"
    assert results["new"].status.value == "modified" and results["new"].error is not None
    assert f"version 20250201000000: the file differs from what template {template}" in results["new"].error.message
    assert not run_sync(database_exists(pg.url(), new))
    assert report.run.halted and "new is modified" in report.run.halted


def test_an_edited_file_is_refused_whichever_way_the_school_would_be_made(tmp_path: Path, pg: DevServer) -> None:
    """The template's marker keeps each version's checksum: a ready copy, or the files when the template cannot be
    used (here `--target` before its version), are no way around the refusal either."""
    migrations = make_migrations(tmp_path / "m")
    template = unique_db_name("tpl_every_way")
    kept = cli("template", "--yes", "-D", pg.url(unique_db_name("unused")), "--spares", "1", "--template", template,
               "--migrations", str(migrations))  # fmt: skip
    assert kept.returncode == 0, kept.stdout + kept.stderr
    spares = "SELECT count(*) FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE $1"
    assert fetchval_sync(pg.url(), spares, f'%"template": "{template}"%') == 1
    edited = migrations / "1_create_log.sql"
    edited.write_text(edited.read_text() + "-- edited\n")

    new = unique_db_name("every_way")
    common = ("-D", pg.url(new), "--migrations", str(migrations), "--template", template)
    # A ready copy; the files (the template is kept at the latest, --target stops before).
    for command in (("provision",), ("migrate", "--create-missing", "--target", "2", "--yes")):
        result = cli(*command, *common)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"version 1: the file differs from what template {template} on 127.0.0.1:{pg.port} holds" in (
            result.stderr
        ), command
        assert not run_sync(database_exists(pg.url(), new)), "no database created"
    assert fetchval_sync(pg.url(), spares, f'%"template": "{template}"%') == 1, "the spare is left as it was"
