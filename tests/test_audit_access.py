"""An audit that could not audit is not drift, on a real server: a role without CREATEDB (no expected schema can be
built: `no_reference`) and a refused login (`denied`) end apart from drift in every output, and exit 3; drift found
still exits 1; and the audit says where it creates its scratch databases, unless told (--reference-url) or none
are made (--no-schema)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fleetkit import BASIC, cli, make_migrations, make_school, run_fleet_job, write_registry
from pgfixtures import PG_PASSWORD, execute_sync, fetch_sync, quote_ident, unique_db_name
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.command import Command
from orchestrator.devserver import DevServer

EXIT_NOT_AUDITED = 3


@pytest.fixture
def auditor(pg: DevServer) -> Iterator[str]:
    """A login role without CREATEDB (PostgreSQL's default), with the same password as `postgres` (${PGPW})."""
    role = unique_db_name("auditor")
    execute_sync(pg.url(), f"CREATE ROLE {quote_ident(role)} LOGIN NOCREATEDB PASSWORD '{PG_PASSWORD}'")
    yield role
    for (db,) in fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE datname LIKE 't_audit_access%'"):
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(db)} WITH (FORCE)")
    execute_sync(pg.url(), f"DROP ROLE {quote_ident(role)}")


def migrated_school(tmp_path: Path, pg: DevServer, label: str, migrations: Path) -> str:
    db = make_school(pg, f"audit_access_{label}")
    registry = write_registry(tmp_path / f"{label}.yaml", [(label, pg.url(db).replace(PG_PASSWORD, "${PGPW}"), [])])
    assert run_fleet_job(Command.MIGRATE, registry, migrations).ok
    return db


def fleet(tmp_path: Path, pg: DevServer, auditor: str, schools: dict[str, str], *, locked_out: str = "") -> Path:
    """The schools, read by `auditor` (SELECT on the ledger granted); `locked_out` read with a wrong password."""
    tenants = []
    for sid, db in schools.items():
        execute_sync(pg.url(db), f"GRANT SELECT ON _sqlx_migrations TO {quote_ident(auditor)}")
        password = "Wr0ng-Pw-99" if sid == locked_out else "${PGPW}"
        tenants.append((sid, f"postgresql://{auditor}:{password}@127.0.0.1:{pg.port}/{db}", []))
    return write_registry(tmp_path / "audit.yaml", tenants)


def metrics(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(path.read_text())
        for sample in family.samples
    }


def scratch_databases(pg: DevServer) -> list[str]:
    return [r[0] for r in fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE datname LIKE 'orchestrator_%'")]


def test_a_role_without_createdb_is_not_drift_and_the_audit_exits_3(
    tmp_path: Path, pg: DevServer, auditor: str
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = {sid: migrated_school(tmp_path, pg, sid, migrations) for sid in ("a", "b", "locked_out")}
    registry = fleet(tmp_path, pg, auditor, schools, locked_out="locked_out")
    out = tmp_path / "out"

    result = cli("audit", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--report", str(out / "a.json"), "--junit", str(out / "a.xml"), "--metrics", str(out / "a.prom"),
                 "--html", str(out / "a.html"))  # fmt: skip

    said = result.stdout + result.stderr
    assert result.returncode == EXIT_NOT_AUDITED, said
    report = json.loads((out / "a.json").read_text())
    by_id: dict[str, dict[str, Any]] = {s["id"]: s for s in report["schools"]}
    for sid in ("a", "b"):
        school = by_id[sid]
        assert (school["status"], school["drift"], school["audited"], school["findings"]) == (
            "no_reference", False, False, []
        ), school  # fmt: skip
        assert "permission denied to create database" in school["reference_error"]
        assert "--reference-url" in school["reference_error"]
    assert (by_id["locked_out"]["status"], by_id["locked_out"]["drift"]) == ("denied", False)
    assert by_id["locked_out"]["error"]["code"] == "auth_failed"
    assert report["verdict"] == "not_audited" and report["clean"] is False
    summary = report["summary"]
    assert (summary["drift"], summary["clean"], summary["not_audited"]) == (0, 0, 3)
    assert (summary["no_reference"], summary["unreadable"], summary["unreachable"]) == (2, 1, 0)

    samples = metrics(out / "a.prom")
    assert not [k for k in samples if k[0] == "orchestrator_audit_school_drift"], "nothing pages as drift"
    reasons = {
        dict(k[1])["school"]: dict(k[1])["reason"] for k in samples if k[0] == "orchestrator_audit_school_not_audited"
    }
    assert reasons == {"a": "no_reference", "b": "no_reference", "locked_out": "denied"}
    assert samples[("orchestrator_audit_schools", (("state", "drift"),))] == 0
    assert samples[("orchestrator_audit_schools", (("state", "no_reference"),))] == 2

    assert "not audited: 3 of 3 schools" in result.stdout and "drift in" not in result.stdout
    assert "0 clean, 0 drift (0 schema, 0 pending), 3 not audited (2 no_reference, 1 denied)" in result.stdout
    assert "not every school could be audited" in result.stdout
    assert report["not_audited"] == {"no_reference": 2, "denied": 1}
    assert "drift found" not in result.stdout
    html = (out / "a.html").read_text()
    assert 'id="not-audited-table"' in html and 'id="drift-table"' not in html
    assert '<p id="verdict" class="not-audited">3 of 3 schools could not be audited; none drifted.</p>' in html
    assert 'type="no_reference"' in (out / "a.xml").read_text()
    assert scratch_databases(pg) == [], "the role could create none"
    for text in [said, *(path.read_text() for path in out.iterdir())]:
        assert PG_PASSWORD not in text and "Wr0ng-Pw-99" not in text

    # Drift found wins: a school behind its migrations drifted, whatever else could not be audited.
    early = make_migrations(tmp_path / "early", dict(list(BASIC.items())[:2]))
    schools["behind"] = migrated_school(tmp_path, pg, "behind", early)
    registry = fleet(tmp_path, pg, auditor, schools)
    drift = cli("audit", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--json")
    assert drift.returncode == 1, drift.stdout + drift.stderr
    data = json.loads(drift.stdout)
    statuses = {s["id"]: s["status"] for s in data["schools"]}
    assert statuses == {"a": "no_reference", "b": "no_reference", "locked_out": "no_reference", "behind": "drift"}
    assert data["verdict"] == "drift"
    behind = next(s for s in data["schools"] if s["id"] == "behind")
    assert behind["audited"] is False and "permission denied to create database" in behind["reference_error"]

    # Built where the operator says: a server where the role may create databases. Clean, exit 0, no notice.
    del schools["behind"]
    registry = fleet(tmp_path, pg, auditor, schools)
    moved = cli("audit", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                "--reference-url", pg.url())  # fmt: skip
    assert moved.returncode == 0, moved.stdout + moved.stderr
    assert "scratch databases" not in moved.stdout + moved.stderr
    assert scratch_databases(pg) == [], "dropped after use"


def test_the_audit_says_where_it_creates_scratch_databases_unless_it_creates_none(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = migrated_school(tmp_path, pg, "notice", migrations)
    registry = write_registry(tmp_path / "t.yaml", [("s", pg.url(db).replace(PG_PASSWORD, "${PGPW}"), [])])
    audit = ["audit", "--registry", str(registry), "--migrations", str(migrations), "--no-progress"]
    server = f"127.0.0.1:{pg.port}"

    console = cli(*audit)
    assert console.returncode == 0, console.stdout + console.stderr
    notes = [line for line in console.stderr.splitlines() if "scratch databases" in line]
    assert len(notes) == 1, console.stderr
    assert f"on {server}, the first school's server" in notes[0] and "--reference-url" in notes[0]
    assert "scratch databases" not in console.stdout, "on stderr: stdout stays the audit's own output"

    logged = cli(*audit, "--log-format", "json")
    assert logged.returncode == 0, logged.stdout + logged.stderr
    events = [json.loads(line) for line in logged.stderr.splitlines() if line.startswith("{")]
    notices = [e for e in events if e.get("event") == "audit.scratch_databases"]
    assert len(notices) == 1, logged.stderr
    assert notices[0]["server"] == server and "--reference-url" in notices[0]["hint"]
    assert "scratch databases" not in logged.stdout
    assert not [line for line in logged.stderr.splitlines() if "scratch" in line and not line.startswith("{")]

    for quiet in (cli(*audit, "--no-schema"), cli(*audit, "--no-schema", "--log-format", "json")):
        assert quiet.returncode == 0, quiet.stdout + quiet.stderr
        assert "scratch" not in quiet.stdout + quiet.stderr, "--no-schema builds nothing: nothing to say"
    for said in (console.stderr, logged.stderr):
        assert PG_PASSWORD not in said
