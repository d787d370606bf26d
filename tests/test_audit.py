"""The nightly audit on real school databases: every kind of drift, injected by hand, is found and described;
a clean fleet is clean; nothing is ever written to a school. Runs on every PostgreSQL version of the suite."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from fleetkit import cli, make_school, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
    abandoned_scratch,
    create_database,
    database_exists,
    drop_database,
    execute_sync,
    run_sync,
)
from pgversions import MigrationSet

from orchestrator import provision
from orchestrator.audit.html import render_html
from orchestrator.audit.metrics import render_prometheus
from orchestrator.audit.model import AuditReport
from orchestrator.audit.run import run_audit
from orchestrator.devserver import DevServer
from orchestrator.job import Command, Request, prepare
from orchestrator.outcome import Status
from orchestrator.settings import Budgets, SchoolSettings

FIRST, SECOND, LATEST = 20250101000000, 20250115000000, 20250201000000


@pytest.fixture
def migrations(tmp_path: Path, schema_set: MigrationSet) -> MigrationSet:
    """A private copy of the school schema (as `pg` runs it), so a test can edit or delete files."""
    return MigrationSet(Path(shutil.copytree(schema_set.directory, tmp_path / "migrations")), schema_set.extensions)


def school(pg: DevServer, label: str, migrations: MigrationSet, target: int | None = None) -> str:
    name = make_school(pg, label)
    if target is None:
        result = provision(pg.url(name), migrations=migrations.directory, extensions=migrations.extensions)
    else:
        from orchestrator import engine
        from orchestrator.source import load_migrations
        from orchestrator.target import DatabaseTarget

        result = run_sync(
            engine.provision(
                DatabaseTarget.parse(pg.url(name)),
                load_migrations(migrations.directory),
                engine.EngineOptions(target_version=target, extensions=migrations.extensions),
            )
        )
    assert result.ok, result.error
    return name


def audit(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet, schools: dict[str, str], defaults: str = "", **request: Any
) -> AuditReport:
    tenants = [(sid, registry_url(pg, db), []) for sid, db in schools.items()]
    # The extensions the schools were set up with (nothing is expected of a school that nobody asked for).
    defaults = defaults or f"defaults:\n  extensions: [{', '.join(migrations.extensions)}]\n"
    registry = write_registry(tmp_path / "t.yaml", tenants, defaults=defaults)
    os.environ["PGPW"] = PG_PASSWORD
    job = prepare(Request(command=Command.AUDIT, registry=registry, migrations=migrations.directory, **request))
    return run_sync(run_audit(job))


def findings(report: AuditReport) -> dict[str, list[str]]:
    return {s.tenant.id: [f.text for f in s.findings] for s in report.schools}


def test_a_clean_fleet_at_two_versions_is_clean(tmp_path: Path, pg: DevServer, migrations: MigrationSet) -> None:
    schools = {
        "a": school(pg, "clean_a", migrations),
        "b": school(pg, "clean_b", migrations),
        "old": school(pg, "clean_old", migrations, target=SECOND),
    }
    report = audit(tmp_path, pg, migrations, schools)
    found = findings(report)
    assert found["a"] == found["b"] == []
    assert found["old"] == [f"1 migration(s) pending: {LATEST}"], "behind, but its schema matches its version"
    assert not any(s.schema_drift for s in report.schools)
    groups = report.fingerprint_groups()
    assert [len(ids) for _, ids in groups] == [2, 1], "two schemas: one per version"
    assert report.version_histogram() == [(LATEST, 2), (SECOND, 1)]


def test_each_kind_of_schema_drift_is_found_and_described(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet
) -> None:
    schools = {kind: school(pg, f"drift_{kind}", migrations) for kind in ("clean", "index", "column", "type")}
    execute_sync(pg.url(schools["index"]), "CREATE INDEX idx_students_email ON students (email)")
    execute_sync(pg.url(schools["column"]), "ALTER TABLE grades DROP COLUMN comment")
    execute_sync(pg.url(schools["type"]), "ALTER TABLE grades ALTER COLUMN score TYPE numeric(6,2)")
    report = audit(tmp_path, pg, migrations, schools)
    found = findings(report)
    assert found["clean"] == []
    assert found["index"] == ["students: index idx_students_email not in migrations"]
    assert "grades.comment: column missing (migrations create it)" in found["column"]
    assert "grades.score: type numeric(6,2), migrations say numeric(5,2)" in found["type"]
    assert report.counts()["schema_drift"] == 3
    groups = report.fingerprint_groups()
    assert len(groups) == 4 and all(len(ids) == 1 for _, ids in groups)


def test_history_drift_is_found_and_described(tmp_path: Path, pg: DevServer, migrations: MigrationSet) -> None:
    schools = {kind: school(pg, f"hist_{kind}", migrations) for kind in ("dirty", "nohistory")}
    execute_sync(pg.url(schools["dirty"]), f"UPDATE _sqlx_migrations SET success = false WHERE version = {LATEST}")
    execute_sync(pg.url(schools["nohistory"]), "DROP TABLE _sqlx_migrations")
    execute_sync(pg.url(schools["dirty"]), "CREATE EXTENSION citext")
    configured = ", ".join([*migrations.extensions, "citext"])
    report = audit(tmp_path, pg, migrations, schools, defaults=f"defaults:\n  extensions: [{configured}]\n")
    found = findings(report)
    assert f"migration {LATEST} is partially applied (success = false in the history)" in found["dirty"]
    assert "no _sqlx_migrations table: this school was never bootstrapped" in found["nohistory"]
    missing = "extension citext is not installed (configured by the registry's defaults.extensions)"
    assert missing in found["nohistory"] and missing not in found["dirty"]


def test_edited_and_deleted_files_are_found(tmp_path: Path, pg: DevServer, migrations: MigrationSet) -> None:
    schools = {"edited": school(pg, "files_edited", migrations)}
    up = migrations.directory / "20250115000000_add_attendance.up.sql"
    up.write_bytes(up.read_bytes().replace(b"\n", b"\r\n"))
    (migrations.directory / "20250201000000_add_grades.up.sql").unlink()
    (migrations.directory / "20250201000000_add_grades.down.sql").unlink()
    report = audit(tmp_path, pg, migrations, schools)
    texts = findings(report)["edited"]
    assert (
        "20250115000000_add_attendance.up.sql was edited after it was applied "
        "(only its line endings differ: CRLF vs LF)"
    ) in texts
    assert f"migration {LATEST} is applied but has no file (deleted, or the school is ahead)" in texts


def pg_dump(pg: DevServer, db: str) -> str:
    out = subprocess.run(
        [str(pg.bindir / "pg_dump"), "-h", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", db],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PGPASSWORD": PG_PASSWORD},
    ).stdout
    # PostgreSQL 15.18's pg_dump writes a random \restrict token per dump.
    return "\n".join(line for line in out.splitlines() if not line.startswith(("\\restrict", "\\unrestrict")))


def test_the_audit_writes_nothing_to_schools(tmp_path: Path, pg: DevServer, migrations: MigrationSet) -> None:
    schools = {"drifted": school(pg, "ro_drifted", migrations), "behind": school(pg, "ro_behind", migrations, FIRST)}
    execute_sync(pg.url(schools["drifted"]), "CREATE TABLE library (id int); INSERT INTO library VALUES (1)")
    before = {sid: pg_dump(pg, db) for sid, db in schools.items()}
    report = audit(tmp_path, pg, migrations, schools)
    assert not report.clean
    assert {sid: pg_dump(pg, db) for sid, db in schools.items()} == before
    assert "table library not in migrations" in findings(report)["drifted"]


def test_the_audit_command_writes_its_outputs_and_exits_1_on_drift(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet
) -> None:
    clean, drifted = school(pg, "cli_clean", migrations), school(pg, "cli_drifted", migrations)
    execute_sync(pg.url(drifted), "CREATE INDEX idx_teachers_phone ON teachers (phone)")
    registry = write_registry(tmp_path / "t.yaml", [("clean", registry_url(pg, clean), []),
                                                     ("drifted", registry_url(pg, drifted), [])])  # fmt: skip
    out = tmp_path / "out"
    extensions = [flag for name in migrations.extensions for flag in ("--extension", name)]
    result = cli("audit", "--registry", str(registry), "--migrations", str(migrations.directory), "--no-progress",
                 "--report", str(out / "a.json"), "--junit", str(out / "a.xml"), "--metrics", str(out / "a.prom"),
                 "--html", str(out / "a.html"), *extensions)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "teachers: index idx_teachers_phone not in migrations" in result.stdout
    assert "live schemas: 1 alike, 1 differ from those; 1 of 2 as their migrations produce" in result.stdout
    data = json.loads((out / "a.json").read_text())
    assert data["summary"]["drift"] == 1 and data["clean"] is False
    prom = (out / "a.prom").read_text()
    assert 'orchestrator_audit_school_drift{school="drifted"' in prom
    html = (out / "a.html").read_text()
    assert "idx_teachers_phone" in html
    for path in out.iterdir():
        assert PG_PASSWORD not in path.read_text()
    assert PG_PASSWORD not in result.stdout + result.stderr

    execute_sync(pg.url(drifted), "DROP INDEX idx_teachers_phone")
    again = cli("audit", "--registry", str(registry), "--migrations", str(migrations.directory), "--no-progress",
                *extensions)  # fmt: skip
    assert again.returncode == 0, again.stdout
    assert "clean" in again.stdout


def test_each_school_is_compared_with_its_own_extensions(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet
) -> None:
    """A school set up with an extra extension is clean; the same extension elsewhere is drift."""
    configured, unconfigured = school(pg, "ext_configured", migrations), school(pg, "ext_unconfigured", migrations)
    for db in (configured, unconfigured):
        execute_sync(pg.url(db), "CREATE EXTENSION citext")
    registry = tmp_path / "t.yaml"
    extensions = ", ".join([*migrations.extensions, "citext"])
    registry.write_text(
        f"defaults:\n  extensions: [{', '.join(migrations.extensions)}]\n"
        "tenants:\n"
        f"  - id: configured\n    url: {registry_url(pg, configured)}\n    extensions: [{extensions}]\n"
        f"  - id: unconfigured\n    url: {registry_url(pg, unconfigured)}\n"
    )
    os.environ["PGPW"] = PG_PASSWORD
    job = prepare(Request(command=Command.AUDIT, registry=registry, migrations=migrations.directory))
    found = findings(run_sync(run_audit(job)))
    assert found["configured"] == []
    expected = "extension citext not expected (no migration creates it and nothing configures it)"
    assert found["unconfigured"] == [expected]


def test_a_fleet_that_never_used_uuid_ossp_is_clean_when_the_registry_configures_none(
    tmp_path: Path, pg: DevServer
) -> None:
    """Adopted SQLx fleets were not bootstrapped by us: the built-in default extension is not expected of them."""
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "1_people.sql").write_text("CREATE TABLE people (id bigint PRIMARY KEY, name text NOT NULL);\n")
    schools = {}
    for label in ("plain_a", "plain_b"):
        schools[label] = make_school(pg, label)
        result = provision(pg.url(schools[label]), migrations=plain, extensions=())
        assert result.ok, result.error
    report = audit(tmp_path, pg, MigrationSet(plain, ()), schools)
    assert findings(report) == {"plain_a": [], "plain_b": []}
    assert report.clean


def test_a_school_the_audit_could_not_read_is_never_clean(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet
) -> None:
    schools = {"readable": school(pg, "read_ok", migrations), "locked": school(pg, "read_locked", migrations)}

    async def audit_while_locked() -> AuditReport:
        conn = await asyncpg.connect(pg.url(schools["locked"]))
        try:
            async with conn.transaction():
                await conn.execute("LOCK TABLE _sqlx_migrations IN ACCESS EXCLUSIVE MODE")
                return await anyio.to_thread.run_sync(
                    lambda: audit(
                        tmp_path,
                        pg,
                        migrations,
                        schools,
                        school=SchoolSettings(lock_timeout=0.2),
                        budgets=Budgets(retries=0),
                    )
                )
        finally:
            await conn.close()

    report = anyio.run(audit_while_locked)
    locked = next(s for s in report.schools if s.tenant.id == "locked")
    assert locked.result.status is Status.UNREADABLE and not locked.readable and not locked.clean
    assert not locked.drift and locked.not_audited is Status.UNREADABLE, "not read is not drift"
    assert locked.result.error is not None
    assert not report.clean and report.verdict == "not_audited"
    counts = report.counts()
    assert (counts["unreadable"], counts["not_audited"], counts["clean"], counts["drift"]) == (1, 1, 1, 0)
    assert report.to_dict()["clean"] is False
    prom = render_prometheus(report)
    assert 'orchestrator_audit_school_readable{school="locked"' in prom
    assert 'orchestrator_audit_school_drift{school="locked"' not in prom, "no drift page for a school not read"
    assert any(line.startswith('orchestrator_audit_school_not_audited{reason="unreadable",school="locked"')
               and line.endswith(" 1.0") for line in prom.splitlines())  # fmt: skip
    assert 'failures="1"' in report.junit_xml()
    assert "All 2 schools are clean" not in render_html(report)


def test_the_audit_drops_the_scratch_databases_a_killed_run_left_and_nothing_merely_named_like_them(
    tmp_path: Path, pg: DevServer, migrations: MigrationSet
) -> None:
    abandoned = run_sync(abandoned_scratch(pg.url(), "ref"))  # marked by its maker, whose session is gone
    unmarked = "orchestrator_ref_1000000000_deadbeef"  # our shape, a day old, but nothing proves it ours
    run_sync(create_database(pg.url(), unmarked))
    try:
        report = audit(tmp_path, pg, migrations, {"a": school(pg, "stale_scratch", migrations)})
        assert report.clean
        assert not run_sync(database_exists(pg.url(), abandoned)), "its maker is gone: dropped at once, however new"
        assert run_sync(database_exists(pg.url(), unmarked)), "without the mark it is never dropped"
    finally:
        run_sync(drop_database(pg.url(), unmarked))
