"""What the admin side used to do by hand before a school's first migration: the database and its extensions.

Everything here is idempotent and safe when two processes race (a second CREATE DATABASE or CREATE EXTENSION
loses with a duplicate error, which counts as success). Names are always quoted, never pasted.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg

from . import scratch, sqlx
from .connection import SessionSettings, as_database_error, close_quietly, open_session, quote_ident, session
from .errors import DatabaseError, PermissionDenied
from .logsetup import get_logger
from .pooler import ensure_pinned
from .scratch import SCRATCH_PREFIX, drop_abandoned, maker_session
from .target import DatabaseTarget

log = get_logger("orchestrator.bootstrap")

MAINTENANCE_DATABASE = "postgres"


async def create_database(target: DatabaseTarget, settings: SessionSettings) -> bool:
    """Create the target's database through the server's maintenance database. True if we created it."""
    maintenance = target.with_database(MAINTENANCE_DATABASE)
    async with session(maintenance, settings) as conn:
        try:
            await ensure_pinned(conn)  # through a transaction pooler the school would be refused next: create nothing
            if await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target.database):
                return False
            # CREATE DATABASE takes no parameters: the name is quoted as an identifier.
            await conn.execute(f"CREATE DATABASE {quote_ident(target.database)}")
            return True
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return False  # another process created it between our check and our CREATE
        except asyncpg.InsufficientPrivilegeError as exc:
            raise creation_denied(target, exc) from None
        except asyncpg.PostgresError as exc:
            raise as_database_error(target, exc, "creating the database") from None


def creation_denied(target: DatabaseTarget, exc: asyncpg.PostgresError) -> PermissionDenied:
    return PermissionDenied(
        f"not allowed to create database {target.database} on {target.server}: {exc.message}",
        hint="grant CREATEDB to the URL's user, or have the database created by an admin first",
    )


async def ensure_extensions(conn: asyncpg.Connection, target: DatabaseTarget, names: tuple[str, ...]) -> list[str]:
    """CREATE EXTENSION IF NOT EXISTS for each name; returns those that were created."""
    created = []
    for name in names:
        if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = $1", name):
            continue
        try:
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS {quote_ident(name)}")
            created.append(name)
        except asyncpg.UniqueViolationError:
            continue  # a concurrent CREATE EXTENSION won the race
        except (asyncpg.UndefinedFileError, asyncpg.FeatureNotSupportedError) as exc:  # 18: "is not available"
            raise DatabaseError(
                f"extension {name} is not installed on {target.server}: {exc.message}",
                hint="install the server's contrib package (e.g. postgresql-contrib), or fix `extensions` "
                "in the registry (or --extension; --no-extensions creates none)",
            ) from None
        except asyncpg.InsufficientPrivilegeError as exc:
            raise PermissionDenied(
                f"not allowed to create extension {name} in {target.database}: {exc.message}",
                hint="create it once as a superuser, or make it a trusted extension",
            ) from None
    return created


@asynccontextmanager
async def scratch_database(
    server: DatabaseTarget, purpose: str, settings: SessionSettings
) -> AsyncIterator[DatabaseTarget]:
    """A new empty database of ours on `server` for the length of the block (the audit's references, the
    rehearsal), dropped afterwards whatever happens; a failed drop is logged, not raised. Its maker's session (the
    maintenance database's) stays open as long as it exists: its lock says the maker lives (see scratch.py). Scratch
    databases whose maker is gone are dropped first."""
    maintenance = server.with_database(MAINTENANCE_DATABASE)
    async with maker_session(maintenance, settings) as conn:
        await drop_abandoned(conn)
        try:
            made = await scratch.make(conn, purpose)
        except asyncpg.InsufficientPrivilegeError as exc:
            raise creation_denied(server.with_database(f"{SCRATCH_PREFIX}{purpose}_*"), exc) from None
        except asyncpg.PostgresError as exc:
            raise as_database_error(maintenance, exc, "creating a scratch database") from None
        try:
            yield server.with_database(made.name)
        finally:
            await scratch.discard(conn, made)


# --- undoing a creation that went nowhere --------------------------------------------------------------------------

# What a database our bootstrap made holds: extensions (their objects are theirs), an empty ledger. Anything else
# (a table, view, sequence, function, type, schema, or a ledger row) means someone else, or a migration, was there.
_HOLDS_MORE = f"""
SELECT EXISTS (
    SELECT 1 FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_'
      AND c.relname NOT IN ('{sqlx.HISTORY_TABLE}', '{sqlx.HISTORY_TABLE}_pkey')
      AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                      WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 1 FROM pg_proc AS p JOIN pg_namespace AS n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
      AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                      WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 1 FROM pg_type AS t JOIN pg_namespace AS n ON n.oid = t.typnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND t.typtype IN ('e', 'd', 'r', 'm')
      AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                      WHERE d.classid = 'pg_type'::regclass AND d.objid = t.oid AND d.deptype = 'e')
    UNION ALL
    SELECT 1 FROM pg_namespace AS n
    WHERE n.nspname NOT IN ('public', 'information_schema') AND n.nspname !~ '^pg_'
      AND NOT EXISTS (SELECT 1 FROM pg_depend AS d
                      WHERE d.classid = 'pg_namespace'::regclass AND d.objid = n.oid AND d.deptype = 'e')
)
"""
_LEDGER_ROWS = f"SELECT EXISTS (SELECT 1 FROM {sqlx.HISTORY_TABLE})"
_OTHER_SESSIONS = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"


async def drop_if_ours(target: DatabaseTarget, settings: SessionSettings) -> tuple[bool, str]:
    """After an operation that created `target`'s database in this call and then failed: drop it again, if it can be
    proven ours. It is closed to new sessions first (ALLOW_CONNECTIONS false); then, in a session opened just
    before, no other session may be connected and nothing may be there but what our bootstrap makes; the drop itself
    (without FORCE) fails if anyone is there anyway. Otherwise it is opened again and left as it is. Returns a note
    for the result saying which; never raises."""
    name, maintenance = quote_ident(target.database), target.with_database(MAINTENANCE_DATABASE)
    kept = f"left database {target.database} in place although this call created it"
    try:
        async with session(maintenance, settings) as admin:
            inspector = await open_session(target, settings)  # before it is closed to new sessions
            dropped = False
            try:
                await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
                others = await inspector.fetchval(_OTHER_SESSIONS)
                holds_more = await inspector.fetchval(_HOLDS_MORE) or (
                    await inspector.fetchval("SELECT to_regclass($1) IS NOT NULL", sqlx.HISTORY_TABLE)
                    and await inspector.fetchval(_LEDGER_ROWS)
                )
                await close_quietly(inspector)
                if others or holds_more:
                    return False, f"{kept}: " + (f"{others} other session(s) on it" if others else "it holds more")
                await admin.execute(f"DROP DATABASE {name}")
                dropped = True
            finally:
                await close_quietly(inspector)
                if not dropped:
                    with anyio.CancelScope(shield=True), contextlib.suppress(asyncpg.PostgresError, OSError):
                        await admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS true")
    except (DatabaseError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        why = exc.message if isinstance(exc, DatabaseError) else target.scrub(str(exc))
        log.warning("database.not_dropped_again", database=target.database, error=why)
        return False, f"{kept}: {why}"
    log.info("database.dropped_again", database=target.database)
    return True, f"dropped database {target.database} again: this call created it and it held nothing else"
