"""Extensions: none unless asked for (a school the tool builds is the one `sqlx migrate run` builds), the same
--extension / --no-extensions on every command that has extensions, a provision that fails after creating the
database leaves none behind (only when it provably was ours and empty), and audit findings that say where an
expected extension comes from."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg
import pytest
from fleetkit import cli, fleet_registry, make_migrations, make_school, popen, write_registry
from pgfixtures import database_exists, execute_sync, fetch_sync, fetchval_sync, run_sync, unique_db_name
from typer.testing import CliRunner

from orchestrator.audit.schema import SchemaSnapshot, snapshot
from orchestrator.cli import app
from orchestrator.devserver import DevServer

SQLX = Path(sys.executable).parent / "sqlx"

# A school schema that needs no extension (gen_random_uuid() is core since PostgreSQL 13).
PLAIN = {
    "1_people.up.sql": "CREATE TABLE people (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), name text NOT NULL "
    "DEFAULT '');\nCREATE INDEX people_name_idx ON people (name);\n",
    "1_people.down.sql": "DROP TABLE people;\n",
    "2_pets.sql": "CREATE TABLE pets (id bigint PRIMARY KEY, owner uuid REFERENCES people (id) ON DELETE CASCADE);\n",
}


async def _schema(url: str) -> SchemaSnapshot:
    conn = await asyncpg.connect(url)
    try:
        return await snapshot(conn)
    finally:
        await conn.close()


def built(url: str) -> tuple[SchemaSnapshot, list[str], list[tuple[object, ...]]]:
    """What a school is: its schema, its extensions, its ledger as SQLx reads it."""
    extensions = [r["extname"] for r in fetch_sync(url, "SELECT extname FROM pg_extension ORDER BY 1")]
    ledger = fetch_sync(url, "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY 1")
    return run_sync(_schema(url)), extensions, [tuple(r) for r in ledger]


def sqlx_run(migrations: Path, url: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run(
        [str(SQLX), "migrate", "run", "--no-dotenv", "--source", str(migrations), "-D", url],
        check=True, capture_output=True, env=env, timeout=60,
    )  # fmt: skip


@pytest.mark.sqlx
def test_a_provisioned_school_is_exactly_what_sqlx_migrate_run_builds(tmp_path: Path, pg18: DevServer) -> None:
    """On PostgreSQL 18, whose packaging has no uuid-ossp: the default creates no extension, so it just works."""
    migrations = make_migrations(tmp_path / "m", PLAIN)
    by_sqlx = make_school(pg18, "by_sqlx")
    sqlx_run(migrations, pg18.url(by_sqlx))
    expected = built(pg18.url(by_sqlx))
    assert expected[1] == ["plpgsql"]
    for flags in ([], ["--no-extensions"]):
        url = pg18.url(unique_db_name("by_us"))
        result = cli("provision", "-D", url, "--migrations", str(migrations), *flags)
        assert result.returncode == 0, result.stdout + result.stderr
        assert built(url) == expected, flags


def test_every_command_with_extensions_takes_both_flags_and_they_override_the_registry(
    tmp_path: Path, pg: DevServer
) -> None:
    for command in ("migrate", "bootstrap", "provision", "audit", "template"):
        text = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert "--extension" in text and "--no-extensions" in text, command
    for command in ("plan", "status", "revert"):
        assert "--no-extensions" not in CliRunner().invoke(app, [command, "--help"]).output, command

    migrations = make_migrations(tmp_path / "m", PLAIN)
    school = make_school(pg, "ext_flags")
    registry = write_registry(
        tmp_path / "t.yaml", [("s0", f"postgresql://postgres:${{PGPW}}@127.0.0.1:{pg.port}/{school}", [])],
        defaults="defaults:\n  extensions: [citext]\n",
    )  # fmt: skip
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    both = cli("bootstrap", "--yes", *args, "--extension", "citext", "--no-extensions")
    assert both.returncode == 2 and "contradict" in both.stderr, both.stdout + both.stderr
    assert cli("bootstrap", "--yes", *args, "--no-extensions").returncode == 0
    assert fetchval_sync(pg.url(school), "SELECT count(*) FROM pg_extension WHERE extname = 'citext'") == 0
    assert cli("bootstrap", "--yes", *args).returncode == 0, "the registry's defaults.extensions"
    assert fetchval_sync(pg.url(school), "SELECT count(*) FROM pg_extension WHERE extname = 'citext'") == 1


# --- a provision that fails after CREATE DATABASE --------------------------------------------------------------


def test_a_provision_failing_on_an_extension_the_server_lacks_leaves_no_database(
    tmp_path: Path, pg18: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "m", PLAIN)
    name = unique_db_name("no_ossp")
    result = cli("provision", "-D", pg18.url(name), "--migrations", str(migrations), "--extension", "uuid-ossp",
                 "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert "extension uuid-ossp is not installed" in result.stdout
    assert not run_sync(database_exists(pg18.url(), name)), "no empty database left behind"
    [school] = json.loads((tmp_path / "r.json").read_text())["schools"]
    assert f"dropped database {name} again: this call created it and it held nothing else" in school["notes"]
    assert school["created_database"] is False


def test_a_failing_first_file_leaves_no_database_and_a_failing_later_one_keeps_it(
    tmp_path: Path, pg: DevServer
) -> None:
    first_fails = make_migrations(tmp_path / "a", {"1_broken.sql": "CREATE TABLE t (id int);\nSELECT 1/0;\n"})
    name = unique_db_name("first_fails")
    assert cli("provision", "-D", pg.url(name), "--migrations", str(first_fails)).returncode == 1
    assert not run_sync(database_exists(pg.url(), name))

    later_fails = make_migrations(tmp_path / "b", {**PLAIN, "3_broken.sql": "SELECT 1/0;\n"})
    name = unique_db_name("later_fails")
    result = cli("provision", "-D", pg.url(name), "--migrations", str(later_fails))
    assert result.returncode == 1, result.stdout + result.stderr
    assert [r["version"] for r in fetch_sync(pg.url(name), "SELECT version FROM _sqlx_migrations")] == [1, 2]
    assert "dropped" not in result.stdout, "it holds the files applied: the next provision goes on from there"


def _while_the_file_runs(pg: DevServer, name: str, then: str | None, tmp_path: Path) -> list[str]:
    """Provision `name` with a first file that sleeps and then fails; meanwhile another session connects to the new
    database (and runs `then`, then leaves; or stays connected when None). Returns the school's notes."""
    files = {"1_slow_then_broken.sql": "SELECT pg_sleep(4);\nSELECT 1/0;\n"}
    migrations = make_migrations(tmp_path / "m", files)
    proc = popen("provision", "-D", pg.url(name), "--migrations", str(migrations), "--json", "--no-progress")
    deadline = time.monotonic() + 30
    while not run_sync(database_exists(pg.url(), name)):
        assert time.monotonic() < deadline and proc.poll() is None, "the database never appeared"
        time.sleep(0.05)
    time.sleep(0.5)  # the provision's own session is in, and the file is running

    leave, connected = threading.Event(), threading.Event()

    async def intrude() -> None:
        conn = await asyncpg.connect(pg.url(name))
        try:
            if then is not None:
                await conn.execute(then)
                return
            connected.set()
            while not leave.is_set():
                await asyncio.sleep(0.05)
        finally:
            await conn.close()
            connected.set()

    other = threading.Thread(target=asyncio.run, args=(intrude(),))
    other.start()
    try:
        assert connected.wait(20)
        out, err = proc.communicate(timeout=60)
    finally:
        leave.set()
        other.join(10)
    assert proc.returncode == 1, out + err
    return list(json.loads(out)["schools"][0]["notes"])


def test_a_new_database_someone_else_is_connected_to_is_left_in_place(tmp_path: Path, pg: DevServer) -> None:
    name = unique_db_name("other_session")
    notes = _while_the_file_runs(pg, name, None, tmp_path)
    assert any("left database" in n and "1 other session(s) on it" in n for n in notes), notes
    assert run_sync(database_exists(pg.url(), name))
    assert fetchval_sync(pg.url(), "SELECT datallowconn FROM pg_database WHERE datname = $1", name) is True


def test_a_new_database_someone_else_wrote_to_is_left_in_place(tmp_path: Path, pg: DevServer) -> None:
    name = unique_db_name("other_writer")
    notes = _while_the_file_runs(pg, name, "CREATE TABLE intruder (id int)", tmp_path)
    assert any("left database" in n and "it holds more" in n for n in notes), notes
    assert fetchval_sync(pg.url(name), "SELECT to_regclass('intruder') IS NOT NULL") is True
    assert fetchval_sync(pg.url(), "SELECT datallowconn FROM pg_database WHERE datname = $1", name) is True


# --- the audit says where an expected extension comes from -----------------------------------------------------


def test_audit_findings_name_where_an_expected_extension_comes_from(tmp_path: Path, pg: DevServer) -> None:
    files = {**PLAIN, "3_citext.sql": "CREATE EXTENSION IF NOT EXISTS citext;\n"}
    migrations = make_migrations(tmp_path / "m", files)
    configured, created = make_school(pg, "ext_configured"), make_school(pg, "ext_created")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [configured, created])
    registry.write_text("defaults:\n  extensions: [pgcrypto]\n" + registry.read_text())
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args, "--create-missing").returncode == 0
    assert cli("bootstrap", "--yes", *args).returncode == 0  # creates pgcrypto on both
    execute_sync(pg.url(configured), "DROP EXTENSION pgcrypto")
    execute_sync(pg.url(created), "DROP EXTENSION citext")

    audit = cli("audit", *args, "--report", str(tmp_path / "a.json"))
    assert audit.returncode == 1, audit.stdout + audit.stderr
    found = {
        s["id"]: [f["text"] for f in s["findings"]] for s in json.loads((tmp_path / "a.json").read_text())["schools"]
    }
    assert "extension pgcrypto is not installed (configured by the registry's defaults.extensions)" in found["s0"]
    assert "extension pgcrypto missing (configured by the registry's defaults.extensions)" in found["s0"]
    assert "extension citext missing (created by migration 3)" in found["s1"]
