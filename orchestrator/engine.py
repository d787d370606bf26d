"""One database: bootstrap, plan, apply, revert, status. Knows nothing about fleets.

The apply algorithm is SQLx's (docs/sqlx-compat.md): take the advisory lock, ensure the history table, refuse a
dirty / missing / modified ledger, then for each pending file in version order run it and insert its history row in
one transaction, and afterwards record the execution time in nanoseconds. We are stricter in one place: all checks
run before the first file is applied, so a refused database is left untouched. And quicker in one: a transactional
file and its history INSERT travel in one simple-protocol message (SQLx sends them as two).

Every public function returns a `DatabaseResult`; database problems never escape as exceptions.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Literal

import anyio
import asyncpg

from . import sqlx, tracing
from .bootstrap import MAINTENANCE_DATABASE, create_database, drop_if_ours, ensure_extensions
from .connection import (
    Session,
    SessionSettings,
    as_database_error,
    close_quietly,
    connection_lost,
    current_group,
    drop_if_unresponsive,
    is_connection_lost,
    known_pooler,
    open_session,
    session,
)
from .errors import DatabaseError, DatabaseMissing, Locked, MigrationFailed, NotReversible, UsageError
from .history import (
    AppliedMigration,
    effect_check,
    ensure_history_table,
    forget,
    has_own_tables,
    history_exists,
    in_progress,
    mark_done,
    mark_in_progress,
    read_applied,
    read_history,
    read_status,
    validate,
)
from .inflight import Direction, Progress, Stage, aborted, is_interruption, settle
from .lock import lock_holder, migration_lock
from .logsetup import get_logger
from .outcome import DatabaseResult, MigrationStep, Status, status_for
from .pooler import ensure_pinned
from .settings import BUILTIN, DROP_AGAIN_S
from .source import Migration, MigrationSource
from .sqltext import line_of, split_statements
from .sqlx import advisory_lock_key
from .target import DatabaseTarget

log = get_logger("orchestrator.engine")

# SQLSTATEs worth retrying as a whole: the statement was fine, the moment was not.
_RETRYABLE_SQLSTATES = {"55P03", "40001", "40P01"}  # lock_not_available, serialization_failure, deadlock
_SQLSTATE_HINTS = {
    "55P03": "a table lock was not available within lock_timeout (a long transaction holds it); the file's "
    "transaction rolled back. Retry later, or raise --lock-timeout",
    "57014": "the statement ran longer than statement_timeout and was cancelled; the file's transaction rolled "
    "back. Raise --statement-timeout, or make the migration cheaper",
    "42P07": "the object already exists: the database has changes the history does not record (see "
    "`orchestrator audit`)",
    "42710": "the object already exists: the database has changes the history does not record (see "
    "`orchestrator audit`)",
    "42501": "the URL's role lacks a privilege this file (or its _sqlx_migrations row) needs: the object's owner "
    "(or a superuser) must grant it, or put the owner's role in the URL; the file's transaction rolled back. Not "
    "retried: it fails the same way until granted",
    "42883": "a function is missing: is the extension it comes from installed? `orchestrator bootstrap` creates "
    "the extensions the registry's `extensions` (or --extension NAME) asks for; none by default, as `sqlx migrate "
    "run` creates none",
}


@dataclass(frozen=True)
class EngineOptions:
    session: SessionSettings = field(default_factory=SessionSettings)
    lock_wait: float = BUILTIN.lock_wait  # seconds to wait for SQLx's advisory lock before reporting `locked`
    target_version: int | None = None  # migrate: apply up to and including this version
    ignore_missing: bool = False  # accept applied versions whose files are gone (sqlx --ignore-missing)
    extensions: tuple[str, ...] = BUILTIN.extensions  # created by bootstrap / provision


def check_target_version(source: MigrationSource, version: int | None, *, allow_zero: bool = False) -> None:
    """Raise UsageError unless `version` names a migration (or 0 = everything, for revert)."""
    if version is None or (allow_zero and version == 0) or source.get(version) is not None:
        return
    known = ", ".join(map(str, source.versions)) or "none"
    raise UsageError(
        f"version {version} is not a migration in {source.where}",
        hint=f"pick one of: {known}" + (" (or 0 to revert everything)" if allow_zero else ""),
    )


# --- the public operations -----------------------------------------------------------------------------------------


async def migrate(
    target: DatabaseTarget,
    source: MigrationSource,
    options: EngineOptions,
    *,
    create_missing: bool = False,
    creator: Creator | None = None,
    known_missing: bool = False,
) -> DatabaseResult:
    """Apply pending migrations (up to options.target_version). The database must exist, unless `create_missing`:
    then a missing one is created (by `creator`, if given) and bootstrapped (extensions, history table) in the same
    pass; `known_missing` (the caller listed the server's databases) creates it without trying the school first."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        await _migrate(conn, result, target, source, options, options.extensions if result.created_database else None)

    create: bool | Literal["first"] = "first" if create_missing and known_missing else create_missing
    return await run_session(target, options, create=create, work=work, creator=creator)


async def list_databases(server: DatabaseTarget, names: list[str], settings: SessionSettings) -> dict[str, bool]:
    """Which of `names` exist on `server`, each with whether it is marked as a template: one query on its maintenance
    database, so that a command over many schools of a server spends no connection attempt per school finding out
    that a database is missing, nor a catalog lookup per school for the template check."""
    maintenance = server.with_database(MAINTENANCE_DATABASE)
    try:
        async with session(maintenance, settings) as conn:
            rows = await conn.fetch(
                "SELECT datname, datistemplate FROM pg_database WHERE datname = ANY($1::text[])", names
            )
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        raise as_database_error(maintenance, exc, "listing the databases") from None
    return {row["datname"]: row["datistemplate"] for row in rows}


async def provision(
    target: DatabaseTarget, source: MigrationSource, options: EngineOptions, *, creator: Creator | None = None
) -> DatabaseResult:
    """Onboard one school: create the database if missing (by `creator`, if given), extensions, history table,
    then migrate. Idempotent."""
    return await run_session(
        target,
        options,
        # Create first (the school is expected new): one session to `postgres` and one to the school, as the floor.
        # The creator (plain or from a template) leaves an existing database alone at the cost of one query.
        create="first",
        work=lambda c, r: _migrate(c, r, target, source, options, options.extensions),
        creator=creator,
    )


async def bootstrap(target: DatabaseTarget, source: MigrationSource, options: EngineOptions) -> DatabaseResult:
    """Create what is missing (database, extensions, history table) without applying migrations."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        quick = options.session.bookkeeping_timeout
        async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
            await _bootstrap_inside_lock(conn, result, target, options.extensions, quick)
            applied = await read_applied(conn, timeout=quick)
            result.version_before = result.version_after = _current_version(applied)
            result.pending = [m.version for m in source.up_to(None) if m.version not in applied]
        result.status = Status.APPLIED if result.notes else Status.UP_TO_DATE

    return await run_session(target, options, create=True, work=work)


async def status(
    target: DatabaseTarget, source: MigrationSource, options: EngineOptions, *, not_a_template: bool = False
) -> DatabaseResult:
    """Read-only: where this database stands against `source`. Takes no lock, writes nothing. `not_a_template`: the
    caller listed the server's databases (list_databases), so the session does not look the database up again."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        await _inspect(conn, result, source, options, plan=False, check_template=not not_a_template)

    return await run_session(target, options, create=False, work=work, read_only=True)


async def plan(
    target: DatabaseTarget, source: MigrationSource, options: EngineOptions, *, not_a_template: bool = False
) -> DatabaseResult:
    """Read-only dry run: which migrations `migrate` would apply here (`not_a_template`: as for status)."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        await _inspect(conn, result, source, options, plan=True, check_template=not not_a_template)

    return await run_session(target, options, create=False, work=work, read_only=True)


async def revert(
    target: DatabaseTarget, source: MigrationSource, to_version: int, options: EngineOptions, *, dry_run: bool = False
) -> DatabaseResult:
    """Run down files, newest first, until the newest applied version is `to_version` (0 = revert everything).
    `dry_run`: read-only, no lock; the result lists the down steps that would run (status `planned`)."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        await _settled(
            lambda progress: _revert(conn, result, target, source, to_version, options, progress),
            result,
            target,
            options,
            "down",
            lambda ledger: [v for v in ledger if v > to_version],
        )

    async def plan_work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        to_revert, _ = await _revert_plan(conn, result, source, to_version, options)
        result.steps = [MigrationStep(m.version, m.description, "down") for m in to_revert]
        result.status = Status.PLANNED if to_revert else Status.UP_TO_DATE

    if dry_run:
        return await run_session(target, options, create=False, work=plan_work, read_only=True)
    return await run_session(target, options, create=False, work=work)


async def _revert(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    source: MigrationSource,
    to_version: int,
    options: EngineOptions,
    progress: Progress,
) -> None:
    quick = options.session.bookkeeping_timeout
    async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
        to_revert, applied = await _revert_plan(conn, result, source, to_version, options, timeout=quick)
        for migration in to_revert:
            with tracing.migration_span(target, migration, "down"):
                await _revert_one(conn, result, target, migration, progress, quick)
            result.version_after = max((v for v in applied if v < migration.version), default=None)
        result.status = Status.REVERTED if to_revert else Status.UP_TO_DATE


async def _revert_plan(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    source: MigrationSource,
    to_version: int,
    options: EngineOptions,
    *,
    timeout: float | None = None,
) -> tuple[list[Migration], dict[int, AppliedMigration]]:
    """The migrations to revert, newest first, every one checked reversible before any runs (a refused revert
    leaves the database untouched, not half reverted)."""
    if not await history_exists(conn, timeout=timeout):
        result.notes.append("no history table: nothing to revert")
        return [], {}
    applied = await read_applied(conn, timeout=timeout)
    result.version_before = result.version_after = _current_version(applied)
    validate(applied, source, ignore_missing=options.ignore_missing)
    if fileless := sorted((v for v in applied if v > to_version and source.get(v) is None), reverse=True):
        raise _no_file_to_revert(fileless, source)  # only with --ignore-missing: validate() refuses them otherwise
    to_revert = [m for m in reversed(source.migrations) if m.version in applied and m.version > to_version]
    if stuck := [m for m in to_revert if not m.reversible]:
        raise _not_reversible(stuck)
    return to_revert, applied


def _not_reversible(stuck: list[Migration]) -> NotReversible:
    """Refuse a revert that would pass applied migrations without a down file (`stuck`, newest first).

    `sqlx migrate revert` skips such a version, leaving its row, and reverts the older ones beneath it: the ledger
    then says a later migration is applied on top of earlier ones that were undone, and the next run applies those
    again out of order. Refused instead, before any down file runs."""
    newest = stuck[0]
    them = "it" if len(stuck) == 1 else "them"
    add = (
        f"add {newest.up_path.name.removesuffix('.up.sql')}.down.sql"
        if newest.up_kind == "up"
        else f"rename {newest.filename} to end in .up.sql and add its .down.sql"
    )
    return NotReversible(
        f"migration{'' if len(stuck) == 1 else 's'} {', '.join(f'{m.version} ({m.filename})' for m in stuck)} "
        f"{'has' if len(stuck) == 1 else 'have'} no down file; cannot revert past {them}",
        hint=f"revert to {newest.version} or later; or {add} (only the up file's checksum is recorded, so that is "
        f"safe even where it is applied). `sqlx migrate revert` would skip {them}, leaving the row, and revert "
        "older migrations beneath: a ledger with a hole the next run fills out of order; nothing was reverted",
    )


def _no_file_to_revert(versions: list[int], source: MigrationSource) -> NotReversible:
    """Refuse a revert that would pass applied versions with no file in the source (newest first; accepted as
    applied by --ignore-missing): there is no down file to run. `sqlx migrate revert --ignore-missing` skips them,
    leaving their rows on top of what it reverts beneath (and their objects, which the downs beneath may break)."""
    listed = ", ".join(map(str, versions))
    them = "it" if len(versions) == 1 else "them"
    return NotReversible(
        f"version{'' if len(versions) == 1 else 's'} {listed} {'is' if len(versions) == 1 else 'are'} applied "
        f"above the target but {'has' if len(versions) == 1 else 'have'} no file in {source.where}; cannot revert "
        f"past {them}",
        hint=f"give the directory that holds {them} too (--migrations is repeatable, e.g. the deferred one), or "
        f"revert to {versions[0]} or later. `sqlx migrate revert --ignore-missing` would skip {them}, leaving "
        f"{'its row' if len(versions) == 1 else 'their rows'} above the migrations it reverts; nothing was reverted",
    )


# --- the machinery ------------------------------------------------------------------------------------------------


Work = Callable[[asyncpg.Connection, DatabaseResult], Awaitable[None]]


class Created(Enum):
    """What a Creator did with a missing database."""

    NOT_BY_US = "not by us"  # another process created it meanwhile: the work runs on it as on any database
    EMPTY = "empty"  # created empty: bootstrap and the migrations follow
    # A copy that already holds the extensions and every file the operation asks for (a current template): nothing
    # is left to do in it, so no session is opened. The creator records its version.
    COMPLETE = "complete"


# Creates a missing database instead of a plain CREATE DATABASE (orchestrator.template: a copy of a template). It
# writes its own note on how.
Creator = Callable[[DatabaseTarget, DatabaseResult], Awaitable[Created]]


async def run_session(
    target: DatabaseTarget,
    options: EngineOptions,
    *,
    create: bool | Literal["first"],
    work: Work,
    read_only: bool = False,
    creator: Creator | None = None,
) -> DatabaseResult:
    """The frame of every operation on one database: open a session (creating the database first if `create`, by
    `creator` if given), do `work`, always close; every failure becomes the result's status and error. `read_only`
    sessions cannot write: the server refuses it."""
    started = time.perf_counter()
    result = DatabaseResult(database=target.database, server=target.server, status=Status.FAILED)
    bound = log.bind(database=target.database, server=target.server)
    conn: Session | None = None
    created = Created.NOT_BY_US
    # An interrupt aborts the run's sessions by cancelling this scope (connection.SessionGroup).
    with current_group().abortable() as scope:
        try:

            async def create_it() -> Created:
                if creator is not None:
                    created = await creator(target, result)
                elif await create_database(target, options.session):
                    created = Created.EMPTY
                    result.notes.append(f"created database {target.database}")
                    bound.info("database.created")
                else:
                    created = Created.NOT_BY_US
                result.created_database = created is not Created.NOT_BY_US
                return created

            async def create_shielded() -> Created:
                # A cancellation during CREATE DATABASE would lose whether the server made it (and so whether it is
                # ours to drop again): the creation finishes (its session's timeouts bound it), then the cancellation
                # lands in the work below.
                with anyio.CancelScope(shield=True):
                    made = await create_it()
                return made

            if create == "first":
                # Onboarding: the school is expected new, so no connection attempt is spent finding out that its
                # database is missing (create_database checks pg_database, and leaves an existing one alone).
                try:
                    created = await create_shielded()
                except DatabaseError as creating:
                    try:  # the maintenance database out of reach (a pooler that only knows the school): try it
                        conn = await open_session(target, options.session)
                    except DatabaseError:
                        raise creating from None
            else:
                try:
                    conn = await open_session(target, options.session, read_only=read_only)
                except DatabaseMissing:
                    if not create:
                        raise
                    created = await create_shielded()
            if created is Created.COMPLETE and not known_pooler(target):
                # A new database's first session is the slowest part of onboarding from a template (the server
                # builds its caches), and would only find the copy up to date. Behind a pooler it still runs, for
                # the pooling-mode check (a transaction pooler is refused for every later migration).
                result.status = Status.APPLIED
            else:
                if conn is None:
                    conn = await open_session(target, options.session)
                await _work_in_session(conn, options, work, result, read_only=read_only)
        except DatabaseError as exc:
            result.status, result.error = status_for(exc), exc
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            if conn is not None:
                drop_if_unresponsive(conn, exc)
            error = as_database_error(target, exc, "working")
            result.status, result.error = status_for(error), error
        except anyio.get_cancelled_exc_class():
            # Cancelled from outside (the service's grace ran out): a database this call created and left holding
            # nothing is dropped again, as after a failure, before the cancellation goes on.
            if created is Created.EMPTY and not result.steps and not known_pooler(target):
                with anyio.CancelScope(shield=True), anyio.move_on_after(DROP_AGAIN_S):
                    if conn is not None:
                        await close_quietly(conn)
                        conn = None
                    await drop_if_ours(target, options.session)
            raise
        finally:
            if conn is not None:
                with anyio.CancelScope(shield=True):
                    await close_quietly(conn)
    if scope.cancelled_caught and result.error is None:
        result.status, result.error = Status.FAILED, aborted(target)
    if created is Created.EMPTY and result.error is not None and not result.steps and not known_pooler(target):
        # A database this call created, left useless by the failure (e.g. an extension the server lacks): dropped
        # again when it provably holds nothing but our bootstrap (behind a pooler that cannot be proven).
        dropped, note = await drop_if_ours(target, options.session)
        result.notes.append(note)
        result.created_database = not dropped
    result.duration_s = time.perf_counter() - started
    # Debug: the CLI says each school's outcome once (its result line, or `school_result` with JSON logs).
    if result.error is not None:
        bound.debug("database.failed", status=result.status.value, code=result.error.code, error=result.error.message)
    else:
        bound.debug(
            "database.done",
            status=result.status.value,
            applied=result.applied_versions,
            duration_s=round(result.duration_s, 3),
        )
    return result


async def _work_in_session(
    conn: Session,
    options: EngineOptions,
    work: Work,
    result: DatabaseResult,
    *,
    read_only: bool,
) -> None:
    if not conn.behind_pooler:
        await work(conn, result)
    elif read_only:
        # Through a pooler our limits could not be startup parameters: they hold for one transaction.
        async with conn.transaction(readonly=True):
            await conn.execute(options.session.set_commands(local=True))
            await work(conn, result)
    else:
        # A pooler (it refused our startup parameters): proven to keep its server process, or refused, before any
        # lock or write. Other sessions are checked by the query that takes SQLx's lock, under which every write of
        # the engine happens (lock.py: it takes the lock only if the server sees our own socket).
        await ensure_pinned(conn)
        await work(conn, result)


def _current_version(applied: dict[int, AppliedMigration]) -> int | None:
    return max(applied) if applied else None


async def _bootstrap_inside_lock(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    extensions: tuple[str, ...],
    quick: float | None,
) -> None:
    for name in await ensure_extensions(conn, target, extensions):
        result.notes.append(f"created extension {name}")
    if await ensure_history_table(conn, timeout=quick):
        result.notes.append(f"created table {sqlx.HISTORY_TABLE}")


async def _migrate(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    source: MigrationSource,
    options: EngineOptions,
    extensions: tuple[str, ...] | None,
) -> None:
    goal = [m.version for m in source.up_to(options.target_version)]
    await _settled(
        lambda progress: _apply_pending(conn, result, target, source, options, extensions, progress),
        result,
        target,
        options,
        "up",
        lambda ledger: [v for v in goal if not ledger.get(v)],
    )


async def _settled(
    work: Callable[[Progress], Awaitable[None]],
    result: DatabaseResult,
    target: DatabaseTarget,
    options: EngineOptions,
    direction: Direction,
    still_to_do: Callable[[dict[int, bool]], list[int]],
) -> None:
    """Do `work`, recording its progress; if the connection is lost (or the run aborted) on the way, the ledger,
    read again, says how it ended (inflight.settle)."""
    progress = Progress()
    try:
        await work(progress)
    except BaseException as exc:
        if not is_interruption(exc):
            raise
        await settle(exc, result, target, options.session, options.lock_wait, progress, direction, still_to_do)
        done = Status.APPLIED if direction == "up" else Status.REVERTED
        result.status = done if result.steps else Status.UP_TO_DATE


async def _apply_pending(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    source: MigrationSource,
    options: EngineOptions,
    extensions: tuple[str, ...] | None,
    progress: Progress,
) -> None:
    quick = options.session.bookkeeping_timeout
    async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
        if extensions is not None:
            await _bootstrap_inside_lock(conn, result, target, extensions, quick)
            applied = await read_applied(conn, timeout=quick)
        else:
            history = await read_history(conn, timeout=quick)
            if history is None:
                await conn.execute(sqlx.CREATE_HISTORY_TABLE, timeout=quick)
                result.notes.append(f"created table {sqlx.HISTORY_TABLE}")
            applied = history or {}
        result.version_before = result.version_after = _current_version(applied)
        validate(applied, source, ignore_missing=options.ignore_missing)
        pending = [m for m in source.up_to(options.target_version) if m.version not in applied]
        result.pending = [m.version for m in pending]
        newest = result.version_before
        for migration in pending:
            if newest is not None and migration.version < newest:
                result.notes.append(
                    f"applied {migration.version} out of order: it is older than the newest applied version {newest}"
                )
            with tracing.migration_span(target, migration, "up"):
                await _apply_one(conn, result, target, migration, progress, quick)
            result.pending.remove(migration.version)
            result.version_after = max(result.version_after or migration.version, migration.version)
        result.status = Status.APPLIED if pending or result.notes else Status.UP_TO_DATE


async def _inspect(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    source: MigrationSource,
    options: EngineOptions,
    *,
    plan: bool,
    check_template: bool,
) -> None:
    # A read-only session (the server refuses writes) and one query: status runs on every school of the fleet.
    quick = options.session.bookkeeping_timeout
    lock_key = advisory_lock_key(result.database)
    history = await read_status(conn, result.database, check_template=check_template, timeout=quick)
    if history is None:
        result.notes.append(f"no {sqlx.HISTORY_TABLE} table yet")
    applied = history or {}
    result.version_before = result.version_after = _current_version(applied)
    pending = [m for m in source.up_to(options.target_version) if m.version not in applied]
    result.pending = [m.version for m in pending]
    running = in_progress(applied)
    # A migration in progress shows in the ledger as pending files or a success = false row: only then is it worth
    # asking who holds SQLx's lock (a second, small query; an up-to-date school costs one).
    holder = await lock_holder(conn, lock_key, timeout=quick) if pending or running else None
    if holder is not None and running:
        # Not dirty: a `-- no-transaction` file is marked success = false while it runs.
        raise Locked(
            f"migration {running[0]} is being applied outside a transaction on {result.database} by {holder}",
            hint="wait for it to finish, then run this again",
        )
    validate(applied, source, ignore_missing=options.ignore_missing)
    if holder is not None:
        raise Locked(
            f"a migration is in progress on {result.database}: the SQLx lock is held by {holder}",
            hint="wait for it to finish, then run this again",
        )
    if plan:
        if not applied:  # one more query, only where the ledger is empty: is it a new school, or one never migrated?
            result.new_school = not await has_own_tables(conn, timeout=quick)
        result.steps = [MigrationStep(m.version, m.description, "up") for m in pending]
        result.status = Status.PLANNED if pending else Status.UP_TO_DATE
    else:
        result.status = Status.PENDING if pending else Status.UP_TO_DATE


async def _apply_one(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    m: Migration,
    progress: Progress,
    quick: float | None,
) -> None:
    started_ns = time.perf_counter_ns()
    try:
        if m.no_transaction:
            await _apply_outside_transaction(conn, m, progress, started_ns, quick)
        else:
            # The file and its history row commit together or not at all. They travel as one simple-protocol
            # message (the file first, so server error positions still point into it).
            progress.at(m, "up", Stage.RUNNING)
            async with _transaction(conn):
                await conn.execute(
                    f"{m.up_sql}\n;\n{sqlx.insert_applied_literal(m.version, m.description, m.checksum)}"
                )
                progress.advance(Stage.COMMITTING)  # leaving the block sends COMMIT
    except Exception as exc:
        drop_if_unresponsive(conn, exc)
        error = _step_error(exc, target, m, m.filename, m.up_sql, no_transaction=m.no_transaction)
        failed_after_s = (time.perf_counter_ns() - started_ns) / 1e9
        if (
            isinstance(error, MigrationFailed)
            and error.line is None
            and not m.no_transaction
            and failed_after_s < _LOCATE_BUDGET_S
            and not (error.sqlstate or "").startswith(_NOT_REPLAYED)
        ):
            await _locate_failure(conn, error, m.up_sql)
        raise error from None
    progress.step = None
    elapsed_ns = time.perf_counter_ns() - started_ns
    result.steps.append(MigrationStep(m.version, m.description, "up", elapsed_ns / 1e9))
    log.info("migration.applied", database=result.database, version=m.version, duration_s=elapsed_ns / 1e9)
    if not m.no_transaction:  # committed; a lost reply here is settled by reading the ledger again
        await conn.execute(sqlx.update_execution_time_literal(elapsed_ns, m.version), timeout=quick)


async def _apply_outside_transaction(
    conn: asyncpg.Connection, m: Migration, progress: Progress, started_ns: int, quick: float | None
) -> None:
    """Mark the version in progress (success = false: SQLx refuses to run past it), run the file, mark it done.
    Interrupted in between, the mark stays: the file is never run twice without someone deciding it should be."""
    progress.at(m, "up", Stage.MARKING)
    await mark_in_progress(conn, m, timeout=quick)
    progress.advance(Stage.RUNNING)
    try:
        await _run_file(conn, m.up_sql)
    except asyncpg.PostgresError as exc:
        if not is_connection_lost(exc):
            # The server refused the statement, so the version is pending again, as SQLx leaves it.
            await forget(conn, m.version, timeout=quick)
            progress.step = None
        raise
    progress.advance(Stage.FINISHING)
    await mark_done(conn, m.version, time.perf_counter_ns() - started_ns, timeout=quick)


async def _revert_one(
    conn: asyncpg.Connection,
    result: DatabaseResult,
    target: DatabaseTarget,
    m: Migration,
    progress: Progress,
    quick: float | None,
) -> None:
    assert m.down_sql is not None and m.down_filename is not None
    started = time.perf_counter()
    progress.at(m, "down", Stage.RUNNING)
    try:
        if m.down_no_transaction:
            await _run_file(conn, m.down_sql)
            progress.advance(Stage.FINISHING)
            await forget(conn, m.version, timeout=quick)
        else:
            async with _transaction(conn):
                await _run_file(conn, m.down_sql)
                await conn.execute(sqlx.DELETE_APPLIED, m.version, timeout=quick)
                progress.advance(Stage.COMMITTING)  # leaving the block sends COMMIT
    except Exception as exc:
        drop_if_unresponsive(conn, exc)
        raise _step_error(exc, target, m, m.down_filename, m.down_sql, no_transaction=m.down_no_transaction) from None
    progress.step = None
    result.steps.append(MigrationStep(m.version, m.description, "down", time.perf_counter() - started))
    log.info("migration.reverted", database=result.database, version=m.version)


@asynccontextmanager
async def _transaction(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """`conn.transaction()`, except that no ROLLBACK is sent to a session that stopped answering or is being
    aborted: it would wait for that session again. The server rolls back when the session ends."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        yield
    except BaseException as exc:
        drop_if_unresponsive(conn, exc)
        if not (conn.is_closed() or isinstance(exc, anyio.get_cancelled_exc_class())):
            await transaction.rollback()
        raise
    await transaction.commit()


async def _run_file(conn: asyncpg.Connection, sql: str) -> None:
    """Send a file as one simple-protocol query, as SQLx does. A file of comments only (what `sqlx migrate add -r`
    and `orchestrator new` write into a down file) is not sent: PostgreSQL answers it with EmptyQueryResponse,
    which asyncpg cannot read, and SQLx treats it as a step that does nothing."""
    if split_statements(sql):
        await conn.execute(sql)


class _Rollback(Exception):
    pass


# The replay below re-runs the work that failed: only for files that failed quickly, and never for longer.
_LOCATE_BUDGET_S = 5.0
# Errors of timing and resources (timeouts, locks, deadlocks, lost connections) say nothing about a line.
_NOT_REPLAYED = ("08", "40", "53", "55", "57")


async def _locate_failure(conn: asyncpg.Connection, error: MigrationFailed, sql: str) -> None:
    """Some errors carry no position (e.g. "relation already exists"). Replay the file statement by statement in
    a transaction that is always rolled back, to find the line of the statement that fails the same way.
    (Sequences advanced by the replay stay advanced, as they did in the failed attempt.)"""
    try:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL statement_timeout = {int(_LOCATE_BUDGET_S * 1000)}")
            for statement in split_statements(sql):
                try:
                    await conn.execute(statement.text)
                except asyncpg.PostgresError as exc:
                    if exc.sqlstate == error.sqlstate:
                        error.line = statement.line
                        error.message = error.message.replace(f"{error.file}: ", f"{error.file}:{statement.line}: ", 1)
                    break
            raise _Rollback
    except (_Rollback, asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
        pass  # best effort: the report still names the file


def _step_error(
    exc: BaseException, target: DatabaseTarget, m: Migration, file: str, sql: str, *, no_transaction: bool
) -> DatabaseError:
    if isinstance(exc, DatabaseError):
        return exc
    if is_connection_lost(exc):
        return connection_lost(target, exc, f"running {file}")  # the caller settles what it means (_settle)
    if not isinstance(exc, asyncpg.PostgresError):
        return as_database_error(target, exc, f"running {file}")
    position = getattr(exc, "position", None)
    # A position past the file's end points into the history INSERT sent with it: no line in the file.
    line = line_of(sql, int(position) - 1) if position and sql and int(position) <= len(sql) else None
    sqlstate = exc.sqlstate
    detail = f" ({exc.detail})" if getattr(exc, "detail", None) else ""
    where = f"{file}:{line}" if line else file
    hint = _SQLSTATE_HINTS.get(sqlstate or "")
    if no_transaction:
        # One statement, refused by the server: it did not take effect, except that a failed CONCURRENTLY build
        # leaves an INVALID index behind (which the next attempt would trip over).
        hint = (
            f"{file} ran outside a transaction and failed, so it is pending again; before running it again check "
            f"{effect_check(sql)}" + (f". ({hint})" if hint else "")
        )
    elif hint is None:
        hint = (
            f"its transaction rolled back, so nothing from it was kept. If no school has applied {file} yet, fix it "
            "and run again; if some have, do not edit it (they would hold other bytes): fix what this school "
            "lacks, or put the change in a new migration"
        )
    return MigrationFailed(
        target.scrub(f"{where}: {exc.message}{detail} [SQLSTATE {sqlstate}]"),
        version=m.version,
        file=file,
        line=line,
        sqlstate=sqlstate,
        hint=hint,
        retryable=(sqlstate in _RETRYABLE_SQLSTATES) and not no_transaction,
    )
