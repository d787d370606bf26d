"""Onboarding from a template (`provision --template`, `migrate --create-missing --template`, the registry's
`template`): a new school is a copy of a template database kept at the latest migration on its server, and ends up
indistinguishable from a school provisioned from the files; when the template cannot be used the school is
provisioned from the files, and its report says which path it took."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import zlib
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import asyncpg
import pytest
from fleetkit import BASIC, ROOT, cli, make_migrations, popen, registry_url, run_fleet_job, write_registry
from pgfixtures import (
    PG_PASSWORD,
    abandoned_scratch,
    create_database,
    database_exists,
    execute,
    execute_sync,
    fetch,
    fetch_sync,
    fetchval_sync,
    ledger,
    run_sync,
    spares_of,
    unique_db_name,
)

import orchestrator
from orchestrator import engine
from orchestrator import template as template_module
from orchestrator.audit.run import run_audit
from orchestrator.audit.schema import fingerprint, snapshot
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.errors import InvalidInput
from orchestrator.job import Command, Request, prepare
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.scratch import COMMENT_OF, literal
from orchestrator.settings import SchoolSettings, Selection
from orchestrator.source import load_migrations
from orchestrator.target import DatabaseTarget
from orchestrator.template import SPARE_NAME_PREFIX, TEMPLATE_LOCK_CLASS, ServerTemplate, template_lock

FIRST, SECOND, LATEST = 20250101000000, 20250115000000, 20250201000000
SQLX = Path(sys.executable).parent / "sqlx"
UUID_OSSP = ("uuid-ossp",)  # the schema calls uuid_generate_v4(): the extension is asked for (none is the default)


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A private copy of the school schema (three files, uuid-ossp), so a test can add or remove files (as an
    older or newer checkout of the project would have: without released.sum, which would refuse a missing file)."""
    return Path(shutil.copytree(ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("*.sum")))


@pytest.fixture
def template() -> str:
    return unique_db_name("tpl")


def onboard(pg: DevServer, migrations: Path, template: str | None, label: str, **settings: Any) -> DatabaseResult:
    """`provision` of a new school (its database does not exist yet), as the admin service's hook calls it."""
    if template is not None:
        settings["template"] = template
    settings.setdefault("extensions", UUID_OSSP)
    return orchestrator.provision(pg.url(unique_db_name(label)), migrations=migrations, **settings)


def hold_back_the_latest_file(migrations: Path, tmp_path: Path) -> Path:
    """The checkout before the latest release: its file moves aside (copied back in, the release happens)."""
    held_back = tmp_path / "held_back"
    shutil.move(migrations, held_back)
    shutil.copytree(held_back, migrations, ignore=shutil.ignore_patterns(f"{LATEST}_*"))
    return held_back


def schema_fingerprint(pg: DevServer, database: str) -> str:
    async def read() -> str:
        conn = await asyncpg.connect(pg.url(database))
        try:
            async with conn.transaction(readonly=True):
                return fingerprint(await snapshot(conn))
        finally:
            await conn.close()

    return run_sync(read)


def template_row(pg: DevServer, name: str) -> dict[str, Any]:
    row = fetch_sync(
        pg.url(),
        "SELECT datistemplate, datallowconn, shobj_description(oid, 'pg_database') AS comment, "
        "(SELECT count(*) FROM pg_stat_activity a WHERE a.datid = d.oid) AS sessions FROM pg_database d "
        "WHERE datname = $1",
        name,
    )
    assert row, f"no database {name}"
    data = dict(row[0])
    data["marker"] = json.loads(data["comment"].removeprefix("orchestrator template: "))
    return data


def sessions_ever(pg: DevServer, database: str) -> int:
    """How many sessions were opened on `database` before this call (which opens one itself to find out: the
    server counts a session when it ends, so the call waits until its own session shows)."""
    execute_sync(pg.url(database), "SELECT 1")
    deadline = time.monotonic() + 10
    while fetchval_sync(pg.url(), COUNT_SESSIONS, database) < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.2)  # any earlier session ended before ours began
    return int(fetchval_sync(pg.url(), COUNT_SESSIONS, database)) - 1


COUNT_SESSIONS = "SELECT coalesce(sessions, 0) FROM pg_stat_database WHERE datname = $1"


def leftovers(pg: DevServer) -> list[str]:
    """Build databases a template build or refresh did not clean up (spares are kept on purpose)."""
    rows = fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE datname LIKE 'orchestrator_%'")
    return [r[0] for r in rows if not r[0].startswith(SPARE_NAME_PREFIX)]


def keep_ready(pg: DevServer, migrations: Path, template: str, spares: int) -> ServerTemplate:
    ready = template_module.keep_ready(
        DatabaseTarget.parse(pg.url()),
        template,
        load_migrations(migrations),
        EngineOptions(extensions=UUID_OSSP),
        spares,
    )
    result = run_sync(ready)
    assert result.ok, result.error
    return result


def sqlx_info(migrations: Path, url: str, cwd: Path) -> dict[int, str]:
    """version -> the state `sqlx migrate info` shows (installed, pending, ...)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [str(SQLX), "migrate", "info", "--no-dotenv", "--source", str(migrations), "-D", url],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    states = {}
    for line in proc.stdout.splitlines():
        head, _, rest = line.partition("/")
        if head.isdigit():
            states[int(head)] = rest.split()[0]
    return states


def audit_clean(tmp_path: Path, pg: DevServer, migrations: Path, databases: list[str]) -> list[list[str]]:
    tenants = [(f"s{i}", registry_url(pg, db), []) for i, db in enumerate(databases)]
    registry = write_registry(tmp_path / "audit.yaml", tenants, defaults="defaults:\n  extensions: [uuid-ossp]\n")
    os.environ["PGPW"] = PG_PASSWORD
    report = run_sync(run_audit(prepare(Request(Command.AUDIT, registry=registry, migrations=migrations))))
    return [[f.text for f in school.findings] for school in report.schools]


# --- the template path ---------------------------------------------------------------------------------------------


@pytest.mark.sqlx
def test_a_school_copied_from_the_template_equals_one_provisioned_from_the_files(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    by_files = onboard(pg, migrations, None, "by_files")
    first = onboard(pg, migrations, template, "first_copy")
    second = onboard(pg, migrations, template, "second_copy")

    assert by_files.ok and first.ok and second.ok, (first.error, second.error)
    assert first.notes == [
        f"built template {template} at version {LATEST} (every migration, in a new database)",
        f"created database {first.database} from template {template} at version {LATEST}",
    ]
    assert second.notes == [f"created database {second.database} from template {template} at version {LATEST}"]
    assert second.status is Status.APPLIED and second.created_database and second.applied_versions == []
    assert (second.version_before, second.version_after) == (None, LATEST)
    assert by_files.applied_versions == [FIRST, SECOND, LATEST]
    # The copy is complete: onboarding opened no session to it (the first session of a new database is slow).
    assert sessions_ever(pg, second.database) == 0 < sessions_ever(pg, by_files.database)

    # The same ledger (SQLx's columns), the same schema, and the real sqlx sees every file installed.
    assert ledger(pg.url(first.database)) == ledger(pg.url(second.database)) == ledger(pg.url(by_files.database))
    assert schema_fingerprint(pg, second.database) == schema_fingerprint(pg, by_files.database)
    assert sqlx_info(migrations, pg.url(second.database), tmp_path) == dict.fromkeys(
        (FIRST, SECOND, LATEST), "installed"
    )
    assert audit_clean(tmp_path, pg, migrations, [by_files.database, first.database, second.database]) == [[], [], []]

    # The template: marked, closed to connections, nobody connected, nothing left behind.
    row = template_row(pg, template)
    assert (row["datistemplate"], row["datallowconn"], row["sessions"]) == (True, False, 0)
    assert row["marker"]["version"] == LATEST and row["marker"]["extensions"] == ["uuid-ossp"]
    assert leftovers(pg) == []
    # Provisioning an existing school again is a no-op: the template is only for creating databases.
    again = orchestrator.provision(
        pg.url(second.database), migrations=migrations, template=template, extensions=UUID_OSSP
    )
    assert again.status is Status.UP_TO_DATE and again.notes == []


def test_a_template_behind_the_migrations_is_refreshed_and_left_unconnected(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    # As the admin service runs it: a role with CREATEDB, not a superuser.
    role = unique_db_name("onboarder")
    execute_sync(pg.url(), f"CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'")

    def onboard_as_role(label: str) -> DatabaseResult:
        url = pg.url(unique_db_name(label)).replace("//postgres:", f"//{role}:", 1)
        return orchestrator.provision(url, migrations=migrations, template=template, extensions=UUID_OSSP)

    held_back = hold_back_the_latest_file(migrations, tmp_path)
    early = onboard_as_role("early")
    assert early.ok and template_row(pg, template)["marker"]["version"] == SECOND

    shutil.copytree(held_back, migrations, dirs_exist_ok=True)  # a release adds a file
    late = onboard_as_role("late")

    assert late.ok, late.error
    assert late.notes == [
        f"refreshed template {template} from version {SECOND} to version {LATEST} (the new migrations applied to "
        "it; its schema matches a fresh build's)",
        f"created database {late.database} from template {template} at version {LATEST}",
    ]
    assert late.applied_versions == [], "the new file came with the copy"
    assert fetchval_sync(pg.url(late.database), "SELECT tableowner FROM pg_tables WHERE tablename = 'grades'") == role
    row = template_row(pg, template)
    assert (row["datistemplate"], row["datallowconn"], row["sessions"]) == (True, False, 0)
    assert row["marker"]["version"] == LATEST
    assert leftovers(pg) == [], "the builds and the old template are dropped"
    migrated = orchestrator.provision(pg.url(early.database), migrations=migrations, extensions=UUID_OSSP)
    assert migrated.applied_versions == [LATEST]
    assert audit_clean(tmp_path, pg, migrations, [early.database, late.database]) == [[], []]


def test_a_template_changed_by_hand_is_rebuilt_from_the_files_when_it_is_refreshed(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    held_back = hold_back_the_latest_file(migrations, tmp_path)
    assert onboard(pg, migrations, template, "before_edit").ok
    execute_sync(pg.url(), f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS true')
    execute_sync(pg.url(template), "CREATE TABLE rogue (id int)")
    execute_sync(pg.url(), f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')
    shutil.copytree(held_back, migrations, dirs_exist_ok=True)

    school = onboard(pg, migrations, template, "after_edit")

    assert school.ok, school.error
    assert school.notes[0].startswith(f"rebuilt template {template} at version {LATEST}: the new migrations applied")
    assert "rogue" in school.notes[0]
    assert fetchval_sync(pg.url(school.database), "SELECT to_regclass('rogue')") is None
    assert audit_clean(tmp_path, pg, migrations, [school.database]) == [[]]
    assert leftovers(pg) == []


def test_two_processes_provisioning_at_once_build_the_template_once(
    tmp_path: Path, pg: DevServer, template: str
) -> None:
    # The last file waits until the test lets it go (a role appearing: roles are visible from every database), so
    # the build is held open while the test watches the second process queue for the template's lock.
    go = unique_db_name("go")
    gate = (
        f"DO $$ BEGIN WHILE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{go}') LOOP "
        "PERFORM pg_sleep(0.05); END LOOP; END $$;\n"
    )
    migrations = make_migrations(tmp_path / "migrations", {**BASIC, "4_wait_for_the_test.sql": gate})
    schools = [unique_db_name(f"racer_{i}") for i in range(2)]
    procs = [
        popen("provision", "-D", pg.url(db), "--migrations", str(migrations), "--template", template, "--json")
        for db in schools
    ]
    try:
        # One process builds (the lock granted), the other waits for it (not granted).
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and template_lock_holders(pg, template) != [False, True]:
            time.sleep(0.05)
        assert template_lock_holders(pg, template) == [False, True], "one building, one waiting"
    finally:
        execute_sync(pg.url(), f'CREATE ROLE "{go}"')
    reports = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        reports.append(json.loads(out)["schools"][0])
    execute_sync(pg.url(), f'DROP ROLE "{go}"')

    notes = [note for r in reports for note in r["notes"]]
    assert sum(note.startswith(f"built template {template}") for note in notes) == 1, notes
    for report in reports:
        assert report["notes"][-1] == f"created database {report['database']} from template {template} at version 4"
        assert report["applied"] == []
    assert template_row(pg, template)["sessions"] == 0 and leftovers(pg) == []


def template_lock_holders(pg: DevServer, template: str) -> list[bool]:
    """`granted` of each session holding or waiting for `template`'s lock on the server, sorted (another test's
    template on the same server is not this one's business)."""
    key = zlib.crc32(template.encode()) - (1 << 31)
    rows = fetch_sync(
        pg.url(),
        "SELECT granted FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2::int::oid",
        TEMPLATE_LOCK_CLASS,
        key,
    )
    return sorted(r[0] for r in rows)


# --- when the template cannot be used: the files, and the report says why ------------------------------------------


def assert_provisioned_from_the_files(result: DatabaseResult, template: str, reason: str) -> None:
    assert result.ok, result.error
    assert result.notes[0].startswith(f"template {template} unavailable ({reason}"), result.notes
    assert result.notes[0].endswith(f"): created database {result.database} by applying the migrations")
    assert result.applied_versions == [FIRST, SECOND, LATEST]


def test_a_busy_template_falls_back_to_the_migrations(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    assert onboard(pg, migrations, template, "builds_it").ok
    execute_sync(pg.url(), f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS true')

    async def with_a_session_on_the_template() -> DatabaseResult:
        intruder = await asyncpg.connect(pg.url(template))
        try:
            url = pg.url(unique_db_name("beside_a_session"))
            return await orchestrator.provision_async(
                url, migrations=migrations, template=template, extensions=UUID_OSSP
            )
        finally:
            await intruder.close()

    connected = run_sync(with_a_session_on_the_template)
    assert_provisioned_from_the_files(connected, template, "busy: 1 session(s) connected to it")
    execute_sync(pg.url(), f'ALTER DATABASE "{template}" ALLOW_CONNECTIONS false')

    async def while_another_process_holds_its_lock() -> DatabaseResult:
        other = await asyncpg.connect(pg.url())
        try:
            async with template_lock(other, template, exclusive=True, wait_s=1):
                url = pg.url(unique_db_name("beside_a_build"))
                return await orchestrator.provision_async(
                    url, migrations=migrations, template=template, lock_wait=0.3, extensions=UUID_OSSP
                )
        finally:
            await other.close()

    waited = run_sync(while_another_process_holds_its_lock)
    assert_provisioned_from_the_files(waited, template, "busy: another process held its lock")
    assert audit_clean(tmp_path, pg, migrations, [connected.database, waited.database]) == [[], []]
    assert template_row(pg, template)["marker"]["version"] == LATEST and leftovers(pg) == []
    # Once free, it is used again.
    assert onboard(pg, migrations, template, "after_busy").notes[-1].startswith("created database")


def test_a_template_the_tool_did_not_build_is_left_alone(pg: DevServer, migrations: Path, template: str) -> None:
    run_sync(create_database(pg.url(), template))
    execute_sync(pg.url(template), "CREATE TABLE someone_elses (id int)")

    result = onboard(pg, migrations, template, "beside_a_stranger")

    assert_provisioned_from_the_files(result, template, f"a database named {template} exists and is not a template")
    assert fetchval_sync(pg.url(template), "SELECT to_regclass('someone_elses')::text") == "someone_elses"


def test_a_template_owned_by_another_role_falls_back(pg: DevServer, migrations: Path, template: str) -> None:
    assert onboard(pg, migrations, template, "owner_builds").ok
    role = unique_db_name("other_owner")
    execute_sync(pg.url(), f'CREATE ROLE "{role}"')
    execute_sync(pg.url(), f'ALTER DATABASE "{template}" OWNER TO "{role}"')

    result = onboard(pg, migrations, template, "not_the_owner")

    assert_provisioned_from_the_files(result, template, f"it is owned by role {role}, not postgres")


def test_a_template_holding_files_this_checkout_lacks_is_not_refreshed(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    assert onboard(pg, migrations, template, "newer_checkout").ok
    for file in migrations.glob(f"{LATEST}_*.sql"):
        file.unlink()  # an older checkout of the project

    result = onboard(pg, migrations, template, "older_checkout")

    assert result.ok, result.error
    assert result.notes[0].startswith(f"template {template} unavailable (stale, and applying the migrations to a copy")
    assert f"migration {LATEST} was previously applied but is missing" in result.notes[0]
    assert result.applied_versions == [FIRST, SECOND]
    assert template_row(pg, template)["marker"]["version"] == LATEST, "the newer template is kept"
    assert leftovers(pg) == []


def test_a_template_built_with_other_extensions_falls_back(tmp_path: Path, pg: DevServer, template: str) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    assert onboard(pg, migrations, template, "with_uuid_ossp").ok

    result = onboard(pg, migrations, template, "without_extensions", extensions=())

    assert result.ok and result.notes[0].startswith(
        f"template {template} unavailable (it was built with extensions [uuid-ossp], this school is set up with [none]"
    )
    assert result.applied_versions == [1, 2, 3]


def test_migrate_create_missing_copies_the_registry_template_and_a_tenant_may_opt_out(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    copied, plain = unique_db_name("registry_copy"), unique_db_name("registry_plain")
    registry = tmp_path / "tenants.yaml"
    registry.write_text(
        f"defaults:\n  template: {template}\n  extensions: [uuid-ossp]\n"
        f"tenants:\n  - id: copied\n    url: {registry_url(pg, copied)}\n"
        f"  - id: plain\n    url: {registry_url(pg, plain)}\n    template: ''\n"
    )

    report = run_fleet_job(Command.MIGRATE, registry, migrations, create_missing=True)

    results = {o.tenant.id: o.result for o in report.outcomes}
    assert report.ok, [r.error for r in results.values()]
    assert results["copied"].notes[-1] == f"created database {copied} from template {template} at version {LATEST}"
    assert results["plain"].notes[0] == f"created database {plain}"
    assert results["plain"].applied_versions == [FIRST, SECOND, LATEST]
    # bootstrap creates databases too, but applies no migration: never from the template.
    bootstrapped = unique_db_name("bootstrapped")
    result = orchestrator.run(
        Request(Command.BOOTSTRAP, migrations=migrations, database_url=pg.url(bootstrapped),
                school=SchoolSettings(template=template, extensions=UUID_OSSP))
    ).outcomes[0].result  # fmt: skip
    assert result.notes[0] == f"created database {bootstrapped}"
    assert fetchval_sync(pg.url(bootstrapped), "SELECT count(*) FROM _sqlx_migrations") == 0


def test_a_target_before_the_latest_migration_does_not_use_the_template(
    pg: DevServer, migrations: Path, template: str
) -> None:
    url = pg.url(unique_db_name("targeted"))
    school = SchoolSettings(template=template, extensions=UUID_OSSP)
    request = Request(Command.MIGRATE, migrations=migrations, database_url=url, create_missing=True,
                      target_version=SECOND, school=school)  # fmt: skip
    result = orchestrator.run(request).outcomes[0].result
    assert result.ok and result.notes[0].startswith(
        f"template {template} unavailable (it is kept at the latest migration, {LATEST}; --target {SECOND} stops"
    )
    assert result.applied_versions == [FIRST, SECOND]
    assert not run_sync(database_exists(pg.url(), template)), "no template is built for a school it cannot serve"


def test_a_template_being_replaced_that_a_killed_run_left_as_scratch_is_dropped_by_the_next_onboarding(
    pg: DevServer, migrations: Path, template: str
) -> None:
    # Killed between taking the old template out of its place (renamed, marked as scratch, still a template) and
    # dropping it: the next onboarding drops it at once (its maker is gone), template flag and all.
    retired = run_sync(abandoned_scratch(pg.url(), "old", template=True))

    assert onboard(pg, migrations, template, "after_a_killed_refresh").ok

    assert not run_sync(database_exists(pg.url(), retired))
    assert leftovers(pg) == []


# --- bad input: exit 2 before any connection -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("template1", "the server's own maintenance or template database"),
        ("postgres", "the server's own maintenance or template database"),
        ("x" * 64, "longer than PostgreSQL's 63 bytes"),
        ("a/b", "is not a database name"),
        ("   ", "is not a database name"),
    ],
)
def test_a_template_name_is_checked_like_a_database_name(name: str, why: str) -> None:
    result = cli("provision", "-D", "postgresql://app@127.0.0.1:1/school_x", "--template", name)
    assert result.returncode == 2 and why in result.stderr, result.stderr


def test_the_registry_template_is_checked_with_its_line(tmp_path: Path) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text("tenants:\n  - id: a\n    url: postgresql://app@db1/a\n    template: template0\n")
    with pytest.raises(InvalidInput, match=r"tenants.yaml:4: tenant a.template 'template0' is the server's own"):
        prepare(Request(Command.PROVISION, migrations=ROOT / "migrations", registry=registry))


def test_a_template_is_never_a_schools_database(tmp_path: Path) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text(
        "defaults:\n  template: school_b\ntenants:\n  - id: b\n    url: postgresql://app@db1/school_b\n"
        "  - id: c\n    url: postgresql://app@db2/school_c\n    template: school_a\n"
        "  - id: a\n    url: postgresql://app@db1/school_a\n"
    )
    with pytest.raises(InvalidInput) as refused:
        prepare(Request(Command.STATUS, migrations=ROOT / "migrations", registry=registry))
    message = str(refused.value)
    assert "tenants.yaml:2: template 'school_b' is the database of school b (line 4)" in message  # its own
    assert "tenants.yaml:8: template 'school_a' is the database of school a (line 9)" in message  # another's
    registry.write_text("tenants:\n  - id: a\n    url: postgresql://app@db1/school_a\n"
                        "  - id: b\n    url: postgresql://app@db1/school_b\n")  # fmt: skip
    request = Request(Command.PROVISION, migrations=ROOT / "migrations", registry=registry)
    with pytest.raises(InvalidInput, match="template school_a is the database of school a"):
        prepare(replace(request, selection=Selection(ids=("b",)), school=SchoolSettings(template="school_a")))
    with pytest.raises(InvalidInput, match="school b: its database school_b is its own template"):
        prepare(replace(request, selection=Selection(ids=("b",)), school=SchoolSettings(template="school_b")))
    with pytest.raises(InvalidInput, match="template"):
        orchestrator.provision("postgresql://app@db1/school_c", migrations=ROOT / "migrations", template="x\ty")


# --- spares: ready copies, taken by a rename ------------------------------------------------------------------------


@pytest.mark.sqlx
def test_a_school_taken_from_a_spare_equals_one_provisioned_from_the_files(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    made = keep_ready(pg, migrations, template, 2)
    assert (made.version, made.spares, made.made, made.dropped) == (LATEST, 2, 2, 0)
    assert made.notes == [f"built template {template} at version {LATEST} (every migration, in a new database)"]
    spares = spares_of(pg.url(), template)
    by_files = onboard(pg, migrations, None, "files_beside_spares")

    school = onboard(pg, migrations, template, "from_a_spare")

    assert school.ok, school.error
    taken = (set(spares) - set(spares_of(pg.url(), template))).pop()
    assert school.notes == [
        f"created database {school.database} from a ready copy ({taken}) of template {template} at version {LATEST}"
    ]
    assert school.created_database and school.applied_versions == []
    assert (school.version_before, school.version_after) == (None, LATEST)
    # Open to connections, its spare's comment gone, the same ledger and schema as the files give; sqlx agrees.
    row = fetch_sync(
        pg.url(),
        "SELECT datallowconn, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = $1",
        school.database,
    )[0]
    assert (row["datallowconn"], row["comment"]) == (True, None)
    assert ledger(pg.url(school.database)) == ledger(pg.url(by_files.database))
    assert schema_fingerprint(pg, school.database) == schema_fingerprint(pg, by_files.database)
    assert sqlx_info(migrations, pg.url(school.database), tmp_path) == dict.fromkeys(
        (FIRST, SECOND, LATEST), "installed"
    )
    assert audit_clean(tmp_path, pg, migrations, [school.database]) == [[]]
    assert len(spares_of(pg.url(), template)) == 1
    assert keep_ready(pg, migrations, template, 0).dropped == 1 and spares_of(pg.url(), template) == []


def test_keeping_spares_ready_tops_up_and_trims_to_the_number_asked(
    pg: DevServer, migrations: Path, template: str
) -> None:
    keep_ready(pg, migrations, template, 3)
    assert onboard(pg, migrations, template, "takes_one").notes[0].startswith("created database")

    topped = keep_ready(pg, migrations, template, 3)
    trimmed = keep_ready(pg, migrations, template, 1)

    assert (topped.spares, topped.made, topped.dropped, topped.notes) == (3, 1, 0, [])
    assert (trimmed.spares, trimmed.made, trimmed.dropped) == (1, 0, 2)
    assert len(spares_of(pg.url(), template)) == 1
    keep_ready(pg, migrations, template, 0)
    assert spares_of(pg.url(), template) == [] and leftovers(pg) == []


def test_a_spare_of_an_older_release_is_never_taken_and_is_replaced(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    held_back = hold_back_the_latest_file(migrations, tmp_path)
    keep_ready(pg, migrations, template, 2)
    old_spares = spares_of(pg.url(), template)
    shutil.copytree(held_back, migrations, dirs_exist_ok=True)  # a release adds a file

    school = onboard(pg, migrations, template, "after_the_release")

    assert school.ok and school.applied_versions == [], school.error
    assert school.notes[-1] == f"created database {school.database} from template {template} at version {LATEST}"
    assert spares_of(pg.url(), template) == old_spares, "left for the next keep_ready"
    renewed = keep_ready(pg, migrations, template, 2)
    assert (renewed.version, renewed.made, renewed.dropped) == (LATEST, 2, 2)
    assert not set(spares_of(pg.url(), template)) & set(old_spares)
    assert "a ready copy" in onboard(pg, migrations, template, "from_a_new_spare").notes[0]
    keep_ready(pg, migrations, template, 0)


def test_a_spare_owned_by_another_role_is_not_taken(pg: DevServer, migrations: Path, template: str) -> None:
    keep_ready(pg, migrations, template, 1)
    role = unique_db_name("spare_owner")
    execute_sync(pg.url(), f'CREATE ROLE "{role}"')
    (spare,) = spares_of(pg.url(), template)
    execute_sync(pg.url(), f'ALTER DATABASE "{spare}" OWNER TO "{role}"')

    school = onboard(pg, migrations, template, "not_the_spares_owner")

    assert school.notes == [f"created database {school.database} from template {template} at version {LATEST}"]
    assert spares_of(pg.url(), template) == [spare]
    execute_sync(pg.url(), f'DROP DATABASE "{spare}"')


def test_keeping_spares_ready_drops_a_spare_a_killed_run_left_half_made(
    pg: DevServer, migrations: Path, template: str
) -> None:
    half_made = run_sync(abandoned_scratch(pg.url(), "newspare"))  # copied and marked, not yet renamed

    keep_ready(pg, migrations, template, 1)

    assert not run_sync(database_exists(pg.url(), half_made))
    keep_ready(pg, migrations, template, 0)


def test_two_runs_keeping_spares_ready_at_once_make_the_number_asked_not_twice(
    pg: DevServer, migrations: Path, template: str
) -> None:
    keep_ready(pg, migrations, template, 0)  # the template exists: neither run has to build it
    source = load_migrations(migrations)

    async def both() -> list[ServerTemplate]:
        results: list[ServerTemplate] = []

        async def one() -> None:
            server = DatabaseTarget.parse(pg.url())
            results.append(
                await template_module.keep_ready(server, template, source, EngineOptions(extensions=UUID_OSSP), 2)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        return results

    results = run_sync(both())

    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(r.made for r in results) == [0, 2]
    assert len(spares_of(pg.url(), template)) == 2
    keep_ready(pg, migrations, template, 0)


TEMPLATE_LOCK_HELD = "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = $1::int::oid"


def test_an_onboarding_copies_the_template_while_spares_are_being_made(
    pg: DevServer, migrations: Path, template: str
) -> None:
    """Making spares holds the template's lock shared (and a lock of its own): a school that finds no spare ready
    is copied from the template meanwhile, not held until every spare is made (a burst of onboardings waited)."""
    keep_ready(pg, migrations, template, 0)
    source = load_migrations(migrations)
    options = EngineOptions(extensions=UUID_OSSP)
    school = unique_db_name("while_spares")
    ended: list[str] = []

    async def both() -> DatabaseResult:
        results: list[DatabaseResult] = []

        async def spares() -> None:
            await template_module.keep_ready(DatabaseTarget.parse(pg.url()), template, source, options, 6)
            ended.append("spares")

        async def onboarding() -> None:
            with anyio.fail_after(60):  # the spares being made (the template's lock held), none finished yet
                while not await fetch(pg.url(), TEMPLATE_LOCK_HELD, TEMPLATE_LOCK_CLASS):
                    await anyio.sleep(0.002)
            creator = template_module.creator(template, source, options)
            results.append(
                await engine.provision(DatabaseTarget.parse(pg.url(school)), source, options, creator=creator)
            )
            ended.append("school")

        async with anyio.create_task_group() as tg:
            tg.start_soon(spares)
            tg.start_soon(onboarding)
        return results[0]

    result = run_sync(both())

    assert result.ok, result.error
    assert f"from template {template}" in " ".join(result.notes) or "from a ready copy" in " ".join(result.notes)
    assert ended == ["school", "spares"], "the school waited for the spares"
    keep_ready(pg, migrations, template, 0)


def test_the_spares_counted_ready_are_those_left_when_the_pass_ends(
    pg: DevServer, migrations: Path, template: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Onboardings take spares while a pass makes others (the service's top-ups, a burst): the count it reports
    (`orchestrator template`'s line, the service's spares_ready) is what is left at its end, not what it made."""
    keep_ready(pg, migrations, template, 2)
    real_make = template_module._make_spare
    taken: list[str] = []

    async def make_while_one_is_taken(*args: Any) -> None:
        await real_make(*args)
        if not taken:  # an onboarding takes one of this template's spares meanwhile
            rows = await fetch(pg.url(), "SELECT datname, shobj_description(oid, 'pg_database') FROM pg_database")
            victim = next(n for n, c in rows if (template_module.parse_spare(c) or ("",))[0] == template)
            taken.append(victim)
            await execute(pg.url(), f"DROP DATABASE {victim}")

    monkeypatch.setattr(template_module, "_make_spare", make_while_one_is_taken)
    result = keep_ready(pg, migrations, template, 4)

    assert taken and result.made == 2
    assert result.spares == 3 == len(spares_of(pg.url(), template))
    keep_ready(pg, migrations, template, 0)


def test_two_onboardings_racing_for_one_spare_both_end_ok(pg: DevServer, migrations: Path, template: str) -> None:
    keep_ready(pg, migrations, template, 1)
    source = load_migrations(migrations)
    creator = template_module.creator(template, source, EngineOptions(extensions=UUID_OSSP))

    async def both() -> list[DatabaseResult]:
        results: list[DatabaseResult] = []

        async def one(label: str) -> None:
            target = DatabaseTarget.parse(pg.url(unique_db_name(label)))
            results.append(await engine.provision(target, source, EngineOptions(extensions=UUID_OSSP), creator=creator))

        async with anyio.create_task_group() as tg:
            for label in ("racer_a", "racer_b"):
                tg.start_soon(one, label)
        return results

    results = run_sync(both())

    assert all(r.ok and r.applied_versions == [] for r in results), [r.error for r in results]
    paths = sorted("a ready copy" in r.notes[0] for r in results)
    assert paths == [False, True], [r.notes for r in results]
    assert spares_of(pg.url(), template) == []


def test_a_template_and_spare_of_an_older_release_are_rebuilt_and_replaced_not_taken(
    pg: DevServer, migrations: Path, template: str
) -> None:
    """Markers written before per-version checksums and this release's content digest (catalog.py, `v2:`): the
    spare cannot be read against its marker, so it is never taken (the next top-up replaces it), and the template is
    rebuilt once to carry them (it could not tell an edited file)."""
    keep_ready(pg, migrations, template, 1)
    [spare] = spares_of(pg.url(), template)
    for database, prefix in ((template, "orchestrator template: "), (spare, "orchestrator spare: ")):
        comment = fetchval_sync(pg.url(), COMMENT_OF, database)
        if database == template:
            old = json.loads(comment.removeprefix(prefix))
            del old["checksums"], old["catalog"]
        else:
            old = json.loads(comment.removeprefix(prefix))
            marker = json.loads(old["marker"].removeprefix("orchestrator template: "))
            marker["catalog"] = marker["catalog"].removeprefix("v2:")  # the first release's digest had no version
            old["marker"] = "orchestrator template: " + json.dumps(marker, sort_keys=True)
        execute_sync(pg.url(), f'COMMENT ON DATABASE "{database}" IS {literal(prefix + json.dumps(old))}')

    first = onboard(pg, migrations, template, "old_spare")

    assert first.ok and first.notes[0].startswith(f"refreshed template {template}"), first.notes
    assert not any("ready copy" in note for note in first.notes), first.notes
    marker = template_row(pg, template)["marker"]
    assert set(marker["checksums"]) == {str(FIRST), str(SECOND), str(LATEST)} and marker["catalog"].startswith("v2:")
    topped = keep_ready(pg, migrations, template, 1)
    assert (topped.dropped, topped.made) == (1, 1) and spare not in spares_of(pg.url(), template)
    assert "from a ready copy" in onboard(pg, migrations, template, "new_spare").notes[0]
