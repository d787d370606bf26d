"""What the admin side used to do by hand before a school's first migration: the database and its extensions.

Everything here is idempotent and safe when two processes race (a second CREATE DATABASE or CREATE EXTENSION
loses with a duplicate error, which counts as success). Names are always quoted, never pasted.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from .connection import SessionSettings, as_database_error, quote_ident, session
from .errors import DatabaseError, PermissionDenied
from .logsetup import get_logger
from .pooler import ensure_pinned
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
        except asyncpg.UndefinedFileError as exc:
            raise DatabaseError(
                f"extension {name} is not installed on {target.server}: {exc.message}",
                hint="install the server's contrib package (e.g. postgresql-contrib), or fix `extensions` "
                "in the registry",
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
