"""The way out of `dirty`, once an operator has checked what an interrupted `-- no-transaction` file left behind
(the `dirty` hint says what to check): record in the ledger what is true. Both take SQLx's lock, touch only the
one row, and return a `DatabaseResult` like every engine operation; the CLI's `orchestrator resolve` calls them.
"""

from __future__ import annotations

import asyncpg

from . import sqlx
from .engine import EngineOptions, check_target_version, run_session
from .errors import DatabaseError, ModifiedMigration
from .history import ensure_history_table, forget, read_applied, read_history
from .lock import migration_lock
from .outcome import DatabaseResult, Status
from .source import MigrationSource
from .target import DatabaseTarget


async def mark_applied(
    target: DatabaseTarget, source: MigrationSource, version: int, options: EngineOptions
) -> DatabaseResult:
    """The file took effect: its row becomes the one SQLx writes (success, the current file's checksum and
    description), created if missing. Raises UsageError before connecting if `version` has no file."""
    check_target_version(source, version)
    migration = source.get(version)
    assert migration is not None

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        quick = options.session.bookkeeping_timeout
        async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
            await ensure_history_table(conn, timeout=quick)
            row = (await read_applied(conn, timeout=quick)).get(version)
            if row is not None and row.success:
                if row.checksum != migration.checksum:
                    raise ModifiedMigration(
                        sqlx.modified_message(version),
                        versions=[version],
                        hint="resolving settles a partially applied or missing row only; restore the applied file",
                    )
                result.status = Status.UP_TO_DATE
                result.notes.append(f"version {version} is already recorded as applied")
                return
            await conn.execute(sqlx.UPSERT_APPLIED, version, migration.description, migration.checksum, timeout=quick)
            result.status = Status.APPLIED
            result.notes.append(f"recorded {migration.filename} as applied")

    return await run_session(target, options, create=False, work=work)


async def forget_version(target: DatabaseTarget, version: int, options: EngineOptions) -> DatabaseResult:
    """The file did not take effect (and what it half did was undone): delete its success = false row, so it is
    pending again. A row that says applied is refused: that is what `revert` is for."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        quick = options.session.bookkeeping_timeout
        async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
            row = (await read_history(conn, timeout=quick) or {}).get(version)
            if row is None:
                result.status = Status.UP_TO_DATE
                result.notes.append(f"version {version} has no history row")
                return
            if row.success:
                raise DatabaseError(
                    f"version {version} is recorded as applied (success = true), not partially applied",
                    hint="to undo an applied migration, revert it",
                )
            await forget(conn, version, timeout=quick)
            result.status = Status.APPLIED
            result.notes.append(f"deleted the partially applied row of version {version}: it is pending again")

    return await run_session(target, options, create=False, work=work)


async def restamp(
    target: DatabaseTarget, source: MigrationSource, version: int, options: EngineOptions, *, schema_matches: bool
) -> DatabaseResult:
    """An applied file was edited without changing what it does: record the current file's checksum, so SQLx
    workers accept it again. Only where the school's live schema matches what the current files produce (the
    audit's comparison, `schema_matches`); otherwise the school is left `modified`, untouched."""
    migration = source.get(version)
    assert migration is not None

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        quick = options.session.bookkeeping_timeout
        async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
            row = (await read_history(conn, timeout=quick) or {}).get(version)
            if row is None or not row.success:
                raise DatabaseError(
                    f"version {version} is not recorded as applied here: nothing to re-stamp",
                    hint="re-stamping is for an applied file whose bytes changed (status `modified`)",
                )
            if row.checksum == migration.checksum:
                result.status = Status.UP_TO_DATE
                result.notes.append(f"{migration.filename}: the recorded checksum is already the current file's")
                return
            if not schema_matches:
                raise ModifiedMigration(
                    sqlx.modified_message(version),
                    versions=[version],
                    hint="not re-stamped: this school's schema differs from what the current files produce (see "
                    "`orchestrator audit`); restore the applied file, and put the change in a new migration",
                )
            await conn.execute(sqlx.RESTAMP, version, migration.checksum, timeout=quick)
            result.status = Status.APPLIED
            result.notes.append(f"re-stamped {migration.filename} with the current file's checksum")

    return await run_session(target, options, create=False, work=work)
