"""Adversary tests of the sealed-spare path (spare_seals.py): ways to change a sealed spare that its seal does not see,
so that a school is handed a database the template does not hold."""

from __future__ import annotations

import contextlib
import dataclasses
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import asyncpg
import pytest
from conftest import Servers
from fleetkit import cli, make_migrations, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
    drop_template,
    execute_sync,
    fetch_sync,
    fetchval_sync,
    quote_ident,
    spares_of,
    unique_db_name,
)
from servekit import start
from test_spare_seals import drop_rejected, expected_ledger, keep_spares, ledger, onboard, opened, rejected

from orchestrator import spare_seals
from orchestrator.devserver import DevServer
from orchestrator.scratch import literal
from orchestrator.spare_seals import SpareSeals

FILES = {"1_one.sql": "CREATE TABLE one (id int);\n", "2_two.sql": "CREATE TABLE two (id int);\n"}


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return make_migrations(tmp_path / "m", FILES)


@pytest.fixture
def template_name(pg: DevServer) -> Iterator[str]:
    name = unique_db_name("advtpl")
    yield name
    drop_template(pg.url(), name)
    drop_rejected(pg)


def comment_of(pg: DevServer, database: str) -> str:
    return str(fetchval_sync(pg.url(), "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                             "WHERE datname = $1", database))  # fmt: skip


def has_evil(pg: DevServer, school: str) -> bool:
    return bool(fetch_sync(pg.url(school), "SELECT 1 FROM pg_tables WHERE tablename = 'not_the_schema'"))


def taken_and_checked(pg: DevServer, migrations: Path, name: str, spare: str, seals: SpareSeals) -> None:
    school = unique_db_name("adv_school")
    try:
        result = onboard(pg, migrations, name, school, seals)
        assert not has_evil(pg, school), "the school was handed a database holding what the template does not"
        assert ledger(pg.url(school)) == expected_ledger(migrations)
        assert f"ready copy {spare} of template {name} not used" in " ".join(result.notes), result.notes
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_adversary_dropped_and_recreated_with_the_same_oid(pg: DevServer, migrations: Path, template_name: str) -> None:
    """CREATE DATABASE ... OID n (PostgreSQL 15+, any role with CREATEDB, n >= 16384) gives a new database the
    dropped spare's OID; a new database has no statistics (0 sessions, never reset), so every field of the seal is
    forged: the copy holding something else, made from another database without a session on the new one."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    oid = fetchval_sync(pg.url(), "SELECT oid FROM pg_database WHERE datname = $1", spare)
    comment = comment_of(pg, spare)
    source = unique_db_name("evil_src")
    execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(source)} TEMPLATE {quote_ident(spare)}")
    try:
        execute_sync(pg.url(source), "CREATE TABLE not_the_schema (x int)")
        execute_sync(pg.url(), f"DROP DATABASE {quote_ident(spare)}")
        execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(spare)} OID {oid} TEMPLATE {quote_ident(source)}"
                     " ALLOW_CONNECTIONS false")  # fmt: skip
        execute_sync(pg.url(), f"COMMENT ON DATABASE {quote_ident(spare)} IS {literal(comment)}")
        taken_and_checked(pg, migrations, template_name, spare, seals)
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(source)} WITH (FORCE)")


def psql(pg: DevServer, conninfo: str, sql: str) -> str:
    return subprocess.run([str(pg.bindir / "psql"), "-X", "-v", "ON_ERROR_STOP=1", "-Atc", sql, conninfo],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip


def test_adversary_changed_through_a_replication_connection(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    """A logical replication connection (`replication=database`, a walsender) runs plain SQL in the database it
    connects to, and the server counts only client backends in pg_stat_database.sessions: opened, changed through
    a walsender, closed, and the seal holds (superuser, or any role with REPLICATION)."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    with opened(pg, spare):
        psql(pg, pg.url(spare) + "?replication=database", "CREATE TABLE not_the_schema (x int)")
    taken_and_checked(pg, migrations, template_name, spare, seals)


def _alter(clause: str) -> Callable[[DevServer, str], None]:
    return lambda pg, spare: execute_sync(pg.url(), clause.format(spare=quote_ident(spare)))


# Changes to the spare's own pg_database row, made without a session on it: CREATE DATABASE does not copy them from
# the template, so a school taken with one holds what the template does not (who may connect or create schemas in
# it, who may copy it with its pupils' data, how many sessions it allows).
ROW_CHANGES: dict[str, Callable[[DevServer, str], None]] = {
    "granted_create_to_public": _alter("GRANT CREATE ON DATABASE {spare} TO PUBLIC"),
    "made_a_template": _alter("ALTER DATABASE {spare} IS_TEMPLATE true"),
    "connection_limit_zero": _alter("ALTER DATABASE {spare} CONNECTION LIMIT 0"),
}


@pytest.mark.parametrize("change", ROW_CHANGES, ids=list(ROW_CHANGES))
def test_adversary_its_own_row_changed_without_a_session(
    pg: DevServer, migrations: Path, template_name: str, change: str
) -> None:
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    before = fetch_sync(pg.url(), ROW, spare)
    ROW_CHANGES[change](pg, spare)
    school = unique_db_name("adv_row")
    try:
        result = onboard(pg, migrations, template_name, school, seals)
        after = fetch_sync(pg.url(), ROW, school)
        assert f"ready copy {spare} of template {template_name} not used" in " ".join(result.notes), result.notes
        assert [tuple(r) for r in after] == [tuple(r) for r in before], "the school's database is not as made"
    finally:
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(school)} IS_TEMPLATE false")
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


ROW = "SELECT datdba, datistemplate, datconnlimit, datacl::text FROM pg_database WHERE datname = $1"


def test_adversary_changed_in_a_session_with_track_counts_off(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    """A superuser's session with `track_counts` off: is it still counted?"""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    with opened(pg, spare):
        psql(pg, pg.url(spare) + "?options=-ctrack_counts%3Doff", "CREATE TABLE not_the_schema (x int)")
    taken_and_checked(pg, migrations, template_name, spare, seals)


# Changes made in a session on the spare that the read (the fallback once a seal is broken, and the only way of the CLI
# and the Python API) did not see while the digest covered objects with OIDs from 16384 up in a list of catalogs, and
# no table rows but the ledger's (catalog.py's digest v2 covers them).
UNREAD_CHANGES: dict[str, str] = {
    # CVE-2018-1058's setting, which PostgreSQL 15 takes away by default: the public schema's OID is 2200.
    "public_schema_create_for_all": "GRANT CREATE ON SCHEMA public TO PUBLIC",
    "a_publication": "CREATE PUBLICATION not_the_schema FOR TABLE one",  # pg_publication(_rel): not in the digest
    "an_operator": "CREATE OPERATOR public.=== (LEFTARG = int4, RIGHTARG = int4, FUNCTION = int4eq)",  # pg_operator
    "a_row_in_a_table": "INSERT INTO one VALUES (666)",  # rows: catalog.py says so
    # pg_subscription is shared (and superuser's): enabled (a publisher with wal_level=logical), its worker starts
    # writing into the school the moment it is opened; disabled here (no publisher needed), still the school's.
    "a_subscription": "CREATE SUBSCRIPTION not_the_schema CONNECTION 'dbname=nowhere' PUBLICATION p"
    " WITH (connect = false)",
}
UNREAD_SEEN: dict[str, str] = {
    "public_schema_create_for_all": "SELECT has_schema_privilege('public', 'public', 'CREATE')",
    "a_publication": "SELECT EXISTS (SELECT 1 FROM pg_publication)",
    "an_operator": "SELECT EXISTS (SELECT 1 FROM pg_operator WHERE oprname = '===')",
    "a_row_in_a_table": "SELECT EXISTS (SELECT 1 FROM one)",
    "a_subscription": "SELECT EXISTS (SELECT 1 FROM pg_subscription s JOIN pg_database d ON d.oid = s.subdbid"
    " WHERE d.datname = current_database())",
}


@pytest.mark.parametrize("change", UNREAD_CHANGES, ids=list(UNREAD_CHANGES))
def test_adversary_opened_and_changed_where_the_old_read_did_not_look(
    pg: DevServer, migrations: Path, template_name: str, change: str
) -> None:
    """The seal breaks (a session on it), so the spare is read: and set aside, since it holds what the template
    does not."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    with opened(pg, spare):
        execute_sync(pg.url(spare), UNREAD_CHANGES[change])
    school = unique_db_name("adv_unread")
    try:
        result = onboard(pg, migrations, template_name, school, seals)
        assert not fetchval_sync(pg.url(school), UNREAD_SEEN[change]), "the school holds what the template does not"
        assert f"ready copy {spare} of template {template_name} not used: what it holds is not the template's" in (
            " ".join(result.notes)
        ), result.notes
    finally:
        drop_subscriptions(pg)
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def drop_subscriptions(pg: DevServer) -> None:
    """A database with a subscription cannot be dropped: the subscriptions first (opened to drop them)."""
    rows = fetch_sync(pg.url(), "SELECT s.subname, d.datname, d.datallowconn FROM pg_subscription s "
                      "JOIN pg_database d ON d.oid = s.subdbid")  # fmt: skip
    for subname, datname, allowed in rows:
        if not allowed:
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(datname)} ALLOW_CONNECTIONS true")
        execute_sync(pg.url(datname), f"ALTER SUBSCRIPTION {quote_ident(subname)} SET (slot_name = NONE)")
        execute_sync(pg.url(datname), f"DROP SUBSCRIPTION {quote_ident(subname)}")


def test_adversary_the_service_is_not_handed_a_spare_recreated_under_its_oid(pg: DevServer, tmp_path: Path) -> None:
    """End to end: `orchestrator serve` reads and seals the spares `orchestrator template` made; both are then
    dropped and made anew from a changed copy under their OIDs, names and comments; a PUT of a new school must not
    get one."""
    migrations = make_migrations(tmp_path / "migrations")
    name, school = unique_db_name("advsrvtpl"), unique_db_name("adv_srv_school")
    registry = write_registry(
        tmp_path / "tenants.yaml",
        [("known", registry_url(pg, school + "_k"), [])],
        defaults=f"defaults:\n  template: {name}\n",
    )
    made = cli("template", "--registry", str(registry), "--migrations", str(migrations), "--spares", "2", "--yes")
    assert made.returncode == 0, made.stdout + made.stderr
    before = set(spares_of(pg.url(), name))
    service = start(
        tmp_path / "serve.log",
        "--registry", str(registry), "--migrations", str(migrations), "--spares", "2", "--survey-every", "1h",
        "--retries", "0", "--log-format", "json",
    )  # fmt: skip
    sources: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while not (set(spares_of(pg.url(), name)) - before) or len(spares_of(pg.url(), name)) < 2:
            assert time.monotonic() < deadline, "the service did not read (and seal) the spares"
            time.sleep(0.2)
        for spare in spares_of(pg.url(), name):
            oid = fetchval_sync(pg.url(), "SELECT oid FROM pg_database WHERE datname = $1", spare)
            comment = comment_of(pg, spare)
            sessions = fetchval_sync(pg.url(), "SELECT sessions FROM pg_stat_database WHERE datname = $1", spare)
            sources.append(unique_db_name("evil_src"))
            execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(sources[-1])} TEMPLATE {quote_ident(spare)}")
            execute_sync(pg.url(sources[-1]), "CREATE TABLE not_the_schema (x int)")
            execute_sync(pg.url(), f"DROP DATABASE {quote_ident(spare)}")
            execute_sync(
                pg.url(), f"CREATE DATABASE {quote_ident(spare)} OID {oid} TEMPLATE {quote_ident(sources[-1])}"
            )
            for _ in range(sessions):  # the service read each: one session counted, forged as well
                execute_sync(pg.url(spare), "SELECT 1")
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} ALLOW_CONNECTIONS false")
            execute_sync(pg.url(), f"COMMENT ON DATABASE {quote_ident(spare)} IS {literal(comment)}")

        answer = service.call("PUT", "/v1/schools/adv-srv", {"url": registry_url(pg, school).replace(
            "${PGPW}", PG_PASSWORD)})  # fmt: skip

        assert answer.status == 200, answer.text
        assert not has_evil(pg, school), "the service handed the school a database the template does not hold"
    finally:
        assert service.stop() == 0, service.log_text()
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")
        for source in sources:
            execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(source)} WITH (FORCE)")
        drop_template(pg.url(), name)
        for aside in rejected(pg):
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(aside)} IS_TEMPLATE false")
            execute_sync(pg.url(), f"DROP DATABASE {quote_ident(aside)} WITH (FORCE)")


def test_adversary_changed_between_the_spares_making_and_its_seal(
    pg: DevServer, migrations: Path, template_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The seal is read after the spare is finished: a grant given in between (one round trip, by anyone polling
    pg_database for new spares) would be in the seal. Here the adversary always wins that race (it runs just before
    the seal is read), giving up after half a second if it has to wait (or finds no spare of that name yet)."""
    real_seal = spare_seals.seal

    async def raced(conn: asyncpg.Connection, server: str, name: str) -> None:
        other = await asyncpg.connect(pg.url())
        try:
            await other.execute("SET lock_timeout = '500ms'")
            with contextlib.suppress(asyncpg.LockNotAvailableError, asyncpg.InvalidCatalogNameError):
                await other.execute(f"GRANT CREATE ON DATABASE {quote_ident(name)} TO PUBLIC")
        finally:
            await other.close()
        await real_seal(conn, server, name)

    monkeypatch.setattr(spare_seals, "seal", raced)
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    monkeypatch.setattr(spare_seals, "seal", real_seal)
    school = unique_db_name("adv_race")
    try:
        onboard(pg, migrations, template_name, school, seals)
        assert fetchval_sync(pg.url(), "SELECT datacl FROM pg_database WHERE datname = $1", school) is None
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_adversary_two_services_on_one_server(pg: DevServer, migrations: Path, template_name: str) -> None:
    """Two services (two SpareSeals) keeping spares of one template on one server: each top-up reads the other's
    spares (unknown to it) under new names, so the other's seals no longer name a spare. Whatever the order, a school
    is given the template's content, and changes made to a spare one of them sealed are not taken unread by either."""
    first, second = SpareSeals(), SpareSeals()
    keep_spares(pg, migrations, template_name, 2, first)
    keep_spares(pg, migrations, template_name, 2, second)  # reads and renames the first's spares
    for spare in spares_of(pg.url(), template_name):
        with opened(pg, spare):
            psql(pg, pg.url(spare) + "?replication=database", "CREATE TABLE not_the_schema (x int)")
    schools = [unique_db_name("adv_two") for _ in range(2)]
    try:
        for school, seals in zip(schools, (first, second), strict=True):
            onboard(pg, migrations, template_name, school, seals)
            assert not has_evil(pg, school)
            assert ledger(pg.url(school)) == expected_ledger(migrations)
    finally:
        for school in schools:
            execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_adversary_a_clean_restart_between_making_and_taking(servers: Servers, migrations: Path) -> None:
    """A clean restart (`pg_ctl stop -m fast`, start) keeps the statistics (and their epoch): an untouched sealed spare
    is still taken unread; one opened and changed through a walsender around the restart is read and set aside."""
    server = servers.get("restart")
    seals, name = SpareSeals(), unique_db_name("restarttpl")
    keep_spares(server, migrations, name, 2, seals)
    untouched, changed = spares_of(server.url(), name)
    execute_sync(server.url(), f"ALTER DATABASE {quote_ident(changed)} ALLOW_CONNECTIONS true")
    psql(server, server.url(changed) + "?replication=database", "CREATE TABLE not_the_schema (x int)")
    server.stop()
    server.start()
    execute_sync(server.url(), f"ALTER DATABASE {quote_ident(changed)} ALLOW_CONNECTIONS false")
    schools = [unique_db_name("adv_restart") for _ in range(2)]
    results = [onboard(server, migrations, name, school, seals) for school in schools]
    sessions = [fetchval_sync(server.url(), "SELECT sessions FROM pg_stat_database WHERE datname = $1", school)
                for school in schools]  # fmt: skip
    notes = " ".join(note for result in results for note in result.notes)
    assert f"ready copy {changed} of template {name} not used" in notes, notes
    assert f"ready copy ({untouched})" in notes, notes
    assert sessions[notes.index(untouched) > notes.index(changed)] == 0, "the untouched spare was taken unread"
    for school in schools:
        assert not has_evil(server, school)
        assert ledger(server.url(school)) == expected_ledger(migrations)


def test_adversary_a_createdb_role_recreates_its_spare_under_its_oid(pg: DevServer, migrations: Path) -> None:
    """The usual production setup: the spares' owner has CREATEDB and nothing more; CREATE DATABASE ... OID is
    its to use (from 16384 up), so the same role may forge a sealed spare."""
    role, template_name = "adv_seal_maker", unique_db_name("advroletpl")
    execute_sync(pg.url(), f"DROP ROLE IF EXISTS {role}")
    execute_sync(pg.url(), f"CREATE ROLE {role} LOGIN CREATEDB PASSWORD 'adv-pw'")
    maker = dataclasses.replace(pg, user=role, password="adv-pw")
    source = unique_db_name("evil_src")
    try:
        seals = SpareSeals()
        keep_spares(maker, migrations, template_name, 1, seals)
        [spare] = spares_of(maker.url(), template_name)
        oid = fetchval_sync(maker.url(), "SELECT oid FROM pg_database WHERE datname = $1", spare)
        comment = comment_of(maker, spare)
        execute_sync(maker.url(), f"CREATE DATABASE {quote_ident(source)} TEMPLATE {quote_ident(spare)}")
        execute_sync(maker.url(source), "CREATE TABLE not_the_schema (x int)")
        execute_sync(maker.url(), f"DROP DATABASE {quote_ident(spare)}")
        execute_sync(maker.url(), f"CREATE DATABASE {quote_ident(spare)} OID {oid} TEMPLATE {quote_ident(source)}"
                     " ALLOW_CONNECTIONS false")  # fmt: skip
        execute_sync(maker.url(), f"COMMENT ON DATABASE {quote_ident(spare)} IS {literal(comment)}")
        taken_and_checked(maker, migrations, template_name, spare, seals)
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(source)} WITH (FORCE)")
        drop_template(pg.url(), template_name)
        for aside in rejected(pg):
            execute_sync(pg.url(), f"DROP DATABASE {quote_ident(aside)} WITH (FORCE)")
        execute_sync(pg.url(), f"DROP OWNED BY {role}")
        execute_sync(pg.url(), f"DROP ROLE {role}")


def test_adversary_a_grant_between_the_row_versions_check_and_the_rename(
    pg: DevServer, migrations: Path, template_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row version is read just before the rename, which then updates whatever row is there: a grant committed
    in between (here it always wins that race: run as the rename's statement is written) must still be seen."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    real_quote = spare_seals.quote_ident
    granted: list[str] = []

    def quote_after_a_grant(name: str) -> str:
        if name == spare and not granted:  # the rename's statement, after the row version's check
            psql(pg, pg.url(), f"GRANT CREATE ON DATABASE {real_quote(spare)} TO PUBLIC")
            granted.append(name)
        return real_quote(name)

    monkeypatch.setattr(spare_seals, "quote_ident", quote_after_a_grant)
    school = unique_db_name("adv_between")
    try:
        result = onboard(pg, migrations, template_name, school, seals)

        assert granted, "the race was run"
        assert f"ready copy {spare} of template {template_name} not used" in " ".join(result.notes), result.notes
        assert fetchval_sync(pg.url(), "SELECT datacl FROM pg_database WHERE datname = $1", school) is None
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")
