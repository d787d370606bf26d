"""What the admin side used to do by hand before a school's first migration: the database and its extensions.

Everything here is idempotent and safe when two processes race (a second CREATE DATABASE or CREATE EXTENSION
loses with a duplicate error, which counts as success). Names are always quoted, never pasted.
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg

from . import sqlx
from .connection import SessionSettings, as_database_error, close_quietly, open_session, quote_ident, session
from .errors import DatabaseError, PermissionDenied
from .logsetup import get_logger
from .target import DatabaseTarget

log = get_logger("orchestrator.bootstrap")

MAINTENANCE_DATABASE = "postgres"
SCRATCH_PREFIX = "orchestrator_"  # + purpose + _<unix time created>_<8 hex>
SCRATCH_STALE_AFTER = 6 * 3600  # seconds: no audit or rehearsal keeps a scratch database this long


async def create_database(target: DatabaseTarget, settings: SessionSettings) -> bool:
    """Create the target's database through the server's maintenance database. True if we created it."""
    maintenance = target.with_database(MAINTENANCE_DATABASE)
    async with session(maintenance, settings) as conn:
        try:
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
    """A new empty database on `server` for the length of the block (the audit's references, the rehearsal),
    dropped afterwards whatever happens; a failed drop is logged, not raised. Scratch databases a killed run left
    behind (older than SCRATCH_STALE_AFTER, nobody connected) are dropped first."""
    await drop_stale_scratch(server, settings)
    scratch = server.with_database(scratch_name(purpose))
    try:
        await create_database(scratch, settings)
        yield scratch
    finally:
        try:
            await drop_database(scratch, settings)
        except DatabaseError as exc:
            log.warning("scratch_database.not_dropped", database=scratch.database, error=exc.message)


def scratch_name(purpose: str) -> str:
    """A new scratch database name (purpose: lowercase letters): `drop_stale_scratch` knows it by its shape."""
    return f"{SCRATCH_PREFIX}{purpose}_{int(time.time())}_{secrets.token_hex(4)}"


async def drop_stale_scratch(server: DatabaseTarget, settings: SessionSettings) -> list[str]:
    """Drop the scratch databases of runs that never cleaned up (kill -9); returns their names. Without FORCE: a
    database someone is still connected to is left alone. (A template build killed while being put in place may
    be marked as a template already: that mark is taken off first.)"""
    maintenance = server.with_database(MAINTENANCE_DATABASE)
    dropped = []
    try:
        async with session(maintenance, settings) as conn:
            names = await conn.fetch(
                "SELECT datname, datistemplate FROM pg_database WHERE datname ~ $1",
                rf"^{SCRATCH_PREFIX}[a-z]+_[0-9]+_[0-9a-f]{{8}}$",
            )
            for name, is_template in names:
                created = int(name.rsplit("_", 2)[1])
                if time.time() - created < SCRATCH_STALE_AFTER:
                    continue
                try:
                    if is_template:
                        await conn.execute(f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false")
                    await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")
                    dropped.append(name)
                except (asyncpg.ObjectInUseError, asyncpg.InsufficientPrivilegeError):
                    continue
    except (DatabaseError, asyncpg.PostgresError, OSError) as exc:
        log.warning("scratch_database.stale_not_checked", server=server.server, error=server.scrub(str(exc)))
    if dropped:
        log.info("scratch_database.stale_dropped", databases=dropped)
    return dropped


async def drop_database(target: DatabaseTarget, settings: SessionSettings) -> None:
    """Drop a scratch database (never a school's)."""
    maintenance = target.with_database(MAINTENANCE_DATABASE)
    try:
        async with session(maintenance, settings) as conn:
            await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(target.database)} WITH (FORCE)")
    except asyncpg.PostgresError as exc:
        raise as_database_error(target, exc, "dropping the scratch database") from None


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
