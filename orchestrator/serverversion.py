"""The PostgreSQL major version of a server, for what must happen on a server of a school's own version.

The catalog's text (`pg_get_viewdef`, defaults, constraints) is rendered by the server and changes between major
versions (PostgreSQL 16 stopped qualifying a one-table view's columns), and a migration can pass on one version
and fail on another. So the audit builds a school's expected schema, and `--rehearse` rehearses, on a server of
each major version the fleet runs.
"""

from __future__ import annotations

from collections.abc import Iterable

import asyncpg

from .bootstrap import MAINTENANCE_DATABASE
from .connection import SessionSettings, as_database_error, session
from .errors import DatabaseError
from .target import DatabaseTarget

# 180006 -> 18 (server_version_num, PostgreSQL 10 and later): an SQL expression, to fold into another query.
SERVER_MAJOR = "current_setting('server_version_num')::int / 10000"


async def server_major(server: DatabaseTarget, settings: SessionSettings) -> int:
    """The major version of `server`, asked on its maintenance database. Raises DatabaseError."""
    maintenance = server.with_database(MAINTENANCE_DATABASE)
    async with session(maintenance, settings) as conn:
        try:
            major: int = await conn.fetchval(f"SELECT {SERVER_MAJOR}")
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            raise as_database_error(maintenance, exc, "reading the server version") from None
    return major


async def first_server_per_major(
    servers: Iterable[DatabaseTarget], settings: SessionSettings
) -> tuple[dict[int, DatabaseTarget], list[str]]:
    """Each major version among `servers` -> the first server of it (one question per distinct host:port); and
    why any could not be asked (messages without passwords)."""
    chosen: dict[int, DatabaseTarget] = {}
    problems: list[str] = []
    asked: set[str] = set()
    for server in servers:
        if server.server in asked:
            continue
        asked.add(server.server)
        try:
            chosen.setdefault(await server_major(server, settings), server)
        except DatabaseError as exc:
            problems.append(exc.message)
    return chosen, problems
