"""Helpers for tests that talk to the throwaway PostgreSQL servers started by conftest.py.

Import them as `from pgfixtures import fetch, run_sync, ...` (tests/ is on sys.path under pytest).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit, urlunsplit

import anyio
import asyncpg

from orchestrator import scratch
from orchestrator.template import parse_spare

PG_PASSWORD = "TopSecretPw42"
# PostgreSQL truncates identifiers beyond 63 bytes (NAMEDATALEN - 1).
MAX_IDENT = 63

T = TypeVar("T")
_counter = itertools.count(1)


def run_sync(coro: Coroutine[Any, Any, T] | Callable[..., Awaitable[T]], *args: Any) -> T:
    """Run a coroutine (or an async function with its arguments) to completion from synchronous test code."""
    if callable(coro):
        func = coro
        return anyio.run(lambda: _await(func(*args)))
    return anyio.run(_await, coro)


async def _await(aw: Awaitable[T]) -> T:
    return await aw


def unique_db_name(label: str) -> str:
    """`t_<label>_<n>`: lowercase, [a-z0-9_] only, at most 63 characters, unique within this process."""
    suffix = f"_{next(_counter)}"
    clean = re.sub(r"[^a-z0-9_]+", "_", label.lower()).strip("_") or "db"
    return f"t_{clean}"[: MAX_IDENT - len(suffix)] + suffix


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def with_database(url: str, database: str) -> str:
    """The same server URL (user, password, host, port kept) pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(database, safe="")))


def database_of(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


async def fetch(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    """Run one query on a fresh connection and return its rows."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


async def execute(url: str, sql: str, *args: Any) -> str:
    """Run a statement (or, without arguments, a multi-statement script); returns the command status."""
    conn = await asyncpg.connect(url)
    try:
        return await conn.execute(sql, *args)
    finally:
        await conn.close()


def fetch_sync(url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    return run_sync(fetch, url, sql, *args)


def fetchval_sync(url: str, sql: str, *args: Any) -> Any:
    """First column of the first row, or None when there is no row."""
    rows = fetch_sync(url, sql, *args)
    return rows[0][0] if rows else None


def execute_sync(url: str, sql: str, *args: Any) -> str:
    return run_sync(execute, url, sql, *args)


def ledger(url: str) -> list[tuple[int, str, bool, bytes]]:
    """The database's _sqlx_migrations rows in SQLx's own columns (no execution time), by version."""
    rows = fetch_sync(url, "SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")
    return [(r["version"], r["description"], r["success"], bytes(r["checksum"])) for r in rows]


def spares_of(server_url: str, template: str) -> list[str]:
    """The ready copies (spares) of `template` on the server of `server_url`, by name; each is closed to
    connections, as a spare always is."""
    rows = fetch_sync(
        with_database(server_url, "postgres"),
        "SELECT datname, datallowconn, shobj_description(oid, 'pg_database') AS comment FROM pg_database "
        "ORDER BY datname",
    )
    ours = [r for r in rows if (parse_spare(r["comment"]) or ("",))[0] == template]
    assert not any(r["datallowconn"] for r in ours), "a spare open to connections"
    return [r["datname"] for r in ours]


async def create_database(server_url: str, name: str) -> str:
    """Create an empty database `name` on the server of `server_url`; returns its URL."""
    await execute(with_database(server_url, "postgres"), f"CREATE DATABASE {quote_ident(name)}")
    return with_database(server_url, name)


async def drop_database(server_url: str, name: str) -> None:
    """Drop `name` if it exists, disconnecting whoever is still connected (tests may leak connections)."""
    await execute(with_database(server_url, "postgres"), f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


async def database_exists(server_url: str, name: str) -> bool:
    rows = await fetch(with_database(server_url, "postgres"), "SELECT 1 FROM pg_database WHERE datname = $1", name)
    return bool(rows)


async def abandoned_scratch(server_url: str, purpose: str, *, template: bool = False) -> str:
    """A scratch database as a maker that died (kill -9, a lost session) leaves it: made by the tool's own
    `scratch.make` (named, marked), then its maker's session ended. Returns its name once the server has let go of
    the maker's lock."""
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        made = await scratch.make(conn, purpose)
        if template:  # a template being replaced, caught between its rename and its drop
            await conn.execute(f"ALTER DATABASE {quote_ident(made.name)} IS_TEMPLATE true")
    finally:
        await conn.close()
    await until_unlocked(server_url, made.name)
    return made.name


async def until_unlocked(server_url: str, name: str) -> None:
    """Wait (at most 10 s) until no session holds the maker's lock of scratch database `name`: a backend whose
    client is gone lets go of its locks as it exits, a moment later."""
    conn = await asyncpg.connect(with_database(server_url, "postgres"))
    try:
        with anyio.fail_after(10):
            while await conn.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = $1 AND objid = $2",
                scratch.LOCK_CLASS,
                scratch.lock_key(name),
            ):
                await anyio.sleep(0.02)
    finally:
        await conn.close()


def drop_template(server_url: str, template: str) -> None:
    """Drop a test's template and its spares (a template must stop being one before it can be dropped)."""
    for database in [*spares_of(server_url, template), template]:
        execute_sync(server_url, f"ALTER DATABASE {quote_ident(database)} IS_TEMPLATE false")
        execute_sync(server_url, f"DROP DATABASE {quote_ident(database)} WITH (FORCE)")
