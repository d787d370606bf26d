"""SQLx's migration lock: a session-level advisory lock keyed on the database name.

Backend workers take it in `sqlx::migrate!().run()`; we take the same key, so a rollout and a worker starting up
never apply the same migration twice. Waiting is bounded: past `wait_s` we give up with `Locked`, naming who holds
it, instead of hanging. The lock is released on the way out; if that fails the caller closes the connection, which
releases it too.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg

from .connection import drop_if_unresponsive
from .errors import Locked, NotASchool
from .pooler import direct_check, mark_pinned, prove_pinned
from .sqlx import advisory_lock_key

# pg_locks alone is cheap; joining pg_stat_activity makes a fresh backend load every session's status, so the
# details are fetched only when the lock is actually held.
LOCK_IS_HELD = """
SELECT EXISTS (
  SELECT 1 FROM pg_locks
  WHERE locktype = 'advisory' AND granted
    AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
    AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid AND objsubid = 1
)"""
# The first query of every session that writes: it also refuses a template database (creating a database copies
# its template, so whatever is migrated into one spreads to every database created from it afterwards).
_TRY_LOCK = """
SELECT datistemplate AS template, CASE WHEN datistemplate THEN false ELSE pg_try_advisory_lock($1) END AS locked
FROM pg_database WHERE datname = current_database()
"""
# The same, for a session not yet proven to keep its own server process: the lock is taken only if the server sees
# our own socket ({direct}: pooler.direct_check, parameters from $2), else `locked` is NULL and the pooler's probes
# run first. (A CASE branch, not a joined subquery: planned once per session, it costs what _TRY_LOCK costs.)
_TRY_LOCK_IF_DIRECT = """
SELECT datistemplate AS template,
  CASE WHEN datistemplate THEN false WHEN {direct} THEN pg_try_advisory_lock($1) END AS locked
FROM pg_database WHERE datname = current_database()
"""
_HOLDER = """
SELECT a.pid, a.application_name, a.client_addr::text, a.state
FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted
  AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
  AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid AND l.objsubid = 1
LIMIT 1
"""


def template_refused(database: str) -> NotASchool:
    return NotASchool(
        f"{database} is a template database (pg_database.datistemplate): what is migrated into it would land in "
        "every database created from it afterwards; nothing was done",
        hint=f"a school has a database of its own: fix the URL; or, if {database} should not be a template, have "
        f"its owner run `ALTER DATABASE {database} IS_TEMPLATE false`",
    )


async def _try_lock(conn: asyncpg.Connection, database: str, key: int, *, timeout: float | None = None) -> bool:
    check = direct_check(conn, 2)
    if check is None:
        row = await conn.fetchrow(_TRY_LOCK, key, timeout=timeout)
    else:
        direct, params = check
        row = await conn.fetchrow(_TRY_LOCK_IF_DIRECT.format(direct=direct), key, *params, timeout=timeout)
    if row is None:
        return False
    if row["template"]:
        raise template_refused(database)
    if check is not None:
        if row["locked"] is None:
            await prove_pinned(conn)  # raises TransactionPooler unless the probes prove it
            return await _try_lock(conn, database, key, timeout=timeout)
        mark_pinned(conn)
    return bool(row["locked"])


async def lock_holder(conn: asyncpg.Connection, key: int, *, timeout: float | None = None) -> str | None:
    """A short description of the session holding the lock, if it can be seen."""
    try:
        row = await conn.fetchrow(_HOLDER, key, timeout=timeout)
    except asyncpg.PostgresError:
        return None
    if row is None:
        return None
    app = row["application_name"] or "unnamed client"
    client = row["client_addr"] or "local socket"
    return f"pid {row['pid']} ({app}, from {client}, {row['state']})"


async def current_holder(conn: asyncpg.Connection, database: str) -> str | None:
    """Who holds the migration lock of `database` (the connection's own) right now, if anyone.
    A read-only check: takes no lock."""
    key = advisory_lock_key(database)
    if not await conn.fetchval(LOCK_IS_HELD, key):
        return None
    return await lock_holder(conn, key) or "another session"


@asynccontextmanager
async def migration_lock(
    conn: asyncpg.Connection, database: str, wait_s: float, *, timeout: float | None = None
) -> AsyncIterator[int]:
    """Hold SQLx's lock for `database`, the one `conn` is connected to (the name in the URL is exactly
    current_database(): PostgreSQL matches it byte for byte at connect time, so no query is spent asking).
    `timeout` bounds each reply (see SessionSettings.bookkeeping_timeout)."""
    key = advisory_lock_key(database)
    deadline = time.monotonic() + wait_s
    delay = 0.05
    try:
        while not await _try_lock(conn, database, key, timeout=timeout):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                holder = await lock_holder(conn, key, timeout=timeout)
                raise Locked(
                    f"another migrator holds the SQLx migration lock on {database} "
                    f"(held by {holder or 'another session'}); gave up after {wait_s:g}s",
                    hint="a backend worker may be migrating at start-up, or another rollout is running: "
                    "retry later, or raise --lock-wait",
                )
            await anyio.sleep(min(delay, remaining))
            delay = min(delay * 2, 1.0)
    except BaseException as exc:
        drop_if_unresponsive(conn, exc)  # a session that stopped answering is of no more use (nor is its close)
        raise
    try:
        yield key
    except BaseException as exc:
        drop_if_unresponsive(conn, exc)
        raise
    finally:
        if not conn.is_closed():
            with anyio.CancelScope(shield=True):
                try:
                    await conn.execute("SELECT pg_advisory_unlock($1)", key, timeout=timeout)
                except Exception:
                    conn.terminate()  # closing the session releases the lock
