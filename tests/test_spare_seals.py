"""A spare this process made (or read) is taken without a session on it only while nothing has been in it since
(spare_seals.py): the server's count of sessions on it, its statistics' reset times, its OID and its comment are
what the process saw. Whatever an adversary does to a sealed spare, it is read before it is the school's, as
every spare is without seals (the CLI, the Python API). The session count on the new school's database (its OID is
the spare's) shows which way it was taken: 0, taken unread; 1 or more, read first."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import asyncpg
import pytest
from conftest import Servers
from fleetkit import make_migrations
from pgfixtures import (
    drop_template,
    execute_sync,
    fetch_sync,
    fetchval_sync,
    ledger,
    quote_ident,
    run_sync,
    spares_of,
    unique_db_name,
)

import orchestrator
from orchestrator import template
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.outcome import DatabaseResult
from orchestrator.scratch import literal
from orchestrator.source import load_migrations
from orchestrator.spare_seals import SpareSeals, remembering, take_sealed
from orchestrator.target import DatabaseTarget
from orchestrator.template import REJECTED_NAME_PREFIX, SPARE_NAME_PREFIX

FILES = {"1_one.sql": "CREATE TABLE one (id int);\n", "2_two.sql": "CREATE TABLE two (id int);\n"}


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    return make_migrations(tmp_path / "m", FILES)


@pytest.fixture
def template_name(pg: DevServer) -> Iterator[str]:
    name = unique_db_name("sealtpl")
    yield name
    drop_template(pg.url(), name)
    drop_rejected(pg)


def drop_rejected(server: DevServer) -> None:
    """The spares set aside (never dropped by the tool: the test drops them), template or not."""
    for aside in rejected(server):
        execute_sync(server.url(), f"ALTER DATABASE {quote_ident(aside)} IS_TEMPLATE false")
        execute_sync(server.url(), f"DROP DATABASE {quote_ident(aside)} WITH (FORCE)")


def rejected(pg: DevServer) -> list[str]:
    rows = fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", REJECTED_NAME_PREFIX)
    return [r[0] for r in rows]


def keep_spares(pg: DevServer, migrations: Path, name: str, spares: int, seals: SpareSeals | None) -> list[str]:
    """`orchestrator template --spares N`'s work on `pg`, under `seals` (as the service runs it) or not (the CLI)."""
    with remembering(seals) if seals is not None else nullcontext():
        done = run_sync(
            template.keep_ready, DatabaseTarget.parse(pg.url()), name, load_migrations(migrations), EngineOptions(
                extensions=()), spares
        )  # fmt: skip
    assert done.ok, done.error
    return done.notes


def onboard(pg: DevServer, migrations: Path, name: str, school: str, seals: SpareSeals | None) -> DatabaseResult:
    with remembering(seals) if seals is not None else nullcontext():
        result = orchestrator.provision(pg.url(school), migrations=migrations, template=name, extensions=())
    assert result.ok, result.error
    return result


def sessions_on(pg: DevServer, database: str) -> int:
    """The server's count of sessions ever opened on `database` (read before the test opens one itself)."""
    return int(fetchval_sync(pg.url(), "SELECT sessions FROM pg_stat_database WHERE datname = $1", database))


def expected_ledger(migrations: Path) -> list[tuple[int, str, bool, bytes]]:
    return [(m.version, m.description, True, m.checksum) for m in load_migrations(migrations)]


def test_a_spare_this_process_made_is_taken_without_a_session_on_it(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    school = unique_db_name("sealed")
    try:
        result = onboard(pg, migrations, template_name, school, seals)

        assert any("from a ready copy" in note for note in result.notes), result.notes
        assert sessions_on(pg, school) == 0, "taken unread: its seal held"
        assert ledger(pg.url(school)) == expected_ledger(migrations)
        assert fetchval_sync(pg.url(), "SELECT datallowconn FROM pg_database WHERE datname = $1", school)
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_without_seals_every_spare_is_read_before_it_is_the_schools(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    keep_spares(pg, migrations, template_name, 1, SpareSeals())  # sealed in a process that is gone
    school = unique_db_name("unsealed")
    try:
        result = onboard(pg, migrations, template_name, school, None)  # the CLI's and the Python API's way

        assert any("from a ready copy" in note for note in result.notes), result.notes
        assert sessions_on(pg, school) >= 1, "read first"
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


# --- what an adversary may do to a sealed spare between its making and its taking -----------------------------------


@contextmanager
def opened(server: DevServer, database: str) -> Iterator[None]:
    """`database` (a spare) open to connections for the block, as its owner may open it, and closed again after."""
    execute_sync(server.url(), f"ALTER DATABASE {quote_ident(database)} ALLOW_CONNECTIONS true")
    try:
        yield
    finally:
        execute_sync(server.url(), f"ALTER DATABASE {quote_ident(database)} ALLOW_CONNECTIONS false")


def opened_and_changed(pg: DevServer, spare: str, *, then: str = "") -> None:
    """Its owner opens it, changes it (and runs `then` in the same session), and closes it again."""
    with opened(pg, spare):
        execute_sync(pg.url(spare), "DROP TABLE _sqlx_migrations; CREATE TABLE not_the_schema (x int)" + then)


def replaced_under_its_name(pg: DevServer, spare: str) -> None:
    """Another database of the same role, holding something else, renamed to the spare's name with its comment."""
    comment = fetchval_sync(pg.url(), "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = $1", spare)  # fmt: skip
    forged = unique_db_name("forged")
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} RENAME TO {quote_ident(forged + '_real')}")
    execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(forged)}")
    execute_sync(pg.url(forged), "CREATE TABLE not_the_schema (x int)")
    execute_sync(pg.url(), f"COMMENT ON DATABASE {quote_ident(forged)} IS {literal(comment)}")
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(forged)} ALLOW_CONNECTIONS false")
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(forged)} RENAME TO {quote_ident(spare)}")
    execute_sync(pg.url(), f"DROP DATABASE {quote_ident(forged + '_real')}")


def given_a_setting(pg: DevServer, spare: str) -> None:
    """A setting every session on the school will start with, given without a session on the spare."""
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} SET search_path = not_the_schema")


ADVERSARIES: dict[str, Callable[[DevServer, str], None]] = {
    "given_a_setting": given_a_setting,
    "opened_changed_and_closed": opened_and_changed,
    "changed_then_its_statistics_reset": lambda pg, spare: opened_and_changed(
        pg, spare, then="; SELECT pg_stat_reset()"
    ),
    "another_database_under_its_name": replaced_under_its_name,
}


@pytest.mark.parametrize("adversary", ADVERSARIES, ids=list(ADVERSARIES))
def test_adversary_a_sealed_spare_changed_since_is_read_and_set_aside(
    pg: DevServer, migrations: Path, template_name: str, adversary: str
) -> None:
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    ADVERSARIES[adversary](pg, spare)
    school = unique_db_name("seal_adv")
    try:
        result = onboard(pg, migrations, template_name, school, seals)

        assert f"ready copy {spare} of template {template_name} not used" in " ".join(result.notes), result.notes
        assert ledger(pg.url(school)) == expected_ledger(migrations), "copied from the template instead"
        assert not fetch_sync(pg.url(school), "SELECT 1 FROM pg_tables WHERE tablename = 'not_the_schema'")
        assert len(rejected(pg)) == 1
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_adversary_a_sealed_spare_opened_after_it_was_looked_at_is_not_taken_unread(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    """Opened to connections between the onboarding's look at the spares (which skips open ones) and its rename: a
    session could start on it before the rename commits. Nothing is renamed; the onboarding reads it instead."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} ALLOW_CONNECTIONS true")
    school = unique_db_name("seal_open")

    async def take() -> bool:
        conn = await asyncpg.connect(pg.url())
        try:
            with remembering(seals):
                return await take_sealed(conn, f"127.0.0.1:{pg.port}", spare, school)
        finally:
            await conn.close()

    assert seals.knows(f"127.0.0.1:{pg.port}", spare), "sealed under the server's name as targets give it"
    taken = run_sync(take)
    left = fetchval_sync(pg.url(), "SELECT datallowconn FROM pg_database WHERE datname = $1", spare)
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} ALLOW_CONNECTIONS false")  # for the clean-up

    assert taken is False
    assert left is True, "left as it was, under its name"
    assert not fetch_sync(pg.url(), "SELECT 1 FROM pg_database WHERE datname = $1", school)


def test_adversary_a_crash_that_loses_the_session_counts_does_not_hide_a_change(
    servers: Servers, migrations: Path
) -> None:
    """A crash (any backend killed) makes the server forget its statistics: the sessions a changed spare counted are
    gone with them, but the server's statistics epoch is new. Its own server: a crash ends every session on it."""
    server = servers.get("crash")
    seals, name, school = SpareSeals(), unique_db_name("crashtpl"), unique_db_name("crash_school")
    keep_spares(server, migrations, name, 1, seals)
    [spare] = spares_of(server.url(), name)
    opened_and_changed(server, spare)
    execute_sync(server.url(), "CHECKPOINT")  # the throwaway server commits asynchronously: else the crash loses it
    crash(server)
    assert sessions_on(server, spare) == 0, "the crash took the session count with it"

    result = onboard(server, migrations, name, school, seals)

    assert f"ready copy {spare} of template {name} not used" in " ".join(result.notes), result.notes
    assert ledger(server.url(school)) == expected_ledger(migrations)


def crash(server: DevServer) -> None:
    """Kill -9 a backend (one sleeping in a statement): the server ends every session, recovers, forgets its
    statistics."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, anyio, asyncpg\n"
         "async def main():\n"
         "    conn = await asyncpg.connect(sys.argv[1])\n"
         "    print(conn.get_server_pid(), flush=True)\n"
         "    await conn.execute('SELECT pg_sleep(600)')\n"
         "anyio.run(main)\n", server.url()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    os.kill(int(proc.stdout.readline()), signal.SIGKILL)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while True:
        try:
            fetchval_sync(server.url(), "SELECT 1")
            return
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            assert time.monotonic() < deadline, "the server did not come back after the crash"
            time.sleep(0.2)


# --- spares another process made ----------------------------------------------------------------------------------


def test_spares_another_process_made_are_read_once_then_sealed(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    keep_spares(pg, migrations, template_name, 2, None)  # the CLI: nothing sealed
    before = spares_of(pg.url(), template_name)
    opened_and_changed(pg, before[0])  # one of them changed since
    seals = SpareSeals()

    notes = keep_spares(pg, migrations, template_name, 2, seals)  # the service's first top-up

    after = spares_of(pg.url(), template_name)
    assert len(after) == 2 and not set(after) & set(before), "read under a new name each (and one made anew)"
    assert any(f"ready copy {before[0]} of template {template_name} not kept" in note for note in notes), notes
    assert len(rejected(pg)) == 1
    schools = [unique_db_name("adopted") for _ in after]
    try:
        for school in schools:
            onboard(pg, migrations, template_name, school, seals)
        # The one read (its reading session counted), the one made anew (none): neither opened again when taken.
        assert sorted(sessions_on(pg, school) for school in schools) == [0, 1]
    finally:
        for school in schools:
            execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_a_forged_spare_name_is_not_taken_on_a_seal_of_another_name(
    pg: DevServer, migrations: Path, template_name: str
) -> None:
    """Seals are by name and OID: a database made to look like a spare (name, comment, closed) was never sealed."""
    seals = SpareSeals()
    keep_spares(pg, migrations, template_name, 1, seals)
    [spare] = spares_of(pg.url(), template_name)
    comment = fetchval_sync(pg.url(), "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                            "WHERE datname = $1", spare)  # fmt: skip
    execute_sync(pg.url(), f"DROP DATABASE {quote_ident(spare)}")
    forged = SPARE_NAME_PREFIX + "0" * 16
    execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(forged)}")
    execute_sync(pg.url(forged), "CREATE TABLE not_the_schema (x int)")
    execute_sync(pg.url(), f"COMMENT ON DATABASE {quote_ident(forged)} IS {literal(comment)}")
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(forged)} ALLOW_CONNECTIONS false")
    school = unique_db_name("forged_school")
    try:
        result = onboard(pg, migrations, template_name, school, seals)

        assert f"ready copy {forged} of template {template_name} not used" in " ".join(result.notes), result.notes
        assert ledger(pg.url(school)) == expected_ledger(migrations)
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")


def test_a_spare_of_a_project_with_hundreds_of_tables_is_read_and_taken(pg: DevServer, tmp_path: Path) -> None:
    """The read's digest covers every table's rows: one query whatever their number (a function would take at most
    100 arguments: a project of 60 files has more tables than that)."""
    tables = "".join(f"CREATE TABLE t{i} (id int PRIMARY KEY, name text);\n" for i in range(150))
    migrations = make_migrations(tmp_path / "many", {"1_many.sql": tables + "INSERT INTO t7 VALUES (1, 'seed');\n"})
    name, school = unique_db_name("manytpl"), unique_db_name("many_school")
    try:
        keep_spares(pg, migrations, name, 1, None)
        result = onboard(pg, migrations, name, school, None)

        assert any("from a ready copy" in note for note in result.notes), result.notes
        assert fetchval_sync(pg.url(school), "SELECT name FROM t7") == "seed"
    finally:
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")
        drop_template(pg.url(), name)
