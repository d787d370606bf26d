"""Trust: the tool drops only databases it can prove it made (marked when made, their maker gone), never a school's
nor anything merely named like its own; names of its own kind are refused for schools and templates before any
connection; and an interrupted or killed run leaves nothing half-made past the next run, which drops it at once."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
import asyncpg
import pytest
from conftest import Servers
from fleetkit import ROOT, cli, popen, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
    abandoned_scratch,
    create_database,
    database_exists,
    drop_database,
    execute_sync,
    fetch,
    fetch_sync,
    fetchval_sync,
    quote_ident,
    run_sync,
    spares_of,
    unique_db_name,
    until_unlocked,
)

from orchestrator import scratch
from orchestrator.devserver import DevServer

HANG_GUARD_S = 60
UUID_OSSP = ("--extension", "uuid-ossp")  # the project's migrations call uuid_generate_v4(); none is the default


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A private copy of the school schema (without released.sum, so a test can add a file)."""
    return Path(shutil.copytree(ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("*.sum")))


@pytest.fixture
def slow_flag(pg: DevServer) -> Iterator[str]:
    """A database whose existence makes every build of `slow_migrations` wait (dropping it lets them go on)."""
    name = unique_db_name("slow_flag")
    run_sync(create_database(pg.url(), name))
    yield name
    run_sync(drop_database(pg.url(), name))


@pytest.fixture
def slow_migrations(migrations: Path, slow_flag: str) -> Path:
    """The school schema plus a last file that waits (at most a minute) while the `slow_flag` database exists: a
    template build that can be caught half-way."""
    (migrations / "20250301000000_wait_for_the_test.sql").write_text(
        "DO $$ BEGIN\n"
        "  FOR i IN 1..600 LOOP\n"
        f"    EXIT WHEN NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = '{slow_flag}');\n"
        "    PERFORM pg_sleep(0.1);\n"
        "  END LOOP;\n"
        "END $$;\n"
    )
    return migrations


@pytest.fixture
def template(pg: DevServer) -> Iterator[str]:
    """A template name of this test's own; the template and its spares are dropped afterwards."""
    name = unique_db_name("tplown")
    yield name
    for database in [*spares_of(pg.url(), name), name]:
        if not run_sync(database_exists(pg.url(), database)):
            continue
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(database)} IS_TEMPLATE false")
        execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(database)} WITH (FORCE)")


def scratch_left(pg: DevServer) -> list[str]:
    """Databases of the tool's own kind on the server, spares aside (they are kept on purpose)."""
    rows = fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE datname LIKE 'orchestrator\\_%' ORDER BY 1")
    return [r[0] for r in rows if not r[0].startswith("orchestrator_spare_")]


def keep(pg: DevServer, migrations: Path, template: str, spares: int, *more: str) -> subprocess.CompletedProcess[str]:
    """`orchestrator template` in a subprocess (only the URL's server counts: nothing connects to its database)."""
    return cli("template", "-D", pg.url(unique_db_name("unused")), "--template", template, "--spares", str(spares),
               "--migrations", str(migrations), *UUID_OSSP, *more)  # fmt: skip


def until_building(pg: DevServer) -> str:
    """The template build a run is waiting in (see slow_migrations): its name, once the wait has begun."""
    deadline = time.monotonic() + HANG_GUARD_S
    while time.monotonic() < deadline:
        building = fetchval_sync(
            pg.url(),
            "SELECT datname FROM pg_stat_activity WHERE datname LIKE 'orchestrator\\_tmpl\\_%' AND query LIKE 'DO $$%'",
        )
        if building:
            return str(building)
        time.sleep(0.05)
    raise AssertionError("no template build started waiting")


# --- names of the tool's own kind: refused before any connection --------------------------------------------------


@pytest.mark.parametrize(
    ("entry", "line", "what"),
    [
        (
            "url: postgresql://app@db1/orchestrator_school_2024_deadbeef",
            3,
            "database 'orchestrator_school_2024_deadbeef'",
        ),
        ("url: postgresql://app@db1/Orchestrator_Spare_0123456789abcdef", 3, "database 'Orchestrator_Spare_"),
        ("url: postgresql://app@db1/school_a\n    template: ORCHESTRATOR_tmpl", 4, "template 'ORCHESTRATOR_tmpl'"),
    ],
    ids=["scratch-shaped-school", "spare-named-school-any-case", "template"],
)
def test_a_name_of_the_tools_own_kind_is_refused_in_the_registry_with_its_line(
    tmp_path: Path, entry: str, line: int, what: str
) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text(f"tenants:\n  - id: a\n    {entry}\n")

    result = cli("status", "--registry", str(registry), "--migrations", str(ROOT / "migrations"))

    assert result.returncode == 2, result.stderr
    assert f"tenants.yaml:{line}: " in result.stderr and what in result.stderr
    assert "starts with 'orchestrator_'" in result.stderr and "what to do:" in result.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["-D", "postgresql://app@127.0.0.1:1/orchestrator_ref_1700000000_0badf00d"],
        ["-D", "postgresql://app@127.0.0.1:1/school_x", "--template", "orchestrator_template"],
    ],
    ids=["school", "template"],
)
def test_a_name_of_the_tools_own_kind_is_refused_on_the_command_line_before_any_connection(args: list[str]) -> None:
    result = cli("provision", *args, "--migrations", str(ROOT / "migrations"))
    assert result.returncode == 2, result.stderr
    assert "starts with 'orchestrator_'" in result.stderr
    assert "cannot connect" not in result.stderr  # port 1: a connection attempt would have said so


def test_a_registry_template_naming_a_schools_database_is_refused_with_its_line(tmp_path: Path) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_text(
        "defaults:\n  template: school_b\n"
        "tenants:\n  - id: a\n    url: postgresql://app@db1/school_a\n  - id: b\n    url: postgresql://app@db2/school_b\n"
    )
    result = cli("status", "--registry", str(registry), "--migrations", str(ROOT / "migrations"))
    assert result.returncode == 2, result.stderr
    assert "tenants.yaml:2: template 'school_b' is the database of school b (line 6)" in result.stderr


# --- only what carries our mark, and whose maker is gone ----------------------------------------------------------


def test_databases_named_like_ours_without_our_mark_survive_audit_template_and_provision(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    # Made by hand: the shape the old clean-up dropped by (a day old), and a spare's name closed to connections.
    lookalikes = ["orchestrator_school_1000000000_deadbeef", "orchestrator_spare_0123456789abcdef"]
    for name in lookalikes:
        run_sync(create_database(pg.url(), name))
    execute_sync(pg.url(), f"ALTER DATABASE {lookalikes[1]} ALLOW_CONNECTIONS false")
    school = unique_db_name("lookalike_audited")
    try:
        provisioned = cli("provision", "-D", pg.url(school), "--template", template, "--migrations", str(migrations),
                          *UUID_OSSP)  # fmt: skip
        assert provisioned.returncode == 0, provisioned.stdout + provisioned.stderr
        registry = write_registry(tmp_path / "t.yaml", [("a", registry_url(pg, school), [])])
        audited = cli("audit", "--registry", str(registry), "--migrations", str(migrations), *UUID_OSSP)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        for spares in (2, 0):  # making spares, then dropping every spare of the template
            kept = keep(pg, migrations, template, spares)
            assert kept.returncode == 0, kept.stdout + kept.stderr

        assert all(run_sync(database_exists(pg.url(), name)) for name in lookalikes)
        assert scratch_left(pg) == [lookalikes[0]]
        assert "named like the tool's scratch databases but without its mark" in audited.stderr
    finally:
        for name in [*lookalikes, school]:
            run_sync(drop_database(pg.url(), name))


MAKER = """
import sys, anyio, asyncpg
from orchestrator import scratch

async def main() -> None:
    conn = await asyncpg.connect(sys.argv[1])
    made = await scratch.make(conn, "tmpl")
    print(made.name, flush=True)
    await anyio.sleep(3600)

anyio.run(main)
"""


@contextmanager
def maker(pg: DevServer) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    """Another process that made a scratch database and lives on: its name and the process (kill it to end it)."""
    proc = subprocess.Popen([sys.executable, "-c", MAKER, pg.url("postgres")], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)  # fmt: skip
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().strip(), proc
    finally:
        proc.kill()
        proc.wait()


def test_a_scratch_database_is_dropped_as_soon_as_its_maker_is_gone_and_never_before(
    pg: DevServer, migrations: Path, template: str
) -> None:
    with maker(pg) as (name, proc):
        assert name.startswith("orchestrator_tmpl_") and run_sync(database_exists(pg.url(), name))

        while_alive = keep(pg, migrations, template, 0)

        assert while_alive.returncode == 0, while_alive.stdout + while_alive.stderr
        assert run_sync(database_exists(pg.url(), name)), "its maker lives: it is not the clean-up's"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    run_sync(until_unlocked(pg.url(), name))

    after = keep(pg, migrations, template, 0)

    assert after.returncode == 0, after.stdout + after.stderr
    assert not run_sync(database_exists(pg.url(), name)), "its maker is gone: dropped by the next run, at once"


def test_an_abandoned_scratch_database_still_connected_to_by_its_dead_makers_statement_is_dropped(
    pg: DevServer, migrations: Path, template: str
) -> None:
    # A maker killed mid-statement leaves a backend running on the database until the server notices it is orphaned.
    name = run_sync(abandoned_scratch(pg.url(), "rehearse"))
    with orphan_statement(pg.url(name)):
        kept = keep(pg, migrations, template, 0)

        assert kept.returncode == 0, kept.stdout + kept.stderr
        assert not run_sync(database_exists(pg.url(), name))


def test_the_clean_up_never_drops_a_scratch_database_its_own_session_is_making(pg: DevServer) -> None:
    # Session locks are re-entrant: the maker's own session could take its lock again and take itself for gone.
    async def clean_up_beside_own_scratch() -> tuple[list[str], bool]:
        conn = await asyncpg.connect(pg.url("postgres"))
        try:
            made = await scratch.make(conn, "ref")
            dropped = await scratch.drop_abandoned(conn)
            still_there = bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", made.name))
            await scratch.discard(conn, made)
            return dropped, still_there
        finally:
            await conn.close()

    dropped, still_there = run_sync(clean_up_beside_own_scratch)

    assert dropped == [] and still_there
    assert scratch_left(pg) == []


def test_a_role_without_superuser_drops_its_scratch_database_while_autovacuum_works_in_it(servers: Servers) -> None:
    # DROP ... WITH (FORCE) refuses a non-superuser outright when an autovacuum worker (a session of no role) is in
    # the database, and a fresh template build is just what autovacuum visits: found as a leftover build in CI.
    server = servers.get("autovacuum")  # its own server: autovacuum looks every second here
    execute_sync(server.url(), "ALTER SYSTEM SET autovacuum_naptime = 1")
    execute_sync(server.url(), "SELECT pg_reload_conf()")
    role = unique_db_name("maker")
    execute_sync(server.url(), f"CREATE ROLE {quote_ident(role)} LOGIN CREATEDB PASSWORD '{PG_PASSWORD}'")
    as_role = server.url("postgres").replace("//postgres:", f"//{role}:", 1)

    async def drop_with_autovacuum_inside() -> str:
        conn = await asyncpg.connect(as_role)
        try:
            made = await scratch.make(conn, "ref")
            inside = await asyncpg.connect(as_role.rsplit("/", 1)[0] + "/" + made.name)
            try:  # a table autovacuum visits at once and then works through slowly (a page every 100 ms)
                await inside.execute(
                    "CREATE TABLE t (n int) WITH (autovacuum_vacuum_insert_threshold = 1,"
                    " autovacuum_vacuum_insert_scale_factor = 0, autovacuum_analyze_threshold = 1,"
                    " autovacuum_analyze_scale_factor = 0, autovacuum_vacuum_cost_delay = 100,"
                    " autovacuum_vacuum_cost_limit = 1);"
                    " INSERT INTO t SELECT generate_series(1, 100000)"
                )
            finally:
                await inside.close()
            with anyio.fail_after(HANG_GUARD_S):  # (only a superuser sees another role's backend_type)
                while not await fetch(
                    server.url(), "SELECT 1 FROM pg_stat_activity WHERE datname = $1 AND "
                    "backend_type = 'autovacuum worker'", made.name,
                ):  # fmt: skip
                    await anyio.sleep(0.1)
            await scratch.discard(conn, made)
            return made.name
        finally:
            await conn.close()

    name = run_sync(drop_with_autovacuum_inside)

    assert not run_sync(database_exists(server.url(), name)), "dropped, autovacuum or not"


@contextmanager
def orphan_statement(url: str) -> Iterator[None]:
    """A statement running on `url` whose client has died (kill -9): the server runs it on, orphaned."""
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, anyio, asyncpg\n"
         "async def main():\n"
         "    conn = await asyncpg.connect(sys.argv[1])\n"
         "    print('connected', flush=True)\n"
         "    await conn.execute('SELECT pg_sleep(600)')\n"
         "anyio.run(main)\n", url],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "connected"
    time.sleep(0.3)  # the statement has reached the server
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    try:
        yield
    finally:
        execute_sync(
            url.rsplit("/", 1)[0] + "/postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(600)'",
        )


# --- interrupted and killed runs ------------------------------------------------------------------------------------


def test_sigterm_stops_the_template_command_mid_build_with_the_report_written_and_nothing_left(
    tmp_path: Path, pg: DevServer, slow_migrations: Path, slow_flag: str, template: str
) -> None:
    report, junit = tmp_path / "r.json", tmp_path / "r.xml"
    proc = popen("template", "-D", pg.url(unique_db_name("unused")), "--template", template, "--spares", "1",
                 "--migrations", str(slow_migrations), "--report", str(report), "--junit", str(junit),
                 *UUID_OSSP)  # fmt: skip
    try:
        until_building(pg)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        proc.kill()

    assert proc.returncode == 130, stdout + stderr
    written = json.loads(report.read_text())
    assert written["interrupted"] is True and written["ok"] is False
    [server] = written["servers"]
    assert server["error"].startswith("interrupted: stopped while working on it"), server
    assert ET.parse(junit).getroot().find(".//failure") is not None
    assert "interrupted" in stdout
    assert scratch_left(pg) == [], "the half-made build is dropped before the process ends"
    assert not run_sync(database_exists(pg.url(), template))
    run_sync(drop_database(pg.url(), slow_flag))  # the next run builds at once
    again = keep(pg, slow_migrations, template, 1)
    assert again.returncode == 0, again.stdout + again.stderr
    assert scratch_left(pg) == [] and len(spares_of(pg.url(), template)) == 1


def test_two_sigterms_abort_provision_mid_build_with_the_report_written_and_nothing_left(
    tmp_path: Path, pg: DevServer, slow_migrations: Path, template: str
) -> None:
    report, school = tmp_path / "r.json", unique_db_name("interrupted_onboarding")
    proc = popen("provision", "-D", pg.url(school), "--template", template, "--migrations", str(slow_migrations),
                 "--report", str(report), *UUID_OSSP)  # fmt: skip
    try:
        until_building(pg)
        proc.send_signal(signal.SIGTERM)  # the school would get the grace to finish; the second aborts it now
        time.sleep(0.5)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    finally:
        proc.kill()

    assert proc.returncode == 130, stdout + stderr
    written = json.loads(report.read_text())
    assert written["interrupted"] is True and written["schools"][0]["error"]["code"] == "interrupted"
    assert scratch_left(pg) == [], "the half-made build is dropped before the process ends"
    assert not run_sync(database_exists(pg.url(), template))


def test_a_build_left_by_kill_9_of_provision_is_dropped_by_the_next_provision_at_once(
    pg: DevServer, slow_migrations: Path, slow_flag: str, template: str
) -> None:
    first = popen("provision", "-D", pg.url(unique_db_name("killed_onboarding")), "--template", template,
                  "--migrations", str(slow_migrations), *UUID_OSSP)  # fmt: skip
    try:
        build = until_building(pg)
    finally:
        first.kill()  # SIGKILL: no clean-up of its own; its statement on the build runs on, orphaned
        first.wait()
    run_sync(until_unlocked(pg.url(), build))
    assert scratch_left(pg) == [build]
    run_sync(drop_database(pg.url(), slow_flag))  # the next build goes through at once

    school = unique_db_name("next_onboarding")
    second = cli("provision", "-D", pg.url(school), "--template", template, "--migrations", str(slow_migrations),
                 *UUID_OSSP)  # fmt: skip

    assert second.returncode == 0, second.stdout + second.stderr
    assert not run_sync(database_exists(pg.url(), build))
    assert scratch_left(pg) == []
    assert run_sync(database_exists(pg.url(), template))
    run_sync(drop_database(pg.url(), school))
