"""Opening and closing one session to one database, with our timeouts, and turning driver failures into our errors.

Every message that leaves this module has passed through `target.scrub()`: driver errors can quote the DSN.

No wait on a server is unbounded: every reply has a client-side deadline derived from the session settings, and
the sessions of a fleet run form a `SessionGroup` that an interrupt can abort at once, even on a frozen server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import anyio
import asyncpg

from . import scram
from .errors import AuthFailed, ConnectFailed, DatabaseError, DatabaseMissing, Interrupted, Unreachable
from .privileges import permission_denied
from .settings import BUILTIN, Resolved
from .target import DatabaseTarget

APPLICATION_NAME = "orchestrator"

scram.install()  # one PBKDF2 per role and server for the whole run, not one per session (see scram.py)

# SQLSTATEs that mean "the session is gone", not "the SQL was wrong".
_CONNECTION_LOST_CLASSES = ("08",)  # connection exceptions
_CONNECTION_LOST_CODES = {"57P01", "57P02", "57P03"}  # admin shutdown, crash shutdown, cannot connect now


@dataclass(frozen=True)
class SessionSettings:
    """Per-session limits. Timeouts in seconds; 0 disables lock_timeout/statement_timeout (PostgreSQL's meaning)."""

    connect_timeout: float = BUILTIN.connect_timeout
    lock_timeout: float = BUILTIN.lock_timeout
    statement_timeout: float = BUILTIN.statement_timeout

    @classmethod
    def of(cls, settings: Resolved) -> SessionSettings:
        return cls(settings.connect_timeout, settings.lock_timeout, settings.statement_timeout)

    def set_commands(self, *, local: bool) -> str:
        """The same limits as SQL, for a session that could not take them as startup parameters (a pooler):
        `SET LOCAL` inside a transaction (transaction pooling), or `SET` for the session (session pooling)."""
        scope = "SET LOCAL" if local else "SET"
        return (
            f"{scope} lock_timeout = {int(self.lock_timeout * 1000)}; "
            f"{scope} statement_timeout = {int(self.statement_timeout * 1000)}"
        )

    @property
    def reply_timeout(self) -> float | None:
        """Client-side deadline for any reply: the server's own statement_timeout plus connect_timeout for the
        network. A server that answers never hits it; a frozen one does. None when statement_timeout is 0
        (unlimited): a migration may then run for hours, and only an interrupt ends the wait."""
        return self.statement_timeout + self.connect_timeout if self.statement_timeout > 0 else None

    @property
    def bookkeeping_timeout(self) -> float | None:
        """Deadline for our own small queries (ledger, lock, history rows): they take milliseconds and wait for a
        table lock at most lock_timeout, so `status` on a frozen server gives up in seconds, not minutes."""
        return self.lock_timeout + self.connect_timeout if self.lock_timeout > 0 else self.reply_timeout

    def server_settings(self, *, read_only: bool = False) -> dict[str, str]:
        settings = {
            "application_name": APPLICATION_NAME,
            "lock_timeout": str(int(self.lock_timeout * 1000)),
            "statement_timeout": str(int(self.statement_timeout * 1000)),
            # sqlx.insert_applied_literal relies on it (it is PostgreSQL's default since 9.1).
            "standard_conforming_strings": "on",
        }
        if read_only:
            # The server itself then refuses any write in this session: the audit's guarantee.
            settings["default_transaction_read_only"] = "on"
        return settings


def is_connection_lost(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state in _CONNECTION_LOST_CODES or state.startswith(_CONNECTION_LOST_CLASSES)
    return isinstance(exc, (asyncpg.InterfaceError, ConnectionError, OSError, TimeoutError))


def is_no_answer(exc: BaseException) -> bool:
    """The server gave no answer: a client-side deadline passed (the driver's only TimeoutError), or a connection
    failed at the network level (ConnectFailed). See DatabaseError.no_answer."""
    return exc.no_answer if isinstance(exc, DatabaseError) else isinstance(exc, TimeoutError)


def connection_lost(target: DatabaseTarget, exc: BaseException, doing: str) -> Interrupted:
    silent = is_no_answer(exc)
    cause = (
        "the server stopped answering (no reply within the client-side deadline)"
        if silent
        else target.scrub(describe(exc))
    )
    error = Interrupted(
        f"lost the connection to {target.database} on {target.server} while {doing}: {cause}",
        hint="the server rolls back the open transaction; nothing half-done was kept. Run the command again",
    )
    error.no_answer = silent
    return error


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Session(asyncpg.Connection):
    """A connection that knows whether it reached the database through a pooler (PgBouncer refuses startup
    parameters it does not know, such as lock_timeout: our limits then travel as SQL, see pooler.py), whether it is
    proven to keep its own server process (`pinned`, pooler.py: the condition for locking and writing), and the
    target and settings it was opened with (the pooler's probes open more sessions alike)."""

    behind_pooler = False
    pinned = False
    target: DatabaseTarget
    settings: SessionSettings


# Servers (host:port) that refused our startup parameters once: poolers. Their next sessions start without them
# at once, instead of paying a refused connection each.
_POOLERS: set[str] = set()
_UNSUPPORTED_STARTUP = "unsupported startup parameter"


async def _connect(target: DatabaseTarget, settings: SessionSettings, *, read_only: bool, pooled: bool) -> Session:
    startup = {"application_name": APPLICATION_NAME} if pooled else settings.server_settings(read_only=read_only)
    conn: Session = await asyncpg.connect(
        dsn=target.dsn,
        timeout=settings.connect_timeout,
        command_timeout=settings.reply_timeout,
        server_settings=startup,
        # PgBouncer before 1.21 does not support named prepared statements in transaction mode: none through a
        # pooler. Elsewhere the driver's cache stays on: without it every statement is also closed explicitly,
        # one more message per query (a session lives for one school, so the cache holds a few statements).
        statement_cache_size=0 if pooled else 16,
        connection_class=Session,
    )
    conn.behind_pooler = pooled
    conn.target, conn.settings = target, settings
    return conn


def socket_evidence(conn: asyncpg.Connection) -> tuple[str, int, bool]:
    """What the server sees of this connection's socket when nothing stands between: over TCP our socket's local
    address and port (False); over a Unix socket its directory and the port in its file name (True)."""
    transport = conn._transport  # type: ignore[attr-defined]  # asyncpg shows no socket; its transport does
    peer = transport.get_extra_info("peername")
    if isinstance(peer, str):  # a Unix socket: DIRECTORY/.s.PGSQL.PORT
        directory, _, name = peer.rpartition("/")
        return directory.rstrip("/"), int(name.rpartition(".")[2]), True
    host, port = transport.get_extra_info("sockname")[:2]
    return host.partition("%")[0], int(port), False  # a link-local zone is no part of the address


def known_pooler(target: DatabaseTarget) -> bool:
    """Whether `target`'s server answered as a connection pooler in this process."""
    return target.server in _POOLERS


async def open_session(target: DatabaseTarget, settings: SessionSettings, *, read_only: bool = False) -> Session:
    """Connect, or raise Unreachable / DatabaseMissing with a message that says what to do."""
    group = current_group()
    if group.aborted:
        raise Interrupted(f"not connecting to {target.database} on {target.server}: the run was interrupted")
    try:
        try:
            conn = await _connect(target, settings, read_only=read_only, pooled=target.server in _POOLERS)
        except asyncpg.ProtocolViolationError as exc:
            if _UNSUPPORTED_STARTUP not in str(exc):
                raise
            _POOLERS.add(target.server)
            conn = await _connect(target, settings, read_only=read_only, pooled=True)
    except asyncpg.ProtocolViolationError as exc:
        # PgBouncer says ERROR 08P01 where PostgreSQL says FATAL 3D000 or 28P01.
        if "authentication failed" in str(exc):
            raise _login_refused(target, exc) from None
        if "does not exist" not in str(exc):
            raise _unreachable(target, settings, exc) from None
        raise _missing(target) from None
    except asyncpg.InvalidCatalogNameError:
        raise _missing(target) from None
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise _login_refused(target, exc) from None
    except asyncpg.InsufficientPrivilegeError as exc:  # e.g. no CONNECT on the database
        raise permission_denied(target, exc) from None
    except asyncpg.TooManyConnectionsError as exc:
        raise Unreachable(
            f"{target.server} has no free connection slot: {target.scrub(describe(exc))}",
            hint="lower --concurrency / --per-server, or retry later",
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unreachable(target, settings, exc) from None
    group.opened(conn)
    return conn


def _login_refused(target: DatabaseTarget, exc: BaseException) -> AuthFailed:
    return AuthFailed(
        f"{target.server} refused the login for {target.database}: {target.scrub(describe(exc))}",
        hint="check the role and password in the school's URL (its registry entry, or -D; or the ${VAR} it "
        "comes from), and that the server's pg_hba.conf (or the pooler's auth_file) lets that role in from here",
    )


def _missing(target: DatabaseTarget) -> DatabaseMissing:
    return DatabaseMissing(
        f"database {target.database} does not exist on {target.server}",
        hint="new school? `orchestrator provision --tenant ID` (or `migrate --create-missing`); if it existed "
        "before, its database was lost: restore it from backup (it is never re-created without being asked)",
    )


def _unreachable(target: DatabaseTarget, settings: SessionSettings, exc: BaseException) -> Unreachable:
    network = isinstance(exc, (OSError, TimeoutError))
    return (ConnectFailed if network else Unreachable)(
        f"cannot connect to {target.database} on {target.server}: {target.scrub(describe(exc))}",
        hint="is the server up and reachable from here? (checked after "
        f"{settings.connect_timeout:g}s; raise --connect-timeout for slow networks)",
    )


async def close_quietly(conn: asyncpg.Connection) -> None:
    """Close, and if a polite close is not possible, drop the socket: the server then releases our locks."""
    group = current_group()
    group.closed(conn)
    if conn.is_closed():
        return
    if group.aborted:
        conn.terminate()  # no goodbye to a server that may be frozen
        return
    try:
        await conn.close(timeout=5)
    except Exception:
        conn.terminate()


def drop_if_unresponsive(conn: asyncpg.Connection, exc: BaseException) -> None:
    """After a reply deadline passed the session is of no more use: asyncpg would make every later query wait for
    a cancel the server may never acknowledge. Closing it ends that wait, and the server's session with its locks
    (an open transaction rolls back)."""
    if isinstance(exc, TimeoutError):
        conn.terminate()


@asynccontextmanager
async def session(target: DatabaseTarget, settings: SessionSettings) -> AsyncIterator[Session]:
    conn = await open_session(target, settings)
    try:
        yield conn
    finally:
        await close_quietly(conn)


def as_database_error(target: DatabaseTarget, exc: BaseException, doing: str) -> DatabaseError:
    """Map an unexpected driver failure to our hierarchy, password scrubbed."""
    if isinstance(exc, DatabaseError):
        return exc
    if is_connection_lost(exc):
        return connection_lost(target, exc, doing)
    if isinstance(exc, asyncpg.InsufficientPrivilegeError):
        return permission_denied(target, exc)
    return DatabaseError(
        f"{doing} on {target.database} failed: {target.scrub(describe(exc))}",
        hint="see the server log for details; the run can be repeated safely",
    )


def quote_ident(name: str) -> str:
    """Quote an identifier the way PostgreSQL's quote_ident() does, always."""
    return '"' + name.replace('"', '""') + '"'


# --- aborting every session of a run ------------------------------------------------------------------------------

# After an abort's cancel requests, how long a live server gets to acknowledge them before the transports are
# closed anyway (a frozen server never acknowledges).
ABORT_CANCEL_S = 2.0


class SessionGroup:
    """The sessions of one run, so that an interrupt can end them all: `abort()` cancels the work in each (asyncpg
    then sends the server a CancelRequest for the running statement), waits briefly, then closes the transports.
    Every wait is bounded, so a frozen server cannot hold the process. After an abort no new session opens."""

    def __init__(self) -> None:
        self.aborted = False
        self._scopes: set[anyio.CancelScope] = set()
        self._connections: set[asyncpg.Connection] = set()

    @contextmanager
    def abortable(self) -> Iterator[anyio.CancelScope]:
        """Run one database's work inside a scope that `abort()` cancels."""
        with anyio.CancelScope() as scope:
            if self.aborted:
                scope.cancel()
            self._scopes.add(scope)
            try:
                yield scope
            finally:
                self._scopes.discard(scope)

    def opened(self, conn: asyncpg.Connection) -> None:
        self._connections.add(conn)

    def closed(self, conn: asyncpg.Connection) -> None:
        self._connections.discard(conn)

    async def abort(self) -> None:
        """Cancel, then close: returns once every abortable scope has ended, or after a bounded wait."""
        self.aborted = True
        for scope in list(self._scopes):
            scope.cancel()
        await self._wait_until(lambda: not self._connections)
        for conn in list(self._connections):
            conn.terminate()
            self._connections.discard(conn)
        await self._wait_until(lambda: not self._scopes)

    @staticmethod
    async def _wait_until(done: Callable[[], bool]) -> None:
        with anyio.move_on_after(ABORT_CANCEL_S):
            while not done():
                await anyio.sleep(0.02)


_GROUP: ContextVar[SessionGroup | None] = ContextVar("orchestrator_session_group", default=None)


@asynccontextmanager
async def session_group() -> AsyncIterator[SessionGroup]:
    """Make a new group current for the sessions opened inside (tasks started inside inherit it). Asynchronous
    only so that it shares one `async with` with the task group it is made for."""
    group = SessionGroup()
    token = _GROUP.set(group)
    try:
        yield group
    finally:
        _GROUP.reset(token)


def current_group() -> SessionGroup:
    """The run's group; outside a run, a group of their own that nobody aborts."""
    return _GROUP.get() or SessionGroup()
