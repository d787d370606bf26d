"""The databases the tool makes for itself, and how it knows them: by record, never by name.

Audit references, rehearsals, template builds, spares under construction and a template on its way out live under a
scratch name (SCRATCH_PREFIX + purpose + `_<unix time>_<8 hex>`). Whoever makes one (`make`, `take_over`):
- first takes a session-level advisory lock keyed on the name, in its maintenance session, and holds it for the
  database's whole life (until it is dropped, or renamed into a template or a spare): the lock says its maker lives;
- right after CREATE DATABASE marks it, in its comment (`orchestrator scratch: {...}`: purpose, host, process, the
  creating backend, time).
The clean-up (`drop_abandoned`, run by every command that makes such databases before it makes one) drops a database
only when it has the scratch shape, carries the mark, and its lock can be taken: its maker is gone (killed, its
session ended), however recently. A database of that shape without the mark is left alone with a warning: nothing
proves it ours (a school named `orchestrator_school_2024_deadbeef`, a leftover of an older version of the tool). The
registry refuses school and template names starting with TOOL_PREFIX in any case, so no school ever looks like ours.

Why a comment and not a table in the maintenance database: a comment needs only what making the database needs (its
owner may comment on it; a role with CREATEDB often may not create tables in `postgres`), it is read with the rest of
pg_database in one query, and it goes away with the database (no row outlives it). Why a lock and not an age: an
age cannot tell a killed run from a slow one, so it waited hours and then could not tell either; a lock is released
by the server the moment the maker's session ends.

The gap: a maker killed between CREATE DATABASE's commit and the COMMENT (one round trip) leaves an unmarked database,
never dropped (the warning names it). A long copy is not such a gap: the maker's session asks the server to watch for
a vanished client (`client_connection_check_interval`, PostgreSQL 14+), which then abandons the CREATE DATABASE.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime

import anyio
import asyncpg

from .connection import Session, SessionSettings, close_quietly, describe, open_session, quote_ident
from .logsetup import get_logger
from .pooler import ensure_pinned
from .target import DatabaseTarget

log = get_logger("orchestrator.scratch")

TOOL_PREFIX = "orchestrator_"  # every database the tool makes for itself: never a school's, never a template's name
SCRATCH_PREFIX = TOOL_PREFIX  # + purpose + _<unix time created>_<8 hex>
SCRATCH_SHAPE = rf"^{SCRATCH_PREFIX}[a-z]+_[0-9]+_[0-9a-f]{{8}}$"  # a POSIX regex, for pg_database
MARK_PREFIX = "orchestrator scratch: "
LOCK_CLASS = 0x4F524353  # 'ORCS': the first of two int4 keys (the template lock's class differs; SQLx uses a bigint)
_CLIENT_CHECK_MS = 1000  # how often the server checks, during a long statement, that the maker is still there
_SHAPE = re.compile(SCRATCH_SHAPE)
_warned: set[str] = set()  # unmarked databases of our shape already named in a warning by this process


def is_reserved(name: str) -> bool:
    """Whether `name` is of the tool's own kind (in any case): never a school's database nor a template's name."""
    return name.lower().startswith(TOOL_PREFIX)


def scratch_name(purpose: str) -> str:
    """A new scratch database name (purpose: lowercase letters)."""
    return f"{SCRATCH_PREFIX}{purpose}_{int(time.time())}_{secrets.token_hex(4)}"


def lock_key(name: str) -> int:
    """The second key of a scratch database's lock: positive, so pg_locks shows it as it is."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


def mark_text(purpose: str, backend: int) -> str:
    record = {
        "purpose": purpose,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "backend": backend,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    return MARK_PREFIX + json.dumps(record, sort_keys=True)


def parse_mark(comment: str | None) -> dict[str, object] | None:
    """The record of a scratch database's mark; None: no mark of ours."""
    if not comment or not comment.startswith(MARK_PREFIX):
        return None
    try:
        record = json.loads(comment.removeprefix(MARK_PREFIX))
    except ValueError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("purpose"), str) else None


def literal(text: str) -> str:
    """A string literal (standard_conforming_strings is on in our sessions): COMMENT takes no parameters."""
    return "'" + text.replace("'", "''") + "'"


@dataclass
class Scratch:
    """A scratch database this session made and holds the lock of."""

    name: str
    kept: bool = False  # handed over (renamed into a template or a spare, or given its old name back): not dropped


@asynccontextmanager
async def maker_session(maintenance: DatabaseTarget, settings: SessionSettings) -> AsyncIterator[Session]:
    """A session on the server's maintenance database for making scratch databases: closed however the block ends,
    even cancelled (its locks say its maker lives; they must go with it, not linger in a forgotten connection).
    Proven pinned first (pooler.ensure_pinned): through a transaction pooler those locks would mean nothing, and
    a refused school gets nothing created. Under `keeping(sessions)` (the service) a block that ended normally, out
    of any transaction, gives its session back for the next one instead (its scratch locks were released by
    `discard`, the template's lock by `template_lock`); any other end closes it, as without."""
    kept = _KEPT.get()
    key = (maintenance.dsn, settings)
    conn = await kept.take(key) if kept is not None else None
    if conn is None:
        conn = await open_session(maintenance, settings)
        fresh = True
    else:
        fresh = False
    done = False
    try:
        if fresh:
            await ensure_pinned(conn)
        yield conn
        done = True
    finally:
        with anyio.CancelScope(shield=True):
            if not (done and kept is not None and kept.give_back(key, conn)):
                await close_quietly(conn)


class KeptSessions:
    """Maintenance sessions kept open between onboardings (`orchestrator serve`): a connection and its login cost
    more than the rest of taking a spare. At most `per_key` idle sessions per server and role; one idle for longer
    than IDLE_CHECK_S is asked a `SELECT 1` before it is used again (a restarted server closed it)."""

    IDLE_CHECK_S = 30.0

    def __init__(self, per_key: int = 4) -> None:
        self.per_key = per_key
        self._idle: dict[tuple[str, SessionSettings], list[tuple[Session, float]]] = {}

    async def take(self, key: tuple[str, SessionSettings]) -> Session | None:
        idle = self._idle.get(key, [])
        while idle:
            conn, since = idle.pop()
            if conn.is_closed():
                continue
            if time.monotonic() - since > self.IDLE_CHECK_S:
                try:
                    with anyio.fail_after(conn.settings.bookkeeping_timeout or 5.0):
                        await conn.fetchval("SELECT 1")
                except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                    conn.terminate()
                    continue
            return conn
        return None

    def give_back(self, key: tuple[str, SessionSettings], conn: Session) -> bool:
        """False: not kept (closed, in a transaction, or enough idle ones already): the caller closes it."""
        idle = self._idle.setdefault(key, [])
        if conn.is_closed() or conn.is_in_transaction() or len(idle) >= self.per_key:
            return False
        idle.append((conn, time.monotonic()))
        return True

    def close(self) -> None:
        for idle in self._idle.values():
            for conn, _ in idle:
                conn.terminate()  # its locks, if any, go with it
        self._idle.clear()


_KEPT: ContextVar[KeptSessions | None] = ContextVar("orchestrator_kept_sessions", default=None)


@contextmanager
def keeping(sessions: KeptSessions) -> Iterator[None]:
    """Within the block (and the tasks started in it), maintenance sessions are reused through `sessions`."""
    token = _KEPT.set(sessions)
    try:
        yield
    finally:
        _KEPT.reset(token)


async def _claim(conn: asyncpg.Connection, purpose: str) -> str:
    """A new scratch name whose lock this session now holds."""
    for _ in range(5):
        name = scratch_name(purpose)
        if await conn.fetchval("SELECT pg_try_advisory_lock($1, $2)", LOCK_CLASS, lock_key(name)):
            return name
    raise asyncpg.LockNotAvailableError("no free scratch lock after 5 names")  # only if 5 crc32 collide with live ones


async def make(conn: asyncpg.Connection, purpose: str, clause: str = "") -> Scratch:
    """Create a new database of ours in `conn`'s session (the server's maintenance database): its name locked, then
    CREATE DATABASE (`clause`: e.g. ` TEMPLATE x`), then marked. The session must stay open until `discard`: it is
    the proof that the maker lives. Raises the driver's error (after dropping whatever this call made)."""
    made = Scratch(await _claim(conn, purpose))
    try:
        await _watch_client(conn)
        await conn.execute(f"CREATE DATABASE {quote_ident(made.name)}{clause}")
        mark = literal(mark_text(purpose, backend(conn)))
        await conn.execute(f"COMMENT ON DATABASE {quote_ident(made.name)} IS {mark}")
    except BaseException:
        # Also after a cancelled CREATE that the server finished: the name is fresh and locked by us, so a database
        # under it is this call's.
        await discard(conn, made)
        raise
    return made


async def take_over(conn: asyncpg.Connection, name: str, purpose: str, *, open_it: bool = False) -> Scratch:
    """Rename an existing database of ours (the template being replaced, a spare being checked) to a new scratch
    name, marked (and `open_it`: open to connections), in one transaction: from then on it is scratch (dropped by
    `discard`, or by the clean-up if this process dies)."""
    made = Scratch(await _claim(conn, purpose))
    opened = f"; ALTER DATABASE {quote_ident(made.name)} ALLOW_CONNECTIONS true" if open_it else ""
    try:
        await conn.execute(
            f"COMMENT ON DATABASE {quote_ident(name)} IS {literal(mark_text(purpose, backend(conn)))};"
            f" ALTER DATABASE {quote_ident(name)} RENAME TO {quote_ident(made.name)}{opened}"
        )
    except BaseException:
        await discard(conn, made)  # renamed after all (a cancel that came too late): dropped; else nothing is
        raise
    return made


async def discard(conn: asyncpg.Connection, made: Scratch) -> None:
    """Drop `made` (unless kept) and release its lock; never raises, whatever cancels the caller. A failed drop is
    logged: once this session ends, the next clean-up drops it."""
    with anyio.CancelScope(shield=True):
        try:
            if not made.kept:
                await _drop(conn, made.name)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("scratch.not_dropped", database=made.name, error=describe(exc))
        with suppress(
            asyncpg.PostgresError, asyncpg.InterfaceError, OSError
        ):  # else the session is gone, with its locks
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, lock_key(made.name))


def backend(conn: asyncpg.Connection) -> int:
    return int(conn.get_server_pid())


async def _watch_client(conn: asyncpg.Connection) -> None:
    """Have the server give up a long statement (a template's copy) once this process is gone."""
    if conn.get_server_version().major < 14:
        return
    with suppress(asyncpg.PostgresError):  # a platform without the check: the gap is the whole copy, as before 14
        await conn.execute(f"SET client_connection_check_interval = {_CLIENT_CHECK_MS}")


async def _drop(conn: asyncpg.Connection, name: str) -> None:
    """Drop a scratch database (a template flag taken off first: a template cannot be dropped)."""
    if await conn.fetchval("SELECT datistemplate FROM pg_database WHERE datname = $1", name):
        await conn.execute(f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false")
    await drop_database(conn, name)


# The sessions on a database that this role may end (pg_terminate_backend's own rule).
_END_OWN_SESSIONS = """
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
WHERE datname = $1 AND pid <> pg_backend_pid() AND usesysid IS NOT NULL AND pg_has_role(usesysid, 'USAGE')
"""


async def drop_database(conn: asyncpg.Connection, name: str) -> None:
    """DROP DATABASE a database of ours (scratch, spare) WITH (FORCE): the sessions left on one are its maker's (a
    statement of a killed maker runs on, orphaned, until the server notices), and nobody else has business there.

    FORCE refuses outright, for a role that is not a superuser, when any session there is not one it may end, and an
    autovacuum worker (which belongs to no role) is such a session: a freshly built template is just what
    autovacuum visits. Then the role ends the sessions it may end and drops without FORCE, which asks autovacuum to
    leave and waits for it (the server's own 5 s); a session of another role is still there then, and the drop fails
    (ObjectInUseError), as it should."""
    try:
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    except asyncpg.InsufficientPrivilegeError:
        await conn.execute(_END_OWN_SESSIONS, name)
        await conn.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


# --- the clean-up ---------------------------------------------------------------------------------------------------

CANDIDATES = """
SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname ~ $1
"""

# Take the maker's lock, unless this very session holds it (session locks are re-entrant: it would succeed). CASE,
# not AND: the lock must not be taken (a second time) when the session already holds it.
_TAKE = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()
                         AND classid = $1::int::oid AND objid = $2::int::oid AND objsubid = 2)
            THEN false ELSE pg_try_advisory_lock($1, $2) END
"""
COMMENT_OF = "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1"


async def drop_abandoned(conn: asyncpg.Connection, rows: list[asyncpg.Record] | None = None) -> list[str]:
    """Drop the scratch databases whose maker is gone (see the module's docstring); returns their names. `rows`:
    (datname, comment) of pg_database already read, when the caller's own query brought them along. Failures are
    logged, never raised: the clean-up must not stop the work that runs it."""
    dropped: list[str] = []
    try:
        if rows is None:
            rows = await conn.fetch(CANDIDATES, SCRATCH_SHAPE)
        for row in rows:
            name, comment = row["datname"], row["comment"]
            if not _SHAPE.match(name):
                continue
            if parse_mark(comment) is None:
                _warn_unmarked(name)
                continue
            if await _drop_if_abandoned(conn, name, comment):
                dropped.append(name)
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("scratch.abandoned_not_checked", error=describe(exc))
    if dropped:
        log.info("scratch.abandoned_dropped", databases=dropped)
    return dropped


async def _drop_if_abandoned(conn: asyncpg.Connection, name: str, comment: str) -> bool:
    key = lock_key(name)
    if not await conn.fetchval(_TAKE, LOCK_CLASS, key):
        return False  # its maker lives (or holds another name of the same key: left for later)
    try:
        if await conn.fetchval(COMMENT_OF, name) != comment:
            return False  # renamed or re-marked since we looked
        await _drop(conn, name)
        return True
    except (asyncpg.ObjectInUseError, asyncpg.InsufficientPrivilegeError) as exc:
        log.warning("scratch.abandoned_not_dropped", database=name, error=describe(exc))
        return False
    finally:
        with anyio.CancelScope(shield=True):
            await conn.execute("SELECT pg_advisory_unlock($1, $2)", LOCK_CLASS, key)


def _warn_unmarked(name: str) -> None:
    if name in _warned:
        return
    _warned.add(name)
    log.warning(
        "scratch.unmarked_left_alone",
        database=name,
        message="named like the tool's scratch databases but without its mark: nothing proves it the tool's, so it "
        "is never dropped; drop it by hand if it is a leftover",
    )
