"""Connection poolers (PgBouncer) between us and a school's database.

Read-only commands work through any pooler: our limits travel as `SET LOCAL` inside the one read-only transaction
the work runs in (a pooler in transaction mode may hand each transaction to another server connection, so
session-level settings would land elsewhere).

Commands that take SQLx's migration lock must never trust it through transaction pooling: `pg_advisory_lock` is
held by the server connection, which the pooler hands to other clients after the transaction; an unlock from
another connection fails. The detection, run only for sessions that reached a pooler (it refused our startup
parameters, see connection.open_session):
1. note our session's server process, `pg_backend_pid()` (one autocommit statement: in transaction mode the
   server connection goes back to the pool right after);
2. open a second client connection through the same pooler and, inside a transaction (which pins its server
   connection), read its server process;
3. read our session's server process again.
In session mode (safe) our session keeps its server connection for its lifetime: step 3 equals step 1, and the
second client never gets it. In transaction mode PgBouncer reuses the most recently released server connection
(LIFO, its default `server_round_robin = 0`): the second client gets ours (2 equals 1), and our next statement gets
another (3 differs from 1). Either sign means transaction (or statement) pooling. Two rounds are made.
"""

from __future__ import annotations

from .connection import Session, SessionSettings, close_quietly, open_session
from .errors import TransactionPooler
from .target import DatabaseTarget

_ROUNDS = 2
_PID = "SELECT pg_backend_pid()"


async def check_lockable(conn: Session, target: DatabaseTarget, settings: SessionSettings) -> None:
    """Before taking SQLx's lock through a pooler: refuse transaction pooling (TransactionPooler); in session
    pooling, give the session our limits as plain `SET`s (the pooler refused them at start-up)."""
    if not conn.behind_pooler:
        return
    if await _transaction_pooling(conn, target, settings):
        raise TransactionPooler(
            f"{target.server} is a connection pooler in transaction mode (PgBouncer or alike): SQLx's migration "
            f"lock on {target.database} cannot be trusted through it, so nothing was applied",
            hint="give this school a `direct_url` in the registry (the database server itself, not the pooler) "
            "for the commands that write; `url` stays what the school's workers use. Read-only commands (status, "
            "plan, audit) work through the pooler",
        )
    await conn.execute(settings.set_commands(local=False))


async def _transaction_pooling(conn: Session, target: DatabaseTarget, settings: SessionSettings) -> bool:
    other = await open_session(target, settings)
    try:
        for _ in range(_ROUNDS):
            ours = await conn.fetchval(_PID)
            async with other.transaction():
                pinned = await other.fetchval(_PID)
                again = await conn.fetchval(_PID)
            if pinned == ours or again != ours:
                return True
        return False
    finally:
        await close_quietly(other)
