"""The `_sqlx_migrations` ledger of one database, read and checked the way SQLx checks it.

The checks run in SQLx's order (dirty, then missing, then modified) and raise with SQLx's wording plus a hint on
how to recover, because the same database must be accepted or refused identically by us and by every worker.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import asyncpg

from . import sqlx
from .errors import DatabaseError, Dirty, MissingMigration, ModifiedMigration
from .lock import template_refused
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


# Status runs on every school of a fleet, each paying a new connection already: the ledger and "is this a template
# database" come back in one query. Whether a migration is running right now is asked only when the ledger has
# something it could explain (engine._inspect): `pg_locks` copies the server's whole lock table, which costs the
# server more than the rest of the query. Looking the database up in pg_database costs a new session about 8% more
# than reading the ledger alone; the fleet spares it by listing a server's databases once (engine.list_databases).
_STATUS = """
SELECT d.datistemplate AS template, m.version, m.checksum, m.success
FROM pg_database AS d
LEFT JOIN _sqlx_migrations AS m ON true
WHERE d.datname = current_database()
ORDER BY m.version
"""
_STATUS_WITHOUT_HISTORY = "SELECT datistemplate AS template FROM pg_database WHERE datname = current_database()"


async def read_status(
    conn: asyncpg.Connection, database: str, *, check_template: bool = True, timeout: float | None = None
) -> dict[int, AppliedMigration] | None:
    """The ledger, or None without a history table. Raises NotASchool for a template database (unless
    `check_template` is False: the caller knows it is none)."""
    query = _STATUS if check_template else sqlx.SELECT_APPLIED
    try:
        if conn.is_in_transaction():  # e.g. through a pooler: a savepoint, so a missing table spares the transaction
            async with conn.transaction():
                rows = await conn.fetch(query, timeout=timeout)
        else:
            rows = await conn.fetch(query, timeout=timeout)
        applied: dict[int, AppliedMigration] | None = {
            r["version"]: AppliedMigration(r["version"], bytes(r["checksum"]), r["success"])
            for r in rows
            if r["version"] is not None
        }
    except asyncpg.UndefinedTableError:
        if not check_template:
            return None
        rows, applied = await conn.fetch(_STATUS_WITHOUT_HISTORY, timeout=timeout), None
    if check_template and rows[0]["template"]:
        raise template_refused(database)
    return applied


# Tables, partitioned tables and materialized views outside the system schemas, other than the ledger and those an
# extension owns (PostGIS's spatial_ref_sys): what holds a school's rows.
_HAS_OWN_TABLES = f"""
SELECT EXISTS (
    SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE c.relkind IN ('r', 'p', 'm')
      AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
      AND NOT (n.nspname = current_schema() AND c.relname = '{sqlx.HISTORY_TABLE}')
      AND NOT EXISTS (
          SELECT 1 FROM pg_depend AS d
          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e'
      )
)
"""


async def has_own_tables(conn: asyncpg.Connection, *, timeout: float | None = None) -> bool:
    """Whether the database holds any table of its own (the ledger and extensions' tables aside). With no ledger
    rows either, it is a new school: no rows, no traffic (the safety gate's busy-table rules do not apply there)."""
    return bool(await conn.fetchval(_HAS_OWN_TABLES, timeout=timeout))


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
        f"If it took effect: `orchestrator resolve --applied {version}` (or `{sqlx.mark_applied_sql(version)}`). If "
        f"it did not (undo any half-done part first): `orchestrator resolve --not-applied {version}` (or "
        f"`{sqlx.forget_sql(version)}`), then migrate again"
    )


@dataclass(frozen=True)
class LedgerProblem:
    """One thing wrong with the ledger against the migration files, in SQLx's order of checking."""

    kind: str  # dirty | missing | modified
    version: int
    migration: Migration | None = None  # the file, when there is one
    crlf_only: bool = False  # modified: only the line endings differ

    @property
    def text(self) -> str:
        """In a DBA's words, for the audit's list."""
        if self.kind == "dirty":
            return f"migration {self.version} is partially applied (success = false in the history)"
        if self.kind == "missing":
            return f"migration {self.version} is applied but has no file (deleted, or the school is ahead)"
        assert self.migration is not None
        why = " (only its line endings differ: CRLF vs LF)" if self.crlf_only else ""
        return f"{self.migration.filename} was edited after it was applied{why}"


def problems(
    applied: dict[int, AppliedMigration], source: MigrationSource, *, ignore_missing: bool = False
) -> list[LedgerProblem]:
    """Every ledger problem at once, dirty rows first, then missing files, then edited files (SQLx's order)."""
    found = [
        LedgerProblem("dirty", row.version, source.get(row.version)) for row in applied.values() if not row.success
    ]
    if not ignore_missing:
        found += [LedgerProblem("missing", v) for v in sorted(v for v in applied if source.get(v) is None)]
    found += [
        LedgerProblem("modified", m.version, m, differs_only_in_line_endings(m, applied[m.version].checksum))
        for m in source
        if m.version in applied and applied[m.version].checksum != m.checksum
    ]
    return found


def differs_only_in_line_endings(m: Migration, stored: bytes) -> bool:
    raw = m.up_path.read_bytes()
    lf = raw.replace(b"\r\n", b"\n")
    return stored in {checksum(lf), checksum(lf.replace(b"\n", b"\r\n"))} and stored != m.checksum


def validate(applied: dict[int, AppliedMigration], source: MigrationSource, *, ignore_missing: bool) -> None:
    """Refuse the ledger as SQLx would, with SQLx's words for its first problem and a hint on how to recover."""
    found = problems(applied, source, ignore_missing=ignore_missing)
    if found:
        raise _error_for(found[0], [p for p in found if p.kind == found[0].kind], source)


def _error_for(first: LedgerProblem, same_kind: list[LedgerProblem], source: MigrationSource) -> DatabaseError:
    more = f" (and {len(same_kind) - 1} more)" if len(same_kind) > 1 else ""
    if first.kind == "dirty":
        return Dirty(
            sqlx.dirty_message(first.version), version=first.version, hint=dirty_hint(first.version, first.migration)
        )
    versions = [p.version for p in same_kind]
    if first.kind == "missing":
        return MissingMigration(
            sqlx.missing_message(first.version) + more,
            versions=versions,
            hint=f"restore the file(s) for version(s) {', '.join(map(str, versions))} in {source.where} "
            "(e.g. `git log --diff-filter=D -- migrations/`), or, if this database is ahead of your checkout, "
            "update the checkout. If another directory's migrator applied them (e.g. a deferred one), give that "
            "directory too (--migrations is repeatable), or pass --ignore-missing as that migrator does",
        )
    assert first.migration is not None
    filename = first.migration.filename
    hint = (
        f"{filename} differs from what was applied only in its line endings (CRLF vs LF): restore the "
        "original endings (`git checkout` with `*.sql -text` in .gitattributes); do not re-apply"
        if first.crlf_only
        else f"{filename} was edited after it was applied. Restore the released version "
        "(`git log -p -- " + str(first.migration.up_path) + "`) and put the change in a new migration "
        "(`orchestrator new ...`)"
    )
    return ModifiedMigration(sqlx.modified_message(first.version) + more, versions=versions, hint=hint)
