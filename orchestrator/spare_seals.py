"""Spares this process made or read itself, taken without a session on them when nothing has been in them since.

Taking a spare normally reads it first (`template._take_spare`: a session on it, its ledger and catalog rows against
its mark): the mark alone proves nothing, since the spare's owner may open it, change it and close it again. That
first session on a fresh copy is most of what an onboarding costs the service. A process that made (or read) a spare
itself knows more than its mark: the spare's OID, its comment, and how many sessions the server had counted on it
then (`pg_stat_database.sessions`, counted as each session starts). What a database holds changes only through a
session on it, so a spare whose OID, comment and session count are still what this process saw, its statistics
never reset since (its own `stats_reset`, and the server's: `pg_stat_bgwriter.stats_reset`, set anew when a crash
loses the counters), holds what it held then. Its `ALTER DATABASE ... SET` values, which need no session on it,
are compared too.

The session count alone is not enough: the server counts client backends only (a walsender of a `replication=database`
connection runs plain SQL in its database uncounted), and the OID, the comment and the statistics of a database
dropped and made anew with `CREATE DATABASE ... OID n` (PostgreSQL 15+, any role with CREATEDB) are all the old one's.
So the seal also holds the version of the spare's pg_database row (its xmin): opening it to connections, granting on
it, making it a template, giving it a connection limit, an owner or a tablespace, dropping and recreating it all
write a new row version. That is read in the rename's transaction just before the rename (which writes the next).

The comparison runs in the transaction that renames the spare to the school, after the rename: a session still on
it refuses the rename, and none can start on it until that transaction ends, since it is still closed to connections
(compared too) and an ALTER DATABASE opening it waits for the transaction that renamed it (both update its
pg_database row). Any difference, or a server that cannot tell (before PostgreSQL 14, `track_counts` off): the
transaction is rolled back and the spare is read as before.

Only under `remembering(seals)`: the service keeps one for its life (its own spares, and others' once it has read
them). The CLI and the Python API read every spare they take.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from .connection import quote_ident
from .logsetup import get_logger

log = get_logger("orchestrator.template")

# The first statistics read of its transaction (a transaction of its own, or the rename's): the server's stats
# snapshot is taken fresh then, not cached from earlier in the transaction.
_READ = """
SELECT d.oid, d.xmin::text::bigint AS row, d.datallowconn AS open, s.sessions, s.stats_reset IS NOT NULL AS reset,
       shobj_description(d.oid, 'pg_database') AS comment,
       concat_ws(' ', d.datdba, d.dattablespace, d.datistemplate, d.datconnlimit, d.datacl) AS attributes,
       (SELECT stats_reset FROM pg_stat_bgwriter) AS epoch, current_setting('track_counts')::bool AS counted,
       (SELECT array_agg(array_to_string(setconfig, ',') ORDER BY setrole) FROM pg_db_role_setting
        WHERE setdatabase = d.oid) AS settings
FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid
WHERE d.datname = $1
"""

_ROW_VERSION = "SELECT xmin::text::bigint FROM pg_database WHERE datname = $1"


@dataclass(frozen=True)
class Seal:
    """What this process saw of a spare: it holds the same only while all of it is unchanged."""

    oid: int
    open: bool  # open to connections (a spare never is: none can start on it)
    sessions: int  # sessions the server had counted on it
    comment: str | None
    epoch: datetime  # the server's statistics reset time (a crash or a reset of the counters changes it)
    settings: tuple[str, ...] = ()  # its ALTER DATABASE ... SET values (made without a session on it)
    row: int = 0  # the xmin of its pg_database row: any change to the row (or a new database) writes a new one
    # The row's owner, tablespace, template flag, connection limit and grants: compared after the rename too, for a
    # change committed between the row version's check and the rename (which then updates the changed row).
    attributes: str = ""


class SpareSeals:
    """The seals of the spares this process made or read, by server and database name."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], Seal] = {}

    def remember(self, server: str, name: str, seal: Seal) -> None:
        self._seen[(server, name)] = seal

    def take(self, server: str, name: str) -> Seal | None:
        """The seal of `name`, forgotten: a spare is taken once (or read, and sealed again)."""
        return self._seen.pop((server, name), None)

    def knows(self, server: str, name: str) -> bool:
        return (server, name) in self._seen

    def keep_only(self, server: str, names: Iterable[str]) -> None:
        """Forget `server`'s spares that are no longer there (taken or dropped by another process)."""
        there = set(names)
        for key in [k for k in self._seen if k[0] == server and k[1] not in there]:
            del self._seen[key]


_SEALS: ContextVar[SpareSeals | None] = ContextVar("orchestrator_spare_seals", default=None)


@contextmanager
def remembering(seals: SpareSeals) -> Iterator[None]:
    """Within the block (and the tasks started in it), spares made or read are sealed in `seals`, and taken
    without a session when their seal holds."""
    token = _SEALS.set(seals)
    try:
        yield
    finally:
        _SEALS.reset(token)


def current() -> SpareSeals | None:
    return _SEALS.get()


async def read_seal(conn: asyncpg.Connection, name: str) -> Seal | None:
    """Database `name` as the server's statistics see it now; None when they cannot tell (see the module)."""
    if conn.get_server_version().major < 14:  # pg_stat_database.sessions is 14's
        return None
    row = await conn.fetchrow(_READ, name)
    if row is None or not row["counted"] or row["reset"] or row["epoch"] is None:
        return None
    settings = tuple(row["settings"] or ())
    return Seal(
        row["oid"], row["open"], row["sessions"], row["comment"], row["epoch"], settings, row["row"], row["attributes"]
    )


async def seal(conn: asyncpg.Connection, server: str, name: str) -> None:
    """Remember spare `name` as it is now, just made or read by this process (nothing, outside `remembering`)."""
    seals = _SEALS.get()
    if seals is None:
        return
    seen = await read_seal(conn, name)
    if seen is not None:
        seals.remember(server, name, seen)


class _Changed(Exception):
    """Raised inside the rename's transaction to roll it back."""


async def take_sealed(conn: asyncpg.Connection, server: str, spare: str, school: str) -> bool:
    """Rename `spare` to `school` (opened to connections, unmarked) if its seal holds, in one transaction. False:
    no seal, or something changed (nothing done: read it). Raises the rename's errors: InvalidCatalogNameError
    (another onboarding took it first), ObjectInUseError (a session on it), DuplicateDatabaseError (the school's
    database exists)."""
    seals = _SEALS.get()
    seen = seals.take(server, spare) if seals is not None else None
    if seen is None:
        return False
    new = quote_ident(school)
    try:
        async with conn.transaction():
            # The row version before the rename (which writes a new one); no statistics read yet in this
            # transaction (read_seal's must be its first).
            if await conn.fetchval(_ROW_VERSION, spare) != seen.row:
                raise _Changed
            await conn.execute(f"ALTER DATABASE {quote_ident(spare)} RENAME TO {new}")
            now = await read_seal(conn, school)
            if now is None or replace(now, row=seen.row) != seen:
                raise _Changed
            await conn.execute(f"ALTER DATABASE {new} ALLOW_CONNECTIONS true; COMMENT ON DATABASE {new} IS NULL")
    except _Changed:
        log.warning(
            "template.spare_seal_broken",
            spare=spare,
            message="the spare is not as this process left it (a session on it, its statistics reset, another "
            "database under its name, its comment changed): read before it is used",
        )
        return False
    return True
