"""What the admin side used to do by hand before a school's first migration: the database and its extensions.

Everything here is idempotent and safe when two processes race (a second CREATE DATABASE or CREATE EXTENSION
loses with a duplicate error, which counts as success). Names are always quoted, never pasted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from . import scratch
from .connection import SessionSettings, as_database_error, quote_ident, session
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
