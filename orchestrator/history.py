"""The `_sqlx_migrations` ledger of one database, read and checked the way SQLx checks it.

The checks run in SQLx's order (dirty, then missing, then modified) and raise with SQLx's wording plus a hint on
how to recover, because the same database must be accepted or refused identically by us and by every worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from . import sqlx
from .errors import Dirty, MissingMigration, ModifiedMigration
from .lock import LOCK_IS_HELD
from .source import Migration, MigrationSource, checksum
from .sqltext import split_statements


@dataclass(frozen=True)
class AppliedMigration:
    version: int
    checksum: bytes
    success: bool


# `timeout` below bounds each reply (the engine passes SessionSettings.bookkeeping_timeout); None = the session's.


async def history_exists(conn: asyncpg.Connection, *, timeout: float | None = None) -> bool:
    return bool(await conn.fetchval(sqlx.HISTORY_TABLE_EXISTS, timeout=timeout))


async def ensure_history_table(conn: asyncpg.Connection, *, timeout: float | None = None) -> bool:
    """Create the table if missing (SQLx's DDL). Returns True when it was created."""
    if await history_exists(conn, timeout=timeout):
        return False
    await conn.execute(sqlx.CREATE_HISTORY_TABLE, timeout=timeout)
    return True


async def read_applied(conn: asyncpg.Connection, *, timeout: float | None = None) -> dict[int, AppliedMigration]:
    rows = await conn.fetch(sqlx.SELECT_APPLIED, timeout=timeout)
    return {r["version"]: AppliedMigration(r["version"], bytes(r["checksum"]), r["success"]) for r in rows}


async def read_history(conn: asyncpg.Connection, *, timeout: float | None = None) -> dict[int, AppliedMigration] | None:
    """The ledger, or None when there is no history table: one query either way. Not for use inside a
    transaction (the missing-table error would abort it)."""
    try:
        return await read_applied(conn, timeout=timeout)
    except asyncpg.UndefinedTableError:
        return None


# Status runs on every school of a fleet, each paying a new connection already: the ledger and "is a migration
# running right now" come back in one query.
_STATUS = f"""
SELECT l.locked, m.version, m.checksum, m.success
FROM ({LOCK_IS_HELD}) AS l (locked)
LEFT JOIN _sqlx_migrations AS m ON true
ORDER BY m.version
"""


async def read_status(
    conn: asyncpg.Connection, lock_key: int, *, timeout: float | None = None
) -> tuple[dict[int, AppliedMigration] | None, bool]:
    """(the ledger or None without a history table, whether SQLx's lock is held right now)."""
    try:
        rows = await conn.fetch(_STATUS, lock_key, timeout=timeout)
    except asyncpg.UndefinedTableError:
        return None, bool(await conn.fetchval(LOCK_IS_HELD, lock_key, timeout=timeout))
    applied = {
        r["version"]: AppliedMigration(r["version"], bytes(r["checksum"]), r["success"])
        for r in rows
        if r["version"] is not None
    }
    return applied, bool(rows[0]["locked"])


async def mark_in_progress(conn: asyncpg.Connection, m: Migration, *, timeout: float | None = None) -> None:
    """Before a `-- no-transaction` file runs: SQLx's row with success = false (see sqlx.INSERT_IN_PROGRESS)."""
    await conn.execute(sqlx.INSERT_IN_PROGRESS, m.version, m.description, m.checksum, timeout=timeout)


async def mark_done(conn: asyncpg.Connection, version: int, nanoseconds: int, *, timeout: float | None = None) -> None:
    """After it completed: the row becomes the one SQLx writes."""
    await conn.execute(sqlx.MARK_DONE, version, nanoseconds, timeout=timeout)


async def forget(conn: asyncpg.Connection, version: int, *, timeout: float | None = None) -> bool:
    """Delete a version's row; True if there was one."""
    return bool(await conn.execute(sqlx.DELETE_APPLIED, version, timeout=timeout) != "DELETE 0")


def in_progress(applied: dict[int, AppliedMigration]) -> list[int]:
    """Versions marked success = false: partially applied, or being applied outside a transaction right now."""
    return sorted(v for v, row in applied.items() if not row.success)


def check_dirty(applied: dict[int, AppliedMigration], source: MigrationSource) -> None:
    dirty = in_progress(applied)
    if dirty:
        first = dirty[0]
        raise Dirty(sqlx.dirty_message(first), version=first, hint=dirty_hint(first, source.get(first)))


# --- the way out of a success = false row ---------------------------------------------------------------------------

# An index name, quoted or not (an unnamed `CREATE INDEX CONCURRENTLY ON t ...` has none).
_INDEX = r'(?!ON\s)(?P<name>"(?:[^"]|"")+"|[\w$]+(?:\.(?:"(?:[^"]|"")+"|[\w$]+))?)'
_CREATE_INDEX = re.compile(rf"^CREATE\s+(?:UNIQUE\s+)?INDEX\s+CONCURRENTLY\s+(?:IF\s+NOT\s+EXISTS\s+)?{_INDEX}", re.I)
_DROP_INDEX = re.compile(rf"^DROP\s+INDEX\s+CONCURRENTLY\s+(?:IF\s+EXISTS\s+)?{_INDEX}", re.I)


def effect_check(sql: str) -> str:
    """How to see whether a one-statement file took effect, as exactly as we can say it."""
    statements = split_statements(sql)
    if not statements:
        return "nothing: the file holds no statement"
    code = statements[0].code
    if created := _CREATE_INDEX.match(code):
        return (
            f"`SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass({_literal(created['name'])})`: true = "
            "the index was built; false = a half-built INVALID index (drop it with `DROP INDEX CONCURRENTLY` "
            "first); no row = not built"
        )
    if dropped := _DROP_INDEX.match(code):
        return f"`SELECT to_regclass({_literal(dropped['name'])}) IS NULL`: true = the index is gone"
    shown = code if len(code) <= 120 else code[:117] + "..."
    return f"whether `{shown}` took effect"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def dirty_hint(version: int, migration: Migration | None) -> str:
    """The way out of a success = false row: what to check, and which row to fix with which SQL."""
    what = migration.filename if migration else f"version {version}"
    check = effect_check(migration.up_sql) if migration else "what the migration does"
    return (
        f"{what} was interrupted while it ran outside a transaction (or another tool wrote the row), so whether it "
        f"took effect is unknown. Every backend worker refuses to start until the row is fixed. Check {check}. "
        f"If it took effect: `{sqlx.mark_applied_sql(version)}`. If it did not (undo any half-done part first): "
        f"`{sqlx.forget_sql(version)}`, then migrate again"
    )


def check_missing(applied: dict[int, AppliedMigration], source: MigrationSource) -> None:
    missing = sorted(v for v in applied if source.get(v) is None)
    if missing:
        first = missing[0]
        raise MissingMigration(
            sqlx.missing_message(first) + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
            versions=missing,
            hint=f"restore the file(s) for version(s) {', '.join(map(str, missing))} in {source.directory} "
            "(e.g. `git log --diff-filter=D -- migrations/`), or, if this database is ahead of your checkout, "
            "update the checkout",
        )


def differs_only_in_line_endings(m: Migration, stored: bytes) -> bool:
    raw = m.up_path.read_bytes()
    lf = raw.replace(b"\r\n", b"\n")
    return stored in {checksum(lf), checksum(lf.replace(b"\n", b"\r\n"))} and stored != m.checksum


def check_modified(applied: dict[int, AppliedMigration], source: MigrationSource) -> None:
    modified = [m for m in source if m.version in applied and applied[m.version].checksum != m.checksum]
    if modified:
        first = modified[0]
        crlf = differs_only_in_line_endings(first, applied[first.version].checksum)
        hint = (
            f"{first.filename} differs from what was applied only in its line endings (CRLF vs LF): restore the "
            "original endings (`git checkout` with `*.sql -text` in .gitattributes); do not re-apply"
            if crlf
            else f"{first.filename} was edited after it was applied. Restore the released version "
            "(`git log -p -- " + str(first.up_path) + "`) and put the change in a new migration "
            "(`orchestrator new ...`)"
        )
        raise ModifiedMigration(
            sqlx.modified_message(first.version) + (f" (and {len(modified) - 1} more)" if len(modified) > 1 else ""),
            versions=[m.version for m in modified],
            hint=hint,
        )


def validate(applied: dict[int, AppliedMigration], source: MigrationSource, *, ignore_missing: bool) -> None:
    check_dirty(applied, source)
    if not ignore_missing:
        check_missing(applied, source)
    check_modified(applied, source)
