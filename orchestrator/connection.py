"""Opening and closing one session to one database, with our timeouts, and turning driver failures into our errors.

Every message that leaves this module has passed through `target.scrub()`: driver errors can quote the DSN.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

from .errors import ConnectFailed, DatabaseError, DatabaseMissing, Interrupted, Unreachable
from .privileges import permission_denied
from .settings import BUILTIN, Resolved
from .target import DatabaseTarget

APPLICATION_NAME = "orchestrator"

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


def connection_lost(target: DatabaseTarget, exc: BaseException, doing: str) -> Interrupted:
    return Interrupted(
        f"lost the connection to {target.database} on {target.server} while {doing}: {target.scrub(describe(exc))}",
        hint="the server rolled back the open transaction; nothing half-done was kept. Run the command again",
    )


def describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Session(asyncpg.Connection):
    """A connection that knows whether it reached the database through a pooler (PgBouncer refuses startup
    parameters it does not know, such as lock_timeout: our limits then travel as SQL, see pooler.py)."""

    behind_pooler = False


# Servers (host:port) that refused our startup parameters once: poolers. Their next sessions start without them
# at once, instead of paying a refused connection each.
_POOLERS: set[str] = set()
_UNSUPPORTED_STARTUP = "unsupported startup parameter"


async def _connect(target: DatabaseTarget, settings: SessionSettings, *, read_only: bool, pooled: bool) -> Session:
    startup = {"application_name": APPLICATION_NAME} if pooled else settings.server_settings(read_only=read_only)
    conn: Session = await asyncpg.connect(
        dsn=target.dsn,
        timeout=settings.connect_timeout,
        server_settings=startup,
        # Migration SQL runs once, so a cache only holds memory on big fleets; and PgBouncer before 1.21 does not
        # support named prepared statements in transaction mode.
        statement_cache_size=0,
        connection_class=Session,
    )
    conn.behind_pooler = pooled
    return conn


async def open_session(target: DatabaseTarget, settings: SessionSettings, *, read_only: bool = False) -> Session:
    """Connect, or raise Unreachable / DatabaseMissing with a message that says what to do."""
    try:
        try:
            return await _connect(target, settings, read_only=read_only, pooled=target.server in _POOLERS)
        except asyncpg.ProtocolViolationError as exc:
            if _UNSUPPORTED_STARTUP not in str(exc):
                raise
            _POOLERS.add(target.server)
            return await _connect(target, settings, read_only=read_only, pooled=True)
    except asyncpg.ProtocolViolationError as exc:
        if "does not exist" not in str(exc):  # PgBouncer says ERROR where PostgreSQL says FATAL 3D000
            raise _unreachable(target, settings, exc) from None
        raise _missing(target) from None
    except asyncpg.InvalidCatalogNameError:
        raise _missing(target) from None
    except (asyncpg.InvalidPasswordError, asyncpg.InvalidAuthorizationSpecificationError) as exc:
        raise Unreachable(
            f"{target.server} refused the login for {target.database}: {target.scrub(describe(exc))}",
            hint="check the user and password in the URL (or the ${VAR} it comes from)",
        ) from None
    except asyncpg.InsufficientPrivilegeError as exc:  # e.g. no CONNECT on the database
        raise permission_denied(target, exc) from None
    except asyncpg.TooManyConnectionsError as exc:
        raise Unreachable(
            f"{target.server} has no free connection slot: {target.scrub(describe(exc))}",
            hint="lower --concurrency / --per-server, or retry later",
        ) from None
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise _unreachable(target, settings, exc) from None


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
    if conn.is_closed():
        return
    try:
        await conn.close(timeout=5)
    except Exception:
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
