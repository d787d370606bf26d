"""The single-database engine against a real PostgreSQL: provision, migrate, plan, revert, and how each refuses or
fails (SQLx's wording, SQLSTATEs, lines, locks, timeouts, lost connections, races, secrets)."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg
import pytest
from pgfixtures import (
    PG_PASSWORD,
    database_exists,
    drop_database,
    execute_sync,
    fetch_sync,
    fetchval_sync,
    run_sync,
    with_database,
)
from pgversions import MigrationSet

import orchestrator
from orchestrator import engine, resolve
from orchestrator.connection import SessionSettings
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.errors import UsageError
from orchestrator.history import effect_check
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.source import MigrationSource, load_migrations
from orchestrator.sqlx import CREATE_HISTORY_TABLE, advisory_lock_key
from orchestrator.target import DatabaseTarget

PROJECT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
V1, V2, V3 = 20250101000000, 20250115000000, 20250201000000


# --- helpers ----------------------------------------------------------------------------------------------------


def options(
    *,
    lock_wait: float = 10.0,
    lock_timeout: float = 5.0,
    statement_timeout: float = 60.0,
    target_version: int | None = None,
    extensions: tuple[str, ...] = (),
) -> EngineOptions:
    """Engine options; `extensions` are what provision creates (the school schema's: `schema_set.extensions`)."""
    return EngineOptions(
        session=SessionSettings(connect_timeout=5.0, lock_timeout=lock_timeout, statement_timeout=statement_timeout),
        lock_wait=lock_wait,
        target_version=target_version,
        extensions=extensions,
    )


def migrations_dir(directory: Path, files: dict[str, str]) -> MigrationSource:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return load_migrations(directory)


def project_copy(tmp_path: Path, schema_set: MigrationSet) -> Path:
    copy = tmp_path / "migrations"
    shutil.copytree(schema_set.directory, copy)
    return copy


def migrate(url: str, source: MigrationSource, opts: EngineOptions | None = None) -> DatabaseResult:
    return run_sync(engine.migrate, DatabaseTarget.parse(url), source, opts or options())


def provision(url: str, source: MigrationSource, opts: EngineOptions | None = None) -> DatabaseResult:
    return run_sync(engine.provision, DatabaseTarget.parse(url), source, opts or options())


def history(url: str) -> list[asyncpg.Record]:
    return fetch_sync(
        url, "SELECT version, description, success, checksum, execution_time FROM _sqlx_migrations ORDER BY version"
    )


def versions(url: str) -> list[int]:
    return [r["version"] for r in history(url)]


def has_table(url: str, name: str) -> bool:
    return bool(fetchval_sync(url, "SELECT to_regclass($1) IS NOT NULL", name))


def advisory_locks(url: str) -> int:
    return fetchval_sync(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
        "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )


def everything_said(result: DatabaseResult) -> str:
    return json.dumps(result.to_dict()) + repr(result) + str(result.error) + " ".join(result.notes)


# --- provisioning -----------------------------------------------------------------------------------------------


def test_provision_creates_database_extension_history_and_applies_every_migration(
    fresh_url: str, pg: DevServer, db_name: str, schema_set: MigrationSet
) -> None:
    assert not run_sync(database_exists(pg.url(), db_name))

    result = orchestrator.provision(fresh_url, migrations=schema_set.directory, extensions=schema_set.extensions)

    assert result.ok, result.error
    assert result.status is Status.APPLIED
    assert result.created_database
    assert result.applied_versions == [V1, V2, V3]
    assert (result.version_before, result.version_after) == (None, V3)
    assert result.pending == []
    assert run_sync(database_exists(pg.url(), db_name))
    for extension in schema_set.extensions:
        assert fetchval_sync(fresh_url, "SELECT 1 FROM pg_extension WHERE extname = $1", extension) == 1
    rows = history(fresh_url)
    assert [r["version"] for r in rows] == [V1, V2, V3]
    assert [r["description"] for r in rows] == ["initial schema", "add attendance", "add grades"]
    assert all(r["success"] is True for r in rows)
    for row, migration in zip(rows, load_migrations(schema_set.directory), strict=True):
        assert bytes(row["checksum"]) == hashlib.sha384(migration.up_path.read_bytes()).digest()
        assert row["execution_time"] > 0  # nanoseconds, updated after the commit (SQLx inserts -1 first)
    for table in ("admin_users", "students", "attendance", "grades"):
        assert has_table(fresh_url, table)


def test_second_provision_is_up_to_date_and_changes_nothing(fresh_url: str, schema_set: MigrationSet) -> None:
    first = orchestrator.provision(fresh_url, migrations=schema_set.directory, extensions=schema_set.extensions)
    assert first.status is Status.APPLIED
    before = fetch_sync(fresh_url, "SELECT version, installed_on, execution_time FROM _sqlx_migrations")

    second = orchestrator.provision(fresh_url, migrations=schema_set.directory, extensions=schema_set.extensions)

    assert second.ok and second.status is Status.UP_TO_DATE
    assert not second.created_database
    assert second.steps == [] and second.notes == []
    assert second.version_before == second.version_after == V3
    assert fetch_sync(fresh_url, "SELECT version, installed_on, execution_time FROM _sqlx_migrations") == before


def test_migrate_on_a_missing_database_is_no_database_and_creates_nothing(
    fresh_url: str, pg: DevServer, db_name: str, schema_set: MigrationSet
) -> None:
    result = migrate(fresh_url, load_migrations(schema_set.directory))

    assert result.status is Status.NO_DATABASE and not result.ok
    assert result.error is not None
    assert result.error.code == "database_missing"
    assert db_name in result.error.message
    assert result.error.hint and "provision" in result.error.hint
    assert not run_sync(database_exists(pg.url(), db_name))


@pytest.mark.system_pg  # about uuid-ossp, which the PostgreSQL 18 wheel does not ship
def test_migrate_does_not_create_extensions_and_a_missing_function_says_so(db_url: str) -> None:
    result = migrate(db_url, load_migrations(PROJECT_MIGRATIONS))

    assert result.status is Status.FAILED
    assert result.error is not None and "42883" in result.error.message
    assert result.error.hint and "extension" in result.error.hint
    assert versions(db_url) == []


def test_migrate_with_a_target_applies_up_to_and_including_it(fresh_url: str, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)
    partial = provision(fresh_url, source, options(target_version=V2, extensions=schema_set.extensions))

    assert partial.status is Status.APPLIED
    assert partial.applied_versions == [V1, V2]
    assert partial.version_after == V2
    assert versions(fresh_url) == [V1, V2]
    assert has_table(fresh_url, "attendance") and not has_table(fresh_url, "grades")

    rest = migrate(fresh_url, source)
    assert rest.applied_versions == [V3]
    assert (rest.version_before, rest.version_after) == (V2, V3)
    assert versions(fresh_url) == [V1, V2, V3]


def test_plan_is_a_dry_run_that_writes_nothing(db_url: str, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)

    result = run_sync(engine.plan, DatabaseTarget.parse(db_url), source, options())

    assert result.ok and result.status is Status.PLANNED
    assert [(s.version, s.direction, s.duration_s) for s in result.steps] == [
        (V1, "up", None),
        (V2, "up", None),
        (V3, "up", None),
    ]
    assert result.applied_versions == []
    assert result.pending == [V1, V2, V3]
    assert not has_table(db_url, "_sqlx_migrations")
    assert fetchval_sync(db_url, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'") == 0
    assert fetchval_sync(db_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0


def test_plan_with_a_target_lists_only_what_migrate_would_apply(fresh_url: str, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(target_version=V1, extensions=schema_set.extensions))

    result = run_sync(engine.plan, DatabaseTarget.parse(fresh_url), source, options(target_version=V2))

    assert result.status is Status.PLANNED
    assert [s.version for s in result.steps] == [V2]
    assert versions(fresh_url) == [V1]


# --- refusing a ledger SQLx would refuse --------------------------------------------------------------------------


def test_dirty_row_is_refused_with_sqlx_wording_and_a_recovery_hint(fresh_url: str, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(target_version=V1, extensions=schema_set.extensions))
    execute_sync(fresh_url, "UPDATE _sqlx_migrations SET success = false WHERE version = $1", V1)

    result = migrate(fresh_url, source)

    assert result.status is Status.DIRTY and not result.ok
    assert result.error is not None and result.error.code == "dirty"
    assert result.error.message == (
        f"migration {V1} is partially applied; fix and remove row from `_sqlx_migrations` table"
    )
    assert result.error.hint and f"DELETE FROM _sqlx_migrations WHERE version = {V1}" in result.error.hint
    assert "20250101000000_initial_schema.up.sql" in result.error.hint
    assert result.applied_versions == []
    assert versions(fresh_url) == [V1]
    assert not has_table(fresh_url, "attendance")


def test_applied_version_without_a_file_is_missing_with_sqlx_wording(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    directory = project_copy(tmp_path, schema_set)
    provision(fresh_url, load_migrations(directory), options(extensions=schema_set.extensions))
    for suffix in ("up", "down"):
        (directory / f"{V2}_add_attendance.{suffix}.sql").unlink()

    result = migrate(fresh_url, load_migrations(directory))

    assert result.status is Status.MISSING
    assert result.error is not None and result.error.code == "missing"
    assert result.error.message == f"migration {V2} was previously applied but is missing in the resolved migrations"
    assert result.error.hint and str(V2) in result.error.hint
    assert versions(fresh_url) == [V1, V2, V3]


def test_edited_applied_file_is_modified_with_sqlx_wording(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    directory = project_copy(tmp_path, schema_set)
    provision(fresh_url, load_migrations(directory), options(target_version=V2, extensions=schema_set.extensions))
    path = directory / f"{V2}_add_attendance.up.sql"
    path.write_text(path.read_text() + "\nCREATE INDEX attendance_note_idx ON attendance (note);\n")

    result = migrate(fresh_url, load_migrations(directory))

    assert result.status is Status.MODIFIED
    assert result.error is not None and result.error.code == "modified"
    assert result.error.message == f"migration {V2} was previously applied but has been modified"
    assert result.error.hint and path.name in result.error.hint and "new migration" in result.error.hint
    assert "line endings" not in result.error.hint
    # Refused before anything was applied: V3 is still pending.
    assert result.applied_versions == []
    assert versions(fresh_url) == [V1, V2]


def test_crlf_only_change_is_modified_and_the_hint_says_it_is_the_line_endings(
    fresh_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    directory = project_copy(tmp_path, schema_set)
    provision(fresh_url, load_migrations(directory), options(extensions=schema_set.extensions))
    path = directory / f"{V1}_initial_schema.up.sql"
    path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    result = migrate(fresh_url, load_migrations(directory))

    assert result.status is Status.MODIFIED
    assert result.error is not None and result.error.hint
    assert "line endings" in result.error.hint and "CRLF" in result.error.hint
    assert path.name in result.error.hint


# --- transactions ------------------------------------------------------------------------------------------------


def test_a_file_and_its_history_row_commit_in_one_transaction(db_url: str, tmp_path: Path) -> None:
    # A trigger on the history table records the transaction that inserts each row; the file records its own.
    source = migrations_dir(
        tmp_path / "m",
        {
            "1_a.sql": "CREATE TABLE a (id int);\nINSERT INTO txlog VALUES ('file', txid_current());\n",
        },
    )
    execute_sync(
        db_url,
        CREATE_HISTORY_TABLE
        + """
        CREATE TABLE txlog (who text, xid bigint);
        CREATE FUNCTION log_history_xid() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN INSERT INTO txlog VALUES ('history', txid_current()); RETURN NEW; END $$;
        CREATE TRIGGER log_xid AFTER INSERT ON _sqlx_migrations FOR EACH ROW EXECUTE FUNCTION log_history_xid();
        """,
    )

    assert migrate(db_url, source).status is Status.APPLIED

    xids = {r["who"]: r["xid"] for r in fetch_sync(db_url, "SELECT who, xid FROM txlog")}
    assert set(xids) == {"file", "history"}
    assert xids["file"] == xids["history"]


def test_a_no_transaction_file_runs_outside_a_transaction_block(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(
        tmp_path / "m",
        {
            "1_create_a.sql": "CREATE TABLE a (id int);\n",
            "2_index_a.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n",
        },
    )

    result = migrate(db_url, source)

    assert result.status is Status.APPLIED, result.error
    assert versions(db_url) == [1, 2]
    assert fetchval_sync(db_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_id_idx'::regclass") is True


# --- a migration that fails --------------------------------------------------------------------------------------


def test_failing_statement_reports_sqlstate_file_and_line_and_rolls_the_file_back(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(
        tmp_path / "m",
        {
            "1_create_a.sql": "CREATE TABLE a (id int);\n",
            "2_create_b.sql": (
                "-- b, and a bad insert\n"  # 1
                "CREATE TABLE b (id int);\n"  # 2
                "\n"  # 3
                "INSERT INTO b VALUES (1);\n"  # 4
                "INSERT INTO b VALUES (2); INSERT INTO no_such_table VALUES (3);\n"  # 5
                "CREATE TABLE after_error (id int);\n"  # 6
            ),
            "3_create_c.sql": "CREATE TABLE c (id int);\n",
        },
    )

    result = migrate(db_url, source)

    assert result.status is Status.FAILED and not result.ok
    error = result.error
    assert error is not None and error.code == "migration_failed"
    assert error.to_dict()["sqlstate"] == "42P01"
    assert error.to_dict()["file"] == "2_create_b.sql"
    assert error.to_dict()["line"] == 5
    assert error.message.startswith("2_create_b.sql:5: ")
    assert "no_such_table" in error.message and "[SQLSTATE 42P01]" in error.message
    assert not error.retryable
    # The file's transaction rolled back: neither its table nor its history row exists; the earlier file stays.
    assert not has_table(db_url, "b") and not has_table(db_url, "after_error")
    assert versions(db_url) == [1]
    assert has_table(db_url, "a")
    assert not has_table(db_url, "c")
    assert result.applied_versions == [1]
    assert result.version_after == 1
    assert result.pending == [2, 3]


def test_the_advisory_lock_is_released_after_a_failed_migration(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(tmp_path / "m", {"1_bad.sql": "SELECT 1/0;\n"})

    result = migrate(db_url, source)

    assert result.status is Status.FAILED
    assert result.error is not None and "22012" in result.error.message
    assert advisory_locks(db_url) == 0
    key = advisory_lock_key(DatabaseTarget.parse(db_url).database)
    assert fetchval_sync(db_url, "SELECT pg_try_advisory_lock($1)", key) is True


# --- locks and timeouts ------------------------------------------------------------------------------------------


def test_lock_held_by_another_session_makes_migrate_wait_then_report_locked_naming_the_holder(
    db_url: str, db_name: str, tmp_path: Path
) -> None:
    source = migrations_dir(tmp_path / "m", {"1_create_a.sql": "CREATE TABLE a (id int);\n"})

    async def scenario() -> tuple[DatabaseResult, int, float]:
        holder = await asyncpg.connect(db_url, server_settings={"application_name": "school-backend-worker"})
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(db_name))
            pid = await holder.fetchval("SELECT pg_backend_pid()")
            started = time.monotonic()
            result = await engine.migrate(DatabaseTarget.parse(db_url), source, options(lock_wait=1.0))
            return result, pid, time.monotonic() - started
        finally:
            await holder.close()

    result, holder_pid, waited = run_sync(scenario)

    assert result.status is Status.LOCKED and not result.ok
    assert result.error is not None and result.error.code == "locked" and result.error.retryable
    assert f"pid {holder_pid}" in result.error.message
    assert "school-backend-worker" in result.error.message
    assert result.error.hint and "--lock-wait" in result.error.hint
    assert waited >= 0.9  # it waited for --lock-wait before giving up
    assert not has_table(db_url, "a")

    # Once the holder is gone, the same call goes through.
    assert migrate(db_url, source).status is Status.APPLIED


def test_lock_timeout_on_a_busy_table_fails_with_55p03_and_is_retryable(db_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    source = migrations_dir(
        directory,
        {
            "1_create_a.sql": "CREATE TABLE a (id int);\n",
            "2_alter_a.sql": "ALTER TABLE a ADD COLUMN note text;\n",
        },
    )
    assert migrate(db_url, source, options(target_version=1)).status is Status.APPLIED

    async def scenario() -> DatabaseResult:
        blocker = await asyncpg.connect(db_url)
        try:
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("LOCK TABLE a IN ACCESS EXCLUSIVE MODE")
            result = await engine.migrate(DatabaseTarget.parse(db_url), source, options(lock_timeout=0.3))
            await tx.rollback()
            return result
        finally:
            await blocker.close()

    result = run_sync(scenario)

    assert result.status is Status.FAILED
    error = result.error
    assert error is not None and error.to_dict()["sqlstate"] == "55P03"
    assert error.retryable
    assert error.hint and "lock_timeout" in error.hint
    assert versions(db_url) == [1]
    assert fetchval_sync(db_url, "SELECT count(*) FROM information_schema.columns WHERE table_name = 'a'") == 1


def test_statement_timeout_cancels_a_slow_migration_with_57014(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(tmp_path / "m", {"1_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(3);\n"})

    result = migrate(db_url, source, options(statement_timeout=0.3))

    assert result.status is Status.FAILED
    assert result.error is not None and result.error.to_dict()["sqlstate"] == "57014"
    assert result.error.hint and "statement_timeout" in result.error.hint
    assert not has_table(db_url, "slow")
    assert versions(db_url) == []


# --- a lost connection --------------------------------------------------------------------------------------------


def test_backend_killed_mid_migration_leaves_nothing_half_done_and_a_rerun_completes(
    db_url: str, db_name: str, tmp_path: Path
) -> None:
    directory = tmp_path / "m"
    source = migrations_dir(
        directory,
        {
            "1_create_a.sql": "CREATE TABLE a (id int);\n",
            "2_slow_b.sql": "CREATE TABLE b (id int);\nSELECT pg_sleep(5);\n",
        },
    )

    async def scenario() -> tuple[DatabaseResult, bool]:
        results: list[DatabaseResult] = []
        killed = False

        async def run_migrate() -> None:
            results.append(await engine.migrate(DatabaseTarget.parse(db_url), source, options()))

        async def kill_when_sleeping() -> None:
            nonlocal killed
            admin = await asyncpg.connect(with_database(db_url, "postgres"))
            try:
                with anyio.fail_after(10):
                    while True:
                        pid = await admin.fetchval(
                            "SELECT pid FROM pg_stat_activity WHERE application_name = 'orchestrator' "
                            "AND datname = $1 AND state = 'active' AND query LIKE '%pg_sleep(5)%'",
                            db_name,
                        )
                        if pid is not None:
                            killed = await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
                            return
                        await anyio.sleep(0.02)
            finally:
                await admin.close()

        async with anyio.create_task_group() as tg:
            tg.start_soon(run_migrate)
            tg.start_soon(kill_when_sleeping)
        return results[0], killed

    result, killed = run_sync(scenario)

    assert killed
    assert result.status is Status.FAILED and not result.ok
    assert result.error is not None and result.error.code == "interrupted" and result.error.retryable
    assert "2_slow_b.sql" in result.error.message
    assert result.applied_versions == [1]
    assert not has_table(db_url, "b")
    assert versions(db_url) == [1]
    assert advisory_locks(db_url) == 0

    # The file was never recorded, so it may still change; shorten the sleep to keep the re-run quick.
    (directory / "2_slow_b.sql").write_text("CREATE TABLE b (id int);\nSELECT pg_sleep(0.01);\n")
    rerun = migrate(db_url, load_migrations(directory))
    assert rerun.status is Status.APPLIED and rerun.applied_versions == [2]
    assert versions(db_url) == [1, 2] and has_table(db_url, "b")


# --- concurrency -------------------------------------------------------------------------------------------------


def test_two_concurrent_migrates_apply_each_migration_exactly_once(db_url: str, schema_set: MigrationSet) -> None:
    for extension in schema_set.extensions:
        execute_sync(db_url, f'CREATE EXTENSION "{extension}"')
    source = load_migrations(schema_set.directory)

    async def scenario() -> list[DatabaseResult]:
        results: list[DatabaseResult] = []

        async def one() -> None:
            results.append(await engine.migrate(DatabaseTarget.parse(db_url), source, options()))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        return results

    results = run_sync(scenario)

    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(r.status.value for r in results) == ["applied", "up_to_date"]
    applied = next(r for r in results if r.status is Status.APPLIED)
    assert applied.applied_versions == [V1, V2, V3]
    assert versions(db_url) == [V1, V2, V3]


def test_concurrent_provisions_of_a_database_that_does_not_exist_both_succeed(
    pg: DevServer, db_name: str, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    names = [f"{db_name[:55]}_r{i}" for i in range(3)]
    opts = options(extensions=schema_set.extensions)

    async def race(url: str) -> list[DatabaseResult]:
        results: list[DatabaseResult] = []

        async def one() -> None:
            results.append(await engine.provision(DatabaseTarget.parse(url), source, opts))

        async with anyio.create_task_group() as tg:
            tg.start_soon(one)
            tg.start_soon(one)
        return results

    try:
        for name in names:
            url = pg.url(name)
            results = run_sync(race, url)
            assert all(r.ok for r in results), [r.error for r in results]
            assert sum(r.created_database for r in results) == 1
            # Whoever got the lock first applied everything; the other found nothing left to apply (it may still
            # say `applied` when it was the one that created the database).
            assert sorted(v for r in results for v in r.applied_versions) == [V1, V2, V3]
            assert {r.status for r in results} <= {Status.APPLIED, Status.UP_TO_DATE}
            assert versions(url) == [V1, V2, V3]
    finally:
        for name in names:
            run_sync(drop_database(pg.url(), name))


def test_a_database_name_that_needs_quoting_provisions_fine(
    pg: DevServer, db_name: str, schema_set: MigrationSet
) -> None:
    name = f'School "Quoted" Ñame; {db_name[-6:]}'
    assert len(name.encode()) <= 63
    url = pg.url(name)
    try:
        result = orchestrator.provision(url, migrations=schema_set.directory, extensions=schema_set.extensions)

        assert result.ok, result.error
        assert result.created_database and result.database == name
        assert result.applied_versions == [V1, V2, V3]
        assert run_sync(database_exists(pg.url(), name))
        assert fetchval_sync(url, "SELECT current_database()") == name
        assert versions(url) == [V1, V2, V3]
        again = orchestrator.provision(url, migrations=schema_set.directory, extensions=schema_set.extensions)
        assert again.status is Status.UP_TO_DATE
    finally:
        run_sync(drop_database(pg.url(), name))


# --- reverting ---------------------------------------------------------------------------------------------------


def test_revert_to_a_version_runs_down_files_newest_first_and_deletes_their_rows(
    fresh_url: str, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(extensions=schema_set.extensions))

    result = run_sync(engine.revert, DatabaseTarget.parse(fresh_url), source, V1, options())

    assert result.ok and result.status is Status.REVERTED
    assert [(s.version, s.direction) for s in result.steps] == [(V3, "down"), (V2, "down")]
    assert (result.version_before, result.version_after) == (V3, V1)
    assert versions(fresh_url) == [V1]
    assert not has_table(fresh_url, "grades") and not has_table(fresh_url, "attendance")
    assert has_table(fresh_url, "students")

    status = run_sync(engine.status, DatabaseTarget.parse(fresh_url), source, options())
    assert status.status is Status.PENDING and status.pending == [V2, V3]


def test_revert_to_zero_removes_every_migration(fresh_url: str, schema_set: MigrationSet) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(extensions=schema_set.extensions))

    result = run_sync(engine.revert, DatabaseTarget.parse(fresh_url), source, 0, options())

    assert result.status is Status.REVERTED
    assert [s.version for s in result.steps] == [V3, V2, V1]
    assert result.version_after is None
    assert versions(fresh_url) == []
    assert (
        fetchval_sync(
            fresh_url,
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v') AND c.relname <> '_sqlx_migrations'",
        )
        == 0
    )

    nothing = run_sync(engine.revert, DatabaseTarget.parse(fresh_url), source, 0, options())
    assert nothing.status is Status.UP_TO_DATE and nothing.steps == []


def test_revert_of_a_migration_without_a_down_file_is_refused(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(
        tmp_path / "m",
        {
            "1_create_a.up.sql": "CREATE TABLE a (id int);\n",
            "1_create_a.down.sql": "DROP TABLE a;\n",
            "2_create_b.sql": "CREATE TABLE b (id int);\n",
        },
    )
    migrate(db_url, source)

    result = run_sync(engine.revert, DatabaseTarget.parse(db_url), source, 0, options())

    assert result.status is Status.FAILED and not result.ok
    assert result.error is not None and result.error.code == "not_reversible"
    assert "2_create_b.sql" in result.error.message and "no down file" in result.error.message
    assert result.steps == []
    assert versions(db_url) == [1, 2]
    assert has_table(db_url, "a") and has_table(db_url, "b")


@pytest.mark.parametrize(
    "down",
    ["-- Add down migration script here\n", "-- no-transaction\n", ""],
    ids=["comment-only", "no-transaction-comment-only", "empty"],
)
def test_revert_with_a_down_file_that_holds_no_statement_deletes_the_row_and_runs_nothing(
    db_url: str, tmp_path: Path, down: str
) -> None:
    # What `orchestrator new` and `sqlx migrate add -r` write into a down file, until someone fills it in.
    source = migrations_dir(
        tmp_path / "m",
        {"1_create_a.up.sql": "CREATE TABLE a (id int);\n", "1_create_a.down.sql": down},
    )
    migrate(db_url, source)

    result = run_sync(engine.revert, DatabaseTarget.parse(db_url), source, 0, options())

    assert result.status is Status.REVERTED, result.error
    assert [(s.version, s.direction) for s in result.steps] == [(1, "down")]
    assert versions(db_url) == []
    assert has_table(db_url, "a")


def test_a_no_transaction_file_that_holds_no_statement_is_applied(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(tmp_path / "m", {"1_nothing_yet.sql": "-- no-transaction\n-- to be written\n"})

    result = migrate(db_url, source)

    assert result.status is Status.APPLIED and result.applied_versions == [1]
    assert [(r["version"], r["success"]) for r in history(db_url)] == [(1, True)]


# --- no-transaction files: marked in progress while they run -----------------------------------------------------


def test_a_no_transaction_file_ends_as_exactly_the_row_sqlx_writes(db_url: str, tmp_path: Path) -> None:
    text = "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n"
    source = migrations_dir(tmp_path / "m", {"1_create_a.sql": "CREATE TABLE a (id int);\n", "2_index_a.sql": text})

    assert migrate(db_url, source).status is Status.APPLIED

    row = history(db_url)[1]
    assert (row["version"], row["description"], row["success"]) == (2, "index a", True)
    assert bytes(row["checksum"]) == hashlib.sha384(text.encode()).digest()
    assert row["execution_time"] > 0  # nanoseconds, as SQLx records them


def test_a_no_transaction_file_is_marked_in_progress_while_it_runs_and_status_calls_that_locked(
    db_url: str, db_name: str, tmp_path: Path
) -> None:
    source = migrations_dir(tmp_path / "m", {"1_slow.sql": "-- no-transaction\nSELECT pg_sleep(30);\n"})

    async def scenario() -> tuple[list[tuple[int, bool]], DatabaseResult]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.migrate, DatabaseTarget.parse(db_url), source, options())
            admin = await asyncpg.connect(db_url)
            try:
                with anyio.fail_after(30):
                    while not await admin.fetchval(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE '%pg_sleep(30)%' "
                        "AND state = 'active' AND pid <> pg_backend_pid()",
                        db_name,
                    ):
                        await anyio.sleep(0.02)
                rows = [(r["version"], r["success"]) for r in await admin.fetch("SELECT * FROM _sqlx_migrations")]
                during = await engine.status(DatabaseTarget.parse(db_url), source, options())
                await admin.execute(
                    "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(30)%' "
                    "AND pid <> pg_backend_pid()"
                )
            finally:
                await admin.close()
        return rows, during

    rows, during = run_sync(scenario)

    assert rows == [(1, False)]  # what SQLx reads as "partially applied": no worker runs past it
    assert during.status is Status.LOCKED and during.error is not None
    assert "being applied outside a transaction" in during.error.message
    assert versions(db_url) == [], "the cancelled file failed on the server: it is pending again, as SQLx leaves it"


@pytest.mark.parametrize(
    ("sql", "check"),
    [
        ("CREATE INDEX CONCURRENTLY a_id_idx ON a (id)", "indexrelid = to_regclass('a_id_idx')"),
        ('create unique index concurrently if not exists "A""x" on a (id)', 'to_regclass(\'"A""x"\')'),
        ("DROP INDEX CONCURRENTLY IF EXISTS a_id_idx", "SELECT to_regclass('a_id_idx') IS NULL"),
        ("CREATE INDEX CONCURRENTLY ON a (id)", "whether `CREATE INDEX CONCURRENTLY ON a (id)` took effect"),
        ("UPDATE counter SET n = n + 1", "whether `UPDATE counter SET n = n + 1` took effect"),
    ],
    ids=["create-index", "quoted-name", "drop-index", "unnamed-index", "other"],
)
def test_the_dirty_hint_says_exactly_what_to_check(sql: str, check: str) -> None:
    assert check in effect_check(f"-- no-transaction\n{sql};\n")


# --- resolving a dirty row ---------------------------------------------------------------------------------------


def test_resolving_marks_a_dirty_version_applied_with_the_current_files_checksum(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(tmp_path / "m", {"1_a.sql": "CREATE TABLE a (id int);\n", "2_b.sql": "SELECT 2;\n"})
    migrate(db_url, source)
    execute_sync(db_url, "UPDATE _sqlx_migrations SET success = false, checksum = '\\x00' WHERE version = 2")
    target = DatabaseTarget.parse(db_url)

    result = run_sync(resolve.mark_applied, target, source, 2, options())

    assert result.status is Status.APPLIED and result.notes[0] == "recorded 2_b.sql as applied"
    assert "held no checksum" in result.notes[1], "another tool's placeholder: which bytes ran is unknown"
    row = history(db_url)[1]
    assert (row["success"], bytes(row["checksum"])) == (True, source.migrations[1].checksum)
    assert migrate(db_url, source).status is Status.UP_TO_DATE
    again = run_sync(resolve.mark_applied, target, source, 2, options())
    assert again.status is Status.SKIPPED and again.ok
    assert again.notes == ["version 2 is already recorded as applied: nothing written"]


def test_resolving_refuses_a_dirty_row_that_ran_other_bytes(db_url: str, tmp_path: Path) -> None:
    source = migrations_dir(tmp_path / "m", {"1_a.sql": "CREATE TABLE a (id int);\n", "2_b.sql": "SELECT 2;\n"})
    migrate(db_url, source)
    ran = hashlib.sha384(b"SELECT 1;\n").digest()
    execute_sync(db_url, "UPDATE _sqlx_migrations SET success = false, checksum = $1 WHERE version = 2", ran)

    result = run_sync(resolve.mark_applied, DatabaseTarget.parse(db_url), source, 2, options())

    assert result.status is Status.MODIFIED and result.error is not None
    assert "edited since it ran here" in (result.error.hint or "")
    row = history(db_url)[1]
    assert (row["success"], bytes(row["checksum"])) == (False, ran)


def test_resolving_leaves_a_pending_version_alone_and_refuses_one_that_was_edited(db_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    source = migrations_dir(directory, {"1_a.sql": "CREATE TABLE a (id int);\n", "2_b.sql": "CREATE TABLE b ();\n"})
    migrate(db_url, source, options(target_version=1))
    target = DatabaseTarget.parse(db_url)

    pending = run_sync(resolve.mark_applied, target, source, 2, options())
    assert pending.status is Status.SKIPPED and pending.ok, "never recorded: the file did not run here"
    assert "version 2 is pending here (no history row)" in pending.notes[0]
    assert versions(db_url) == [1]
    assert migrate(db_url, source).applied_versions == [2]

    (directory / "1_a.sql").write_text("CREATE TABLE a (id bigint);\n")
    edited = run_sync(resolve.mark_applied, target, load_migrations(directory), 1, options())
    assert edited.status is Status.MODIFIED
    with pytest.raises(UsageError):
        run_sync(resolve.mark_applied, target, source, 99, options())


def test_resolving_forgets_a_dirty_row_so_the_file_runs_again_but_never_an_applied_one(
    db_url: str, tmp_path: Path
) -> None:
    source = migrations_dir(
        tmp_path / "m", {"1_a.sql": "CREATE TABLE a (id int);\n", "2_b.sql": "CREATE TABLE b ();\n"}
    )
    migrate(db_url, source, options(target_version=1))
    execute_sync(db_url, "INSERT INTO _sqlx_migrations VALUES (2, 'b', now(), false, '\\x00', -1)")
    target = DatabaseTarget.parse(db_url)

    applied = run_sync(resolve.forget_version, target, 1, options())
    assert applied.status is Status.SKIPPED and applied.error is None and "revert" in applied.notes[0]
    forgotten = run_sync(resolve.forget_version, target, 2, options())
    assert forgotten.status is Status.APPLIED
    assert versions(db_url) == [1]
    assert run_sync(resolve.forget_version, target, 2, options()).status is Status.SKIPPED
    assert migrate(db_url, source).applied_versions == [2]


# --- secrets ----------------------------------------------------------------------------------------------------


def test_the_password_never_appears_in_any_result(
    pg: DevServer, fresh_url: str, unreachable_url: str, tmp_path: Path, schema_set: MigrationSet
) -> None:
    assert PG_PASSWORD in fresh_url and PG_PASSWORD in unreachable_url
    source = load_migrations(schema_set.directory)
    bad_dir = project_copy(tmp_path, schema_set)
    (bad_dir / "20250301000000_bad.sql").write_text("SELECT no_such_column FROM pg_class;\n")
    bad_source = load_migrations(bad_dir)
    wrong_password = "Wr0ngButSecret-77"
    wrong_url = DevServer(pg.datadir, pg.port, wrong_password).url("postgres")

    results = {
        "missing database": migrate(fresh_url, source),
        "provisioned": provision(fresh_url, source, options(extensions=schema_set.extensions)),
        "failed migration": migrate(fresh_url, bad_source, options()),
        "wrong password": migrate(wrong_url, source),
        "unreachable": migrate(unreachable_url, source),
    }

    assert results["missing database"].error is not None
    assert results["provisioned"].ok
    assert results["failed migration"].error is not None
    assert results["failed migration"].error.code == "migration_failed"
    assert results["wrong password"].status is Status.DENIED
    assert results["unreachable"].status is Status.UNREACHABLE
    for label, result in results.items():
        said = everything_said(result)
        assert PG_PASSWORD not in said, label
        assert wrong_password not in said, label


ReadOnly = Callable[[DatabaseTarget, MigrationSource, EngineOptions], Awaitable[DatabaseResult]]


@pytest.mark.parametrize("read_only", [engine.status, engine.plan], ids=["status", "plan"])
def test_read_only_commands_report_a_dirty_ledger_and_leave_it_as_it_is(
    fresh_url: str, read_only: ReadOnly, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(target_version=V1, extensions=schema_set.extensions))
    execute_sync(fresh_url, "UPDATE _sqlx_migrations SET success = false")

    result = run_sync(read_only, DatabaseTarget.parse(fresh_url), source, options())

    assert result.status is Status.DIRTY
    assert [tuple(r) for r in fetch_sync(fresh_url, "SELECT version, success FROM _sqlx_migrations")] == [(V1, False)]


@pytest.mark.parametrize("read_only", [engine.status, engine.plan], ids=["status", "plan"])
def test_read_only_commands_do_not_wait_for_the_lock_and_report_locked_naming_the_holder(
    fresh_url: str, db_name: str, read_only: ReadOnly, schema_set: MigrationSet
) -> None:
    source = load_migrations(schema_set.directory)
    provision(fresh_url, source, options(target_version=V1, extensions=schema_set.extensions))

    async def scenario() -> tuple[DatabaseResult, int]:
        holder = await asyncpg.connect(fresh_url, server_settings={"application_name": "school-backend-worker"})
        try:
            await holder.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(db_name))
            pid = await holder.fetchval("SELECT pg_backend_pid()")
            # A lock_wait far beyond the test timeout: were the look to wait for the lock, the test would hang.
            result = await read_only(DatabaseTarget.parse(fresh_url), source, options(lock_wait=3600.0))
            return result, pid
        finally:
            await holder.close()

    result, holder_pid = run_sync(scenario)

    assert result.status is Status.LOCKED
    assert result.error is not None and result.error.code == "locked"
    assert f"pid {holder_pid}" in result.error.message and "school-backend-worker" in result.error.message
    assert result.pending == [V2, V3]
    assert versions(fresh_url) == [V1]


def test_revert_refuses_up_front_when_a_step_has_no_down_file(db_url: str, tmp_path: Path) -> None:
    """A refused revert leaves the database as it was, instead of stopping half way."""
    migrations = tmp_path / "m"
    migrations.mkdir()
    (migrations / "1_plain.sql").write_text("CREATE TABLE one (id int);\n")
    (migrations / "2_pair.up.sql").write_text("CREATE TABLE two (id int);\n")
    (migrations / "2_pair.down.sql").write_text("DROP TABLE two;\n")
    source = load_migrations(migrations)
    target = DatabaseTarget.parse(db_url)
    assert run_sync(engine.migrate(target, source, EngineOptions())).ok
    result = run_sync(engine.revert(target, source, 0, EngineOptions()))
    assert result.status is Status.FAILED and result.error is not None
    assert result.error.code == "not_reversible"
    assert [r["version"] for r in fetch_sync(db_url, "SELECT version FROM _sqlx_migrations ORDER BY 1")] == [1, 2]
