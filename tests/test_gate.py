"""The safety gate in front of migrate (each file judged by where it will run), `lint --baseline` reading the fleet,
and the rehearsal on a scratch database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from fleetkit import (
    ROOT,
    SQLX,
    cli,
    fleet_registry,
    make_migrations,
    make_school,
    registry_url,
    sqlx_info,
    write_registry,
)
from pgfixtures import PG_PASSWORD, database_exists, execute_sync, fetch_sync, fetchval_sync, run_sync, unique_db_name

from orchestrator import sqlx
from orchestrator.command import Command
from orchestrator.devserver import DevServer
from orchestrator.errors import UnsafeMigrations
from orchestrator.job import Request, prepare
from orchestrator.outcome import Status
from orchestrator.runner import plan_first, run

SAFE = {
    "1_create_people.up.sql": "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL DEFAULT '');\n",
    "1_create_people.down.sql": "DROP TABLE people;\n",
}
DESTRUCTIVE = {
    **SAFE,
    "2_drop_name.up.sql": "-- the app stopped reading it\nALTER TABLE people DROP COLUMN name;\n",
    "2_drop_name.down.sql": "ALTER TABLE people ADD COLUMN name text NOT NULL DEFAULT '';\n",
}


def has_history(pg: DevServer, db: str) -> bool:
    return bool(fetchval_sync(pg.url(db), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"))


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def fleet(tmp_path: Path, pg: DevServer, n: int, label: str) -> tuple[Path, list[str]]:
    schools = [make_school(pg, f"{label}_{i}") for i in range(n)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    return registry, schools


def with_data(pg: DevServer, registry: Path, migrations: Path, schools: list[str]) -> None:
    """Bring the schools to version 1 (through the gate: file 1 is safe) with a row each: schools with data."""
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--target", "1")
    assert result.returncode == 0, result.stdout + result.stderr
    for db in schools:
        execute_sync(pg.url(db), "INSERT INTO people (id, name) VALUES (1, 'Ada')")


def test_the_gate_stops_a_destructive_file_before_any_school_with_data_is_touched(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    registry, schools = fleet(tmp_path, pg, 3, "gate")
    with_data(pg, registry, migrations, schools)
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 2, result.stdout
    assert "2_drop_name.up.sql:2:" in result.stderr and "drop-column" in result.stderr
    assert "no school was touched" in result.stderr
    assert "2_drop_name.up.sql: would run on 3 school(s) with data (s0, s1, s2), applied on no school yet" in (
        result.stderr
    )
    # The way out, for a file no school has applied: fix it; or --allow-unsafe, saying what it gives up.
    assert "no school has applied them: fix them" in result.stderr
    assert "--allow-unsafe: every finding goes through for this run" in result.stderr
    assert "--baseline" not in result.stderr, "never advised for a file no school has applied"
    assert all(versions(pg, db) == [1] for db in schools)


def test_allow_unsafe_lets_it_through_and_the_report_records_it(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    registry, schools = fleet(tmp_path, pg, 2, "unsafe")
    with_data(pg, registry, migrations, schools)
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--allow-unsafe", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--allow-unsafe" in result.stdout
    options = json.loads((tmp_path / "r.json").read_text())["options"]
    assert options["allow_unsafe"] is True
    assert any("drop-column" in line for line in options["unsafe_findings"])
    for db in schools:
        columns = fetch_sync(pg.url(db), "SELECT column_name FROM information_schema.columns WHERE table_name='people'")
        assert [r["column_name"] for r in columns] == ["id"]


def test_a_suppression_with_a_reason_passes_the_gate(tmp_path: Path, pg: DevServer) -> None:
    files = dict(DESTRUCTIVE)
    files["2_drop_name.up.sql"] = (
        "-- lint:ignore drop-column reason: no release reads people.name since v42\n"
        "ALTER TABLE people DROP COLUMN name;\n"
    )
    migrations = make_migrations(tmp_path / "m", files)
    registry, schools = fleet(tmp_path, pg, 1, "suppressed")
    with_data(pg, registry, migrations, schools)
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr


# --- judged by where it runs: new schools, schools with data -----------------------------------------------------

# What a real project's history holds, each fine on a new school's empty tables and refused on a busy one: an index
# without CONCURRENTLY, a column dropped, renamed and retyped, a NOT NULL column without a default, a table dropped.
BUSY_ONLY = {
    **SAFE,
    "2_index_names.sql": "CREATE INDEX people_name_idx ON people (name);\n",
    "3_reshape.up.sql": "ALTER TABLE people ADD COLUMN born date NOT NULL;\n"
    "ALTER TABLE people ALTER COLUMN id TYPE bigint;\n"
    "ALTER TABLE people RENAME COLUMN name TO full_name;\n",
    "3_reshape.down.sql": "ALTER TABLE people RENAME COLUMN full_name TO name;\n"
    "ALTER TABLE people ALTER COLUMN id TYPE int;\nALTER TABLE people DROP COLUMN born;\n",
    "4_scratch.sql": "CREATE TABLE scratch (id int);\nDROP TABLE scratch;\nALTER TABLE people DROP COLUMN born;\n",
}
ALL_VERSIONS = [1, 2, 3, 4]


@pytest.mark.sqlx
def test_new_schools_get_files_unsafe_for_busy_tables_without_any_flag(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "m", BUSY_ONLY)
    assert cli("lint", str(migrations), "--no-squawk").returncode == 1, "lint itself reports every rule"
    missing = unique_db_name("new_school")  # registered before its database exists
    bootstrapped = make_school(pg, "bootstrapped")  # created and bootstrapped by the admin side: an empty ledger
    execute_sync(pg.url(bootstrapped), sqlx.CREATE_HISTORY_TABLE)
    empty = make_school(pg, "empty")  # an empty database, no ledger
    registry = write_registry(tmp_path / "t.yaml", [
        ("new", registry_url(pg, missing), []), ("bootstrapped", registry_url(pg, bootstrapped), []),
        ("empty", registry_url(pg, empty), []),
    ])  # fmt: skip
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--create-missing")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for db in (missing, bootstrapped, empty):
        assert versions(pg, db) == ALL_VERSIONS
        assert set(sqlx_info(migrations, pg.url(db)).values()) == {"installed"}, db


def test_a_school_with_data_is_still_refused_the_same_files_and_no_school_is_touched(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "m", BUSY_ONLY)
    busy = make_school(pg, "busy")
    missing = unique_db_name("new_school")
    registry = write_registry(
        tmp_path / "t.yaml", [("busy", registry_url(pg, busy), []), ("new", registry_url(pg, missing), [])]
    )
    args = ("--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--create-missing")
    assert cli("migrate", *args, "--tenant", "busy", "--target", "1").returncode == 0
    execute_sync(pg.url(busy), "INSERT INTO people (id, name) VALUES (1, 'Ada')")

    refused = cli("migrate", *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    for rule in ("index-without-concurrently", "add-not-null-without-default", "change-column-type",
                 "rename-column", "drop-column"):  # fmt: skip
        assert rule in refused.stderr, rule
    assert "2_index_names.sql: would run on 1 school(s) with data (busy), applied on no school yet" in refused.stderr
    assert versions(pg, busy) == [1], "nothing written"
    assert not run_sync(database_exists(pg.url(), missing)), "not even the new school was created"

    # A school with no ledger rows but tables of its own is not new: it has rows and readers.
    legacy = make_school(pg, "legacy")
    execute_sync(pg.url(legacy), "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL DEFAULT '')")
    legacy_registry = fleet_registry(tmp_path / "legacy.yaml", pg, [legacy])
    files = {"1_index_names.sql": "CREATE INDEX people_name_idx ON people (name);\n"}
    legacy_migrations = make_migrations(tmp_path / "legacy_m", files)
    result = cli("migrate", "--yes", "--registry", str(legacy_registry), "--migrations", str(legacy_migrations))
    assert result.returncode == 2 and "index-without-concurrently" in result.stderr, result.stdout + result.stderr


def test_rules_about_the_schema_itself_hold_on_new_schools_too(tmp_path: Path, pg: DevServer) -> None:
    files = {**SAFE, "2_pets.sql": "CREATE TABLE pets (id int PRIMARY KEY, owner int REFERENCES people (id));\n"}
    migrations = make_migrations(tmp_path / "m", files)
    missing = unique_db_name("new_school")
    registry = write_registry(tmp_path / "t.yaml", [("new", registry_url(pg, missing), [])])
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--create-missing")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "fk-without-on-delete" in result.stderr and "2_pets.sql: would run on new schools" in result.stderr
    assert not run_sync(database_exists(pg.url(), missing))

    # A single school's provision is judged by where it runs too: its database is new.
    provisioned = cli("provision", "-D", pg.url(unique_db_name("prov")), "--migrations",
                      str(make_migrations(tmp_path / "busy_only", BUSY_ONLY)))  # fmt: skip
    assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr


def test_the_refusal_names_baseline_for_applied_files_and_baseline_records_only_those(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "m", SAFE)
    registry, (ahead, behind) = fleet(tmp_path, pg, 2, "adopt")
    with_data(pg, registry, migrations, [ahead, behind])
    # The SQLx workers of one school already ran the index file (the fleet is mid-rollout, adopted now).
    make_migrations(migrations, {"2_index_names.sql": "CREATE INDEX people_name_idx ON people (name);\n"})
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run([str(SQLX), "migrate", "run", "--no-dotenv", "--source", str(migrations), "-D", pg.url(ahead)],
                   check=True, capture_output=True, env=env, timeout=60)  # fmt: skip
    make_migrations(migrations, {"3_drop_name.sql": "ALTER TABLE people DROP COLUMN name;\n"})  # new, unsafe
    args = ("--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")

    refused = cli("migrate", *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "2_index_names.sql: would run on 1 school(s) with data (s1), applied on 1 (s0)" in refused.stderr
    assert "2_index_names.sql: applied on some schools already" in refused.stderr
    assert f"`orchestrator lint {migrations} --baseline --registry {registry}`" in refused.stderr
    assert "3_drop_name.sql: no school has applied them: fix them" in refused.stderr

    baseline = cli("lint", str(migrations), "--baseline", "--no-squawk", "--registry", str(registry))
    assert baseline.returncode == 1, "the new unsafe file keeps its finding: " + baseline.stdout + baseline.stderr
    assert "recorded as released: 1_create_people.down.sql, 1_create_people.up.sql, 2_index_names.sql" in (
        baseline.stdout
    )
    assert "not recorded (no school has applied them" in baseline.stdout and "3_drop_name.sql" in baseline.stdout
    released = (migrations / "released.sum").read_text()
    assert "2_index_names.sql" in released and "3_drop_name.sql" not in released

    # The applied file now goes to the school behind as it went to the other; the new one is still refused.
    still = cli("migrate", *args)
    assert still.returncode == 2 and "3_drop_name.sql" in still.stderr and "2_index_names" not in still.stderr
    (migrations / "3_drop_name.sql").unlink()
    assert cli("migrate", *args).returncode == 0
    assert versions(pg, behind) == [1, 2]


def test_baseline_without_a_fleet_to_read_is_refused_and_records_nothing(tmp_path: Path) -> None:
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    # Run where there is no tenants.yaml, with no -D, --registry or $DATABASE_URL.
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", "lint", str(migrations), "--baseline"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "reads the fleet's ledgers" in result.stderr and "pass --registry PATH" in result.stderr
    assert not (migrations / "released.sum").exists()


def test_the_rehearsal_catches_a_failing_down_file_before_any_school(tmp_path: Path, pg: DevServer) -> None:
    files = {
        **SAFE,
        "2_add_city.up.sql": "ALTER TABLE people ADD COLUMN city text NOT NULL DEFAULT '';\n",
        "2_add_city.down.sql": "ALTER TABLE people DROP COLUMN town;\n",  # wrong column: the down file fails
    }
    migrations = make_migrations(tmp_path / "m", files)
    registry, schools = fleet(tmp_path, pg, 2, "rehearse")
    # The fleet stands at version 1; the rollout brings version 2.
    args = ("--yes", "--registry", str(registry), "--migrations", str(migrations))
    assert cli("migrate", "--yes", *args, "--target", "1").returncode == 0
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--rehearse", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1
    assert "rehearsal" in result.stdout and "2_add_city.down.sql" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert {s["status"] for s in report["schools"]} == {"skipped"}
    for db in schools:
        versions = [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations")]
        assert versions == [1], "no school was touched"
    # (Spares that other tests on this server keep ready are not the rehearsal's.)
    leftovers = fetch_sync(
        pg.url(),
        "SELECT datname FROM pg_database WHERE datname LIKE 'orchestrator_%' "
        "AND datname NOT LIKE 'orchestrator_spare_%'",
    )
    assert leftovers == [], "scratch databases are dropped"


def test_a_good_rehearsal_then_rolls_out(tmp_path: Path, pg: DevServer) -> None:
    files = {
        **SAFE,
        "2_add_city.up.sql": "ALTER TABLE people ADD COLUMN city text NOT NULL DEFAULT '';\n",
        "2_add_city.down.sql": "ALTER TABLE people DROP COLUMN city;\n",
    }
    migrations = make_migrations(tmp_path / "m", files)
    registry, schools = fleet(tmp_path, pg, 2, "rehearse_ok")
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--rehearse")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rehearsal: from version nothing: 2 migration(s) up, down and up again: ok" in result.stdout
    for db in schools:
        assert has_history(pg, db)


def test_the_gate_judges_from_the_plan_pass_the_run_is_handed_not_a_second_one(tmp_path: Path, pg: DevServer) -> None:
    """One plan pass: the runner's gate reads where each file would run from the pass it is given (the CLI's), the
    same one that refuses a split fleet. Shown by handing it a pass that calls a school with tables of its own new:
    the busy-table rules then let the file through there."""
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    registry, [school] = fleet(tmp_path, pg, 1, "handed")
    with_data(pg, registry, migrations, [])  # version 1: a table of its own, no rows yet
    os.environ["PGPW"] = PG_PASSWORD
    job = prepare(Request(command=Command.MIGRATE, registry=registry, migrations=migrations))
    planned = run_sync(plan_first(job))
    [outcome] = planned.outcomes
    assert outcome.result.status is Status.PLANNED and not outcome.result.new_school, "tables of its own: not new"
    with pytest.raises(UnsafeMigrations, match="drop-column"):
        run_sync(run(job, planned=planned))
    assert versions(pg, school) == [1], "nothing written"

    outcome.result.new_school = True  # what this pass says is what the gate goes by: no pass of its own
    report = run_sync(run(job, planned=planned))
    assert report.outcomes[0].result.status is Status.APPLIED, report.outcomes[0].result
    assert versions(pg, school) == [1, 2]


def test_baseline_reads_several_directories_as_one_source_and_records_each_in_its_own_released_sum(
    tmp_path: Path, pg: DevServer
) -> None:
    main = make_migrations(tmp_path / "main", SAFE)
    deferred = make_migrations(tmp_path / "deferred", {"2_index_names.sql": "CREATE INDEX n_idx ON people (name);\n"})
    registry, _ = fleet(tmp_path, pg, 1, "two_dirs")
    both = ("--migrations", str(main), "--migrations", str(deferred))
    applied = cli("migrate", "--yes", "--registry", str(registry), *both, "--allow-unsafe", "--no-progress")
    assert applied.returncode == 0, applied.stdout + applied.stderr

    # One directory alone: the school's version 2 has no file there, so it is not read without --ignore-missing.
    alone = cli("lint", str(main), "--baseline", "--no-squawk", "--registry", str(registry))
    assert "not read: 1 school(s)" in alone.stdout and "missing" in alone.stdout, alone.stdout
    assert "1_create_people" not in (main / "released.sum").read_text()
    ignoring = cli("lint", str(main), "--baseline", "--no-squawk", "--registry", str(registry), "--ignore-missing")
    assert ignoring.returncode == 0, ignoring.stdout + ignoring.stderr
    assert "1_create_people.up.sql" in (main / "released.sum").read_text()
    (main / "released.sum").unlink()

    baseline = cli("lint", str(main), str(deferred), "--baseline", "--no-squawk", "--registry", str(registry))
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert "1_create_people.up.sql" in (main / "released.sum").read_text()
    assert "2_index_names.sql" not in (main / "released.sum").read_text()
    assert "2_index_names.sql" in (deferred / "released.sum").read_text()
