"""Whether a session keeps its own server process: the condition for taking SQLx's migration lock, and for writing.

SQLx's lock (`pg_advisory_lock`) belongs to the server process (backend) that takes it. Through a connection pooler
in transaction mode (PgBouncer or alike) each of our transactions may run on another backend, and between them
ours serves other clients: the lock stays on a pooled backend, where a worker's statements pass it (it is
reentrant) and from which our unlock, sent elsewhere, fails. So a session that locks or writes must first be proven
*pinned*: kept on one backend for its whole life. Comparing our backend's pid across statements (the former check)
only shows how the pooler happened to schedule them: PgBouncer in round robin, or with few connections, gave the
same pid in transaction mode. Here a session is pinned only on evidence that holds whatever the scheduling, and any
doubt refuses the school (`TransactionPooler`, status `pooled`; never retried: the same URL fails the same way),
the fix in the hint: a `direct_url`.

1. Direct: the server sees our own socket. Over TCP, the backend's `inet_client_addr()`/`inet_client_port()` are
   our socket's local address and port; over a Unix socket, the server listens on the port in the socket file's
   name (and, where the role may read `unix_socket_directories`, in its directory). In both, the backend's pid is
   the one in the BackendKeyData the server sent us at start-up (a pooler sends a key of its own). Nothing then
   stands between us and the backend (NAT that keeps the client's address and port is no intermediary). The check
   is folded into the query that takes SQLx's lock (lock.py), which takes the lock only when it holds: no extra
   round trip; elsewhere (`ensure_pinned`, before CREATE DATABASE) it is one query.
2. Not direct (a pooler, a TCP proxy, NAT that rewrites): prove, before the lock, that our backend X is not handed
   to other clients (`prove_pinned`). One query on our session notes X and the client backends the server has for
   this database and our role, with a random token in its text. A pool's server connections all log in as one
   role, so these bound the idle connections a pooler could hand out. Then that many plus one probe clients
   connect through the same URL, one after another, each pinned in a read-only transaction reading
   `pg_backend_pid()`. A pooler serves a client from its idle server connections before it opens a new one (LIFO
   or round robin alike), so in transaction pooling X, idle since our query, goes to a probe: proof of pooling,
   refused. In session pooling or through a proxy X stays ours and the probes get other backends. The count could
   be beaten if another client used X meanwhile (taking X out of the pool while the probes asked, then freeing
   it): so, with the probes still pinned, one of them reads X's row in pg_stat_activity, which must still be idle
   with our token query as its last; and our session must still be on X. The margin (one probe more than the
   backends counted, X among them) covers two connections a pooler might open while X ran our own query.
   Doubt refuses too: a probe without a server connection after PROBE_WAIT_S (a pool of one held by us, a full
   pool: a transaction pooler would have handed the idle X out at once), more backends than MAX_PROBES, X's
   activity hidden (track_activities off), a probe that cannot connect.
   Once proven, the limits are set as plain `SET`s: a pooler may have refused them as startup parameters, or
   accepted and dropped them (`ignore_startup_parameters`).

Probes end with a ROLLBACK before they close (a pooler closes a server connection whose client leaves inside a
transaction, and with it any session lock a worker left there); a probe still waiting for a server connection is
dropped before the others let theirs go. Each waits PROBE_WAIT_S at most, so a pool of one costs seconds, not the
pooler's query_wait_timeout.

Read-only commands work through any pooler: our limits travel as `SET LOCAL` inside the one read-only transaction
the work runs in (engine.run_session), and they take no lock.
"""

from __future__ import annotations

import secrets
from dataclasses import replace

import anyio
import asyncpg
from asyncpg.transaction import Transaction

from .connection import Session, close_quietly, describe, open_session, socket_evidence
from .errors import DatabaseError, Interrupted, TransactionPooler

# A probe's wait for its server connection (and its login), at most: a pooler hands an idle one out at once.
PROBE_WAIT_S = 3.0
# More backends of this database and role than this: too many probes to open; refused (give a direct_url).
MAX_PROBES = 32

_PID = "SELECT pg_backend_pid()"
# Our backend, and our role's client backends of this database (ours included): the idle server connections a
# pooler could hand out are among them. The token makes this our backend's last query, recognisable.
_COUNT = """SELECT pg_backend_pid() AS pid, array(
  SELECT a.pid FROM pg_stat_activity a
  WHERE a.datname = current_database() AND a.usename = session_user AND a.backend_type = 'client backend'
) AS pids /* orchestrator pinning probe {token} */"""
_ROW_OF = "SELECT state, query FROM pg_stat_activity WHERE pid = $1"
_HINT = (
    "give this school a `direct_url` in the registry (the database server itself, not the pooler) for the commands "
    "that write; `url` stays what the school's workers use. Read-only commands (status, plan, audit) work through "
    "the pooler"
)


# Over TCP: the backend's client address and port are our socket's. Over a Unix socket: the server listens on the
# socket file's port and, where the role may read unix_socket_directories (pg_read_all_settings), in its directory.
# Both: the backend is the one whose pid the server sent at start-up. Kept small: each session plans it once.
_DIRECT_TCP = (
    "coalesce(pg_backend_pid() = ${0} AND inet_client_addr() = ${1}::inet AND inet_client_port() = ${2}, false)"
)
_DIRECT_UNIX = """coalesce(pg_backend_pid() = ${0} AND inet_client_addr() IS NULL
  AND current_setting('port')::int = ${2}
  AND (NOT EXISTS (SELECT FROM pg_settings WHERE name = 'unix_socket_directories')
    OR ${1}::text IN (SELECT rtrim(trim(both ' "' FROM d), '/')
      FROM pg_settings, unnest(string_to_array(setting, ',')) d WHERE name = 'unix_socket_directories')), false)"""


def direct_check(conn: asyncpg.Connection, first: int) -> tuple[str, tuple[object, ...]] | None:
    """A boolean SQL expression true when the server sees `conn`'s own socket (see the module's docstring), with
    its parameters, numbered from `$first`; None when there is nothing left to check: the session is proven pinned
    already, or it is not one of ours (a plain connection: its opener answers for it)."""
    if not isinstance(conn, Session) or conn.pinned:
        return None
    where, port, unix = socket_evidence(conn)
    expression = (_DIRECT_UNIX if unix else _DIRECT_TCP).format(first, first + 1, first + 2)
    return expression, (conn.get_server_pid(), where, port)


async def ensure_pinned(conn: asyncpg.Connection) -> None:
    """Before a session locks or writes: return once it is proven to keep its own server process, else raise
    TransactionPooler. One query when the connection is direct; the probes otherwise."""
    check = direct_check(conn, 1)
    if check is None:
        return
    assert isinstance(conn, Session)
    if not conn.behind_pooler and await conn.fetchval(f"SELECT {check[0]}", *check[1]):
        mark_pinned(conn)
        return
    await prove_pinned(conn)


def mark_pinned(conn: asyncpg.Connection) -> None:
    """The server saw this session's own socket (`direct_check` held)."""
    if isinstance(conn, Session):
        conn.pinned = True


async def prove_pinned(conn: asyncpg.Connection) -> None:
    """The probes of the module's docstring, for a session that does not reach the server directly."""
    assert isinstance(conn, Session)
    token = secrets.token_hex(8)  # hex: safe in the query's text, where pg_stat_activity shows it
    row = await conn.fetchrow(_COUNT.format(token=token))
    assert row is not None
    ours, backends = row["pid"], list(row["pids"])
    if len(backends) + 1 > MAX_PROBES:
        raise _doubt(conn, f"the server has {len(backends)} sessions of this role on the database, too many to probe")
    async with _Probes(conn) as probes:
        for _ in range(len(backends) + 1):
            if await probes.add() == ours:
                raise _proven(conn)
        state, query = await probes.row_of(ours)
    if state in (None, "disabled"):
        raise _doubt(conn, "pg_stat_activity does not show our server process's activity (track_activities off?)")
    if state != "idle" or token not in (query or ""):
        raise _proven(conn)  # another client used our server process while we were idle
    if await conn.fetchval(_PID) != ours:
        raise _proven(conn)
    conn.pinned = True
    # Our limits, as SQL: whatever stands between (session pooling, a proxy) may have refused them at start-up, or
    # accepted and dropped them (PgBouncer's ignore_startup_parameters), leaving lock_timeout and statement_timeout 0.
    await conn.execute(conn.settings.set_commands(local=False))


class _Probes:
    """Probe clients through the session's URL, each pinned in a read-only transaction, rolled back and closed on
    exit. One still waiting for a server connection is dropped at once, while the others still hold theirs (it must
    not be handed one of those as we let go of them)."""

    def __init__(self, conn: Session) -> None:
        self._conn = conn
        self._settings = replace(conn.settings, connect_timeout=min(conn.settings.connect_timeout, PROBE_WAIT_S))
        self._held: list[tuple[Session, Transaction]] = []

    async def add(self) -> int:
        """One more probe; its server process's pid."""
        probe: Session | None = None
        try:
            with anyio.fail_after(PROBE_WAIT_S):
                probe = await open_session(self._conn.target, self._settings, read_only=True)
                transaction = probe.transaction(readonly=True)
                await transaction.start()
                pid: int = await probe.fetchval(_PID)
        except BaseException as exc:
            if probe is not None:
                await _drop(probe)  # still waiting for a server connection (or failed): it holds none
            raise self._doubt(exc) from None
        self._held.append((probe, transaction))
        return pid

    async def row_of(self, pid: int) -> tuple[str | None, str | None]:
        """`pid`'s state and last query, seen from a probe (its transaction's first look at pg_stat_activity)."""
        try:
            row = await self._held[0][0].fetchrow(_ROW_OF, pid, timeout=PROBE_WAIT_S)
        except BaseException as exc:
            raise self._doubt(exc) from None
        return (row["state"], row["query"]) if row is not None else (None, None)

    def _doubt(self, exc: BaseException) -> BaseException:
        """What a probe's failure means: doubt (refused), unless the run is being interrupted."""
        if isinstance(exc, TimeoutError):
            return _doubt(self._conn, f"a probe got no server connection within {PROBE_WAIT_S:g}s")
        if isinstance(exc, (DatabaseError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError)) and not isinstance(
            exc, Interrupted
        ):
            return _doubt(self._conn, f"a probe failed: {self._conn.target.scrub(describe(exc))}")
        return exc

    async def __aenter__(self) -> _Probes:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with anyio.CancelScope(shield=True):
            for probe, transaction in self._held:
                with anyio.move_on_after(PROBE_WAIT_S):
                    await transaction.rollback()
                await close_quietly(probe)


async def _drop(probe: Session) -> None:
    probe.terminate()
    await close_quietly(probe)  # only forgets it: the run's session group must not wait for it


def _proven(conn: Session) -> TransactionPooler:
    target = conn.target
    return TransactionPooler(
        f"{target.server} is a connection pooler in transaction mode (PgBouncer or alike): our server process was "
        f"handed to another client, so SQLx's migration lock on {target.database} cannot be trusted through it; "
        "nothing was written",
        hint=_HINT,
    )


def _doubt(conn: Session, why: str) -> TransactionPooler:
    target = conn.target
    return TransactionPooler(
        f"{target.server} is not the database server itself (it sees another client socket: a pooler or a proxy), "
        f"and it could not be proven that our session keeps its own server process there ({why}): SQLx's migration "
        f"lock on {target.database} would not be trusted through it; nothing was written",
        hint=_HINT,
    )
