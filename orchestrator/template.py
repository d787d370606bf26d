"""Onboarding from a template: a new school's database is a copy of a template database kept at the latest version
on its server (`CREATE DATABASE school TEMPLATE t`), instead of every migration file applied one after another.

A copy carries the extensions, the schema, any rows the migrations inserted and the `_sqlx_migrations` ledger, so
the engine then finds the new school up to date (or applies what is newer than the template, as usual).

The template's life, on each server, under a server-wide advisory lock taken in the maintenance database
(`pg_advisory_lock(TEMPLATE_LOCK_CLASS, crc32(name))`: two int4 keys live apart from SQLx's one bigint key):
- missing: built in a new database (a scratch name) exactly as the audit builds its references
  (`audit.reference.build_expected`: bootstrap, every file, the schema read), then put in place under its name;
- behind (the files hold versions it lacks): copied to a new database, the new files applied (what `migrate` does
  to every school), and its schema checked against a fresh build of every file (the audit's reference). They agree:
  the refreshed copy replaces the template. They differ: the fresh build does (a new school must look like one
  provisioned from the files), and the note says so;
- current: copied.
The template is never migrated in place: it is replaced by a finished build (marker, flags and rename in one
transaction), so it is never half-way and never connected to. It is marked `IS_TEMPLATE true` (any role with
CREATEDB may copy it) and `ALLOW_CONNECTIONS false`: a copy fails while any session is connected to its template,
so nobody (a psql, a monitoring agent) may connect and block onboarding, nor change it behind the marker. What it
holds is recorded in its comment (the marker), read from the maintenance database without connecting to it. Builds,
spares under construction and a template being replaced are the tool's scratch databases (scratch.py: marked, held
by this process's maintenance session, dropped if the work stops, by the next run's clean-up if it is killed).

Readers copy under the lock's shared mode and builders hold it exclusively, both waiting at most `lock_wait`; the
making of spares holds a lock of its own exclusively, and the template's shared.
Whenever the template cannot be used (busy, owned by another role, not one this tool built, built with other
extensions, holding files this checkout lacks, a build that failed), the school is created by applying the
migrations, and its report says why. Before any of these ways, a file whose bytes differ from what the template holds
for its version (the marker keeps each version's checksum) refuses the onboarding: no way around the one checksum.
A spare is read before it becomes the school (its ledger and catalog rows against its marker): see `_take_spare`;
in the service, one it made or read itself is taken unread while nothing has been in it since (spare_seals.py).
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
import zlib
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import anyio
import asyncpg

from . import catalog, engine, scratch, spare_seals
from .audit.reference import build_expected
from .audit.schema import SchemaSnapshot, diff, fingerprint, snapshot
from .bootstrap import MAINTENANCE_DATABASE, create_database, creation_denied
from .catalog import catalog_digest, settle_sequences
from .connection import describe, is_connection_lost, quote_ident, session
from .engine import EngineOptions
from .errors import DatabaseError, ModifiedMigration, SplitOnboarding
from .history import read_applied, read_history
from .logsetup import get_logger
from .outcome import DatabaseResult
from .scratch import SCRATCH_SHAPE, Scratch, drop_abandoned, literal, maker_session
from .source import MigrationSource
from .target import DatabaseTarget

log = get_logger("orchestrator.template")

TEMPLATE_LOCK_CLASS = 0x4F524348  # 'ORCH'
SPARES_LOCK_CLASS = 0x4F525350  # 'ORSP': making a template's spares
MARKER_PREFIX = "orchestrator template: "
# WAL_LOG (PostgreSQL 15+'s default, written out so the choice is visible): the copy goes block by block through the
# WAL, so a small template costs a few MB of WAL and no checkpoint. FILE_COPY writes less WAL for a large template
# but forces two checkpoints per copy, each flushing every dirty buffer of every school on the server: onboarding
# would stall the busy fleet around it.
STRATEGY = "WAL_LOG"
# Spares: ready copies of a template (`orchestrator template --spares N` makes them ahead of time), named
# SPARE_NAME_PREFIX + 16 hex digits, closed to connections, their comment saying which template and marker they copy.
SPARE_NAME_PREFIX = "orchestrator_spare_"
SPARE_MARKER_PREFIX = "orchestrator spare: "
REJECTED_NAME_PREFIX = "orchestrator_rejected_"  # a spare found holding something else: set aside, never dropped
REJECTED_MARKER_PREFIX = "orchestrator rejected spare: "
CHECKSUM_HEX = 24
# How a new school's note says it was made (`made_from` reads them back: one wording, written once).
FROM_SPARE = "a ready copy"
FROM_TEMPLATE = "template"
_SESSIONS_GONE_WAIT_S = 5.0  # a closed session's backend exits on its own time; PostgreSQL itself waits 5 s too


class TemplateUnavailable(Exception):
    """The template cannot be used for this school right now: it is created by applying the migrations instead."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Marker:
    """What a template holds, kept in its comment (readable from the maintenance database)."""

    version: int | None
    ledger: str  # ledger_digest() of its _sqlx_migrations rows
    extensions: tuple[str, ...]
    schema: str | None  # the audit's fingerprint of its schema
    # (version, short_checksum()) of each row: which version's file was edited since, whatever the template's use.
    # None: a marker of an older release (the template is rebuilt), or a spare's (its ledger digest is enough).
    checksums: tuple[tuple[int, str], ...] | None = None
    # catalog.catalog_digest() of the build: what a spare (a copy of it) must still hold. None: an older release's.
    catalog: str | None = None

    @property
    def text(self) -> str:
        fields: dict[str, object] = {
            "version": self.version,
            "ledger": self.ledger,
            "extensions": list(self.extensions),
        }
        if self.checksums is not None:
            fields["checksums"] = {str(v): c for v, c in self.checksums}
        if self.catalog is not None:
            fields["catalog"] = self.catalog
        return MARKER_PREFIX + json.dumps({**fields, "schema": self.schema}, sort_keys=True, separators=(",", ":"))

    @classmethod
    def parse(cls, comment: str | None) -> Marker | None:
        if not comment or not comment.startswith(MARKER_PREFIX):
            return None
        try:
            data = json.loads(comment.removeprefix(MARKER_PREFIX))
            held = data.get("checksums")
            checksums = None if held is None else tuple(sorted((int(v), str(c)) for v, c in held.items()))
            fields = (data["version"], data["ledger"], tuple(data["extensions"]), data["schema"])
            return cls(*fields, checksums, data.get("catalog"))
        except (ValueError, KeyError, TypeError, AttributeError):
            return None


@dataclass(frozen=True)
class TemplateState:
    """The template database as the maintenance database sees it."""

    is_template: bool
    owner: str
    ours: bool  # owned by the session's role
    role: str  # the session's role
    marker: Marker | None
    sessions: int  # sessions connected to it right now
    comment: str | None  # as written (given back if replacing it fails half-way)


def short_checksum(checksum: bytes) -> str:
    """A version's checksum as the marker keeps it: 96 bits of the SHA-384 tell an edited file (the ledger digest
    covers the whole bytes), and 300 files stay a comment of about 13 kB."""
    return checksum.hex()[:CHECKSUM_HEX]


def ledger_digest(checksums: Mapping[int, bytes]) -> str:
    """One value for a set of (version, checksum): equal digests, equal ledgers."""
    h = hashlib.sha256()
    for version in sorted(checksums):
        h.update(f"{version}:".encode() + checksums[version].hex().encode() + b"\n")
    return h.hexdigest()


def creator(name: str, source: MigrationSource, options: EngineOptions) -> engine.Creator:
    """The engine's database creator for schools onboarded from template `name`."""

    async def create(target: DatabaseTarget, result: DatabaseResult) -> engine.Created:
        return await create_school(target, name, source, options, result)

    return create


async def create_school(
    target: DatabaseTarget, name: str, source: MigrationSource, options: EngineOptions, result: DatabaseResult
) -> engine.Created:
    """Create the school's database from template `name` (building or refreshing the template first when needed):
    a complete copy, at the latest migration. When the template cannot be used, an empty database the migrations
    then fill. Notes say which."""
    try:
        copied = await _copy(target, name, source, options, result.notes)
    except TemplateUnavailable as exc:
        log.warning("template.unavailable", template=name, database=target.database, reason=exc.reason)
        if not await create_database(target, options.session):
            return engine.Created.NOT_BY_US
        result.notes.append(
            f"template {name} unavailable ({exc.reason}): created database {target.database} by applying the migrations"
        )
        return engine.Created.EMPTY
    if not copied.created:
        return engine.Created.NOT_BY_US  # another process created the school's database meanwhile
    # The template holds exactly the files (its marker's ledger, checked before the copy) and the extensions.
    result.version_after = copied.version
    how = f"{FROM_SPARE} ({copied.spare}) of template {name}" if copied.spare else f"{FROM_TEMPLATE} {name}"
    result.notes.append(f"created database {target.database} from {how} at {_version_text(copied.version)}")
    log.info("template.copied", template=name, database=target.database, version=copied.version, spare=copied.spare)
    return engine.Created.COMPLETE


def made_from(result: DatabaseResult) -> str:
    """How an onboarding made the school, from its result: "spare" (a ready copy renamed), "template" (a copy of
    it), "files" (created empty, then every file applied) or "existing" (it was there already)."""
    if not result.created_database:
        return "existing"
    made = f"created database {result.database} from "
    for note in result.notes:
        if note.startswith(made + FROM_SPARE + " "):
            return "spare"
        if note.startswith(made + FROM_TEMPLATE + " "):
            return "template"
    return "files"


# --- deciding ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Wanted:
    ledger: str
    extensions: tuple[str, ...]


def _wanted(source: MigrationSource, options: EngineOptions) -> _Wanted:
    if options.target_version is not None and options.target_version != source.latest:
        raise TemplateUnavailable(
            f"it is kept at the latest migration, {source.latest}; --target {options.target_version} stops before"
        )
    return _Wanted(ledger_digest({m.version: m.checksum for m in source}), options.extensions)


def _is_current(state: TemplateState | None, wanted: _Wanted, name: str) -> bool:
    """True: copy it as it is. False: build or refresh it. Raises TemplateUnavailable when it is not ours to use."""
    if state is None:
        return False
    if state.marker is None:
        raise TemplateUnavailable(f"a database named {name} exists and is not a template this tool built; left alone")
    if not state.is_template:
        raise TemplateUnavailable("it is no longer marked as a template (IS_TEMPLATE false); left alone")
    if not state.ours:
        raise TemplateUnavailable(
            f"it is owned by role {state.owner}, not {state.role}: a copy would hold {state.owner}'s objects"
        )
    if set(state.marker.extensions) != set(wanted.extensions):
        built, asked = (", ".join(e) or "none" for e in (state.marker.extensions, wanted.extensions))
        raise TemplateUnavailable(f"it was built with extensions [{built}], this school is set up with [{asked}]")
    # A marker without per-version checksums or with another version's digest (an older release's) is rebuilt once.
    marker = state.marker
    return marker.ledger == wanted.ledger and marker.checksums is not None and catalog.is_current(marker.catalog)


def refuse_other_bytes(state: TemplateState | None, source: MigrationSource, name: str, server: str) -> None:
    """Raises SplitOnboarding when a file differs from what template `name` holds for its version: a school made
    from these files, whichever way, would hold other bytes than the template and every school copied from it.
    Only a template of ours (its owner is our role) is believed; one without per-version checksums cannot tell."""
    if state is None or not state.ours or state.marker is None or state.marker.checksums is None:
        return
    held = dict(state.marker.checksums)
    edited = [m.version for m in source if m.version in held and held[m.version] != short_checksum(m.checksum)]
    if edited:
        raise split_onboarding(name, server, edited)


def split_onboarding(name: str, server: str, versions: list[int]) -> SplitOnboarding:
    return SplitOnboarding(
        [f"version {v}: the file differs from what template {name} on {server} holds" for v in versions],
        versions=versions,
        hint="restore each file as it was applied (`git log -p -- FILE`) and put the change in a new migration "
        "(`orchestrator new ...`); schools onboarded from the template hold the applied bytes too",
    )


# Sessions on the template are counted before the copy: CREATE DATABASE would wait 5 s for them to leave before
# failing. pg_stat_get_db_numbackends reads the backends' shared status directly, where pg_stat_activity would
# build a row per backend of the server (hundreds on a busy one) on every onboarding.
_STATE = """
SELECT d.datistemplate AS is_template, pg_get_userbyid(d.datdba) AS owner, current_user AS role,
       d.datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user) AS ours,
       shobj_description(d.oid, 'pg_database') AS comment,
       pg_stat_get_db_numbackends(d.oid) AS sessions
FROM pg_database d WHERE d.datname = $1
"""


async def read_state(conn: asyncpg.Connection, name: str) -> TemplateState | None:
    row = await conn.fetchrow(_STATE, name)
    if row is None:
        return None
    marker = Marker.parse(row["comment"])
    return TemplateState(
        row["is_template"], row["owner"], row["ours"], row["role"], marker, row["sessions"], row["comment"]
    )


# --- copying -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Copied:
    created: bool  # whether this call created the school's database
    version: int | None = None  # the version of the template it is a copy of
    spare: str | None = None  # the ready copy renamed to it, when there was one


async def _copy(
    target: DatabaseTarget, name: str, source: MigrationSource, options: EngineOptions, notes: list[str]
) -> _Copied:
    maintenance = target.with_database(MAINTENANCE_DATABASE)
    try:
        async with maker_session(maintenance, options.session) as conn:
            rows = await conn.fetch(_LOOK, target.database, SPARE_NAME_PREFIX, SCRATCH_SHAPE)
            await drop_abandoned(conn, rows)  # what a killed or interrupted maker left: found by the same query
            if any(row["datname"] == target.database for row in rows):
                return _Copied(False)  # the school exists (a repeated provision): no template work for it
            # Before any way of creating the school (a spare, the template, or the files when neither can be used).
            refuse_other_bytes(await read_state(conn, name), source, name, target.server)
            wanted = _wanted(source, options)
            taken = await _take_spare(conn, target, name, wanted, rows, options, notes)
            if taken is not None:
                return taken
            async with _current_template(conn, target, name, wanted, source, options, notes) as state:
                assert state.marker is not None
                return _Copied(await _create_from(conn, target, name, state), state.marker.version)
    except asyncpg.PostgresError as exc:
        if is_connection_lost(exc):
            raise
        raise TemplateUnavailable(target.scrub(describe(exc))) from None


@asynccontextmanager
async def _current_template(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    name: str,
    wanted: _Wanted,
    source: MigrationSource,
    options: EngineOptions,
    notes: list[str],
) -> AsyncIterator[TemplateState]:
    """The template, current (built or refreshed first when it is missing or behind), held under its lock: shared
    (enough to copy it), or exclusive when this call had to build or refresh it."""
    exclusive = False
    while True:
        async with template_lock(conn, name, exclusive=exclusive, wait_s=options.lock_wait):
            state = await read_state(conn, name)
            refuse_other_bytes(state, source, name, server.server)
            if not _is_current(state, wanted, name):
                if not exclusive:
                    exclusive = True  # let go of the shared lock, wait for the exclusive one, look again
                    continue
                state = await _renew(conn, server, name, state, source, options, notes)
            assert state is not None
            yield state
            return


async def _create_from(conn: asyncpg.Connection, target: DatabaseTarget, name: str, state: TemplateState) -> bool:
    if state.sessions:
        raise TemplateUnavailable(f"busy: {state.sessions} session(s) connected to it")
    try:
        await conn.execute(f"CREATE DATABASE {quote_ident(target.database)}{_copy_of(conn, name)}")
    except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
        return False
    except asyncpg.ObjectInUseError as exc:
        raise TemplateUnavailable(f"busy: {exc.detail or exc.message}") from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise creation_denied(target, exc) from None
    return True


def _copy_of(conn: asyncpg.Connection, name: str) -> str:
    """The clause of CREATE DATABASE that makes it a copy of `name` (STRATEGY exists from PostgreSQL 15 on)."""
    strategy = f" STRATEGY {STRATEGY}" if conn.get_server_version().major >= 15 else ""
    return f" TEMPLATE {quote_ident(name)}{strategy}"


@asynccontextmanager
async def template_lock(
    conn: asyncpg.Connection, name: str, *, exclusive: bool, wait_s: float, of_spares: bool = False
) -> AsyncIterator[None]:
    """The server-wide lock of template `name`, in the maintenance session `conn`: shared to copy it, exclusive to
    build or replace it. Waits at most `wait_s` (queued fairly: a builder is not starved by a stream of copies).
    `of_spares`: the lock of making its spares instead, a lock of its own so that copies go on meanwhile."""
    key = zlib.crc32(name.encode()) - (1 << 31)  # a signed int4
    mode = "" if exclusive else "_shared"
    lock_class = SPARES_LOCK_CLASS if of_spares else TEMPLATE_LOCK_CLASS
    try:
        if wait_s <= 0:
            if not await conn.fetchval(f"SELECT pg_try_advisory_lock{mode}($1, $2)", lock_class, key):
                raise asyncpg.LockNotAvailableError("the template lock is held")
        else:
            async with conn.transaction():  # a session-level lock outlives the transaction that waited for it
                await conn.execute(f"SET LOCAL lock_timeout = {max(1, int(wait_s * 1000))}")
                await conn.execute(f"SELECT pg_advisory_lock{mode}($1, $2)", lock_class, key)
    except asyncpg.LockNotAvailableError:
        doing = "making its spares" if of_spares else "building or refreshing it"
        raise TemplateUnavailable(f"busy: another process held its lock ({doing}) for more than {wait_s:g}s") from None
    try:
        yield
    finally:
        with anyio.CancelScope(shield=True):
            try:
                await conn.execute(f"SELECT pg_advisory_unlock{mode}($1, $2)", lock_class, key)
            except Exception:
                conn.terminate()  # closing the session releases the lock


# --- spares: ready copies, taken by a rename ------------------------------------------------------------------------

# One look at pg_database: the spares (ours, closed to connections: finished), and, before an onboarding, whether
# the school's database $1 exists already (NULL: the spares alone) and the scratch databases ($3: their shape) a
# killed maker may have left (scratch.drop_abandoned picks them out).
_LOOK = """
SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database
WHERE datname = $1
   OR (starts_with(datname::text, $2) AND NOT datallowconn
       AND datdba = (SELECT oid FROM pg_roles WHERE rolname = current_user))
   OR datname ~ $3
ORDER BY datname
"""


def spare_comment(name: str, marker: Marker) -> str:
    """Without the per-version checksums: every onboarding reads every spare's comment; the ledger digest says
    which files it holds."""
    copied = replace(marker, checksums=None)
    return SPARE_MARKER_PREFIX + json.dumps({"template": name, "marker": copied.text}, sort_keys=True)


def parse_spare(comment: str | None) -> tuple[str, Marker] | None:
    """(the template it is a copy of, that template's marker when it was copied); None: not a spare."""
    if not comment or not comment.startswith(SPARE_MARKER_PREFIX):
        return None
    try:
        data = json.loads(comment.removeprefix(SPARE_MARKER_PREFIX))
        marker = Marker.parse(data["marker"])
        return (data["template"], marker) if marker is not None and isinstance(data["template"], str) else None
    except (ValueError, KeyError, TypeError):
        return None


def _spare_of(comment: str | None, name: str) -> Marker | None:
    """The marker a spare of template `name` was copied at; None: not a spare of it."""
    spare = parse_spare(comment)
    return spare[1] if spare is not None and spare[0] == name else None


def _holds(marker: Marker, ledger: str, extensions: tuple[str, ...]) -> bool:
    """Whether a copy at `marker` holds exactly `ledger`, with `extensions`, and can be read against it (a copy of an
    older release's template, whose digest is another version's, is dropped and made again)."""
    return marker.ledger == ledger and set(marker.extensions) == set(extensions) and catalog.is_current(marker.catalog)


async def _take_spare(
    conn: asyncpg.Connection,
    target: DatabaseTarget,
    name: str,
    wanted: _Wanted,
    rows: list[asyncpg.Record],
    options: EngineOptions,
    notes: list[str],
) -> _Copied | None:
    """Give a ready copy of the template to the school: claimed (made scratch under a new name, open to connections
    under that name only, which no worker knows), read (does it hold what its mark says?), then renamed to the
    school's database and unmarked in one transaction. The mark alone proves nothing: anyone may read it, and the
    spare's owner may open it and change it. None: no spare holds exactly the files, or the one claimed holds
    something else (set aside, the note says why): the template is then copied."""
    for row in rows:
        marker = _spare_of(row["comment"], name)
        if marker is None or not _holds(marker, wanted.ledger, wanted.extensions):
            continue
        try:
            if await spare_seals.take_sealed(conn, target.server, row["datname"], target.database):
                log.info("template.spare_taken", spare=row["datname"], database=target.database, read=False)
                return _Copied(True, marker.version, row["datname"])  # made or read by this process, untouched since
            made = await scratch.take_over(conn, row["datname"], "taking", open_it=True)
        except (asyncpg.InvalidCatalogNameError, asyncpg.ObjectInUseError):
            continue  # another onboarding took it first (or something holds it): the next one
        except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
            return _Copied(False)  # another process created the school's database meanwhile
        try:
            wrong = await _wrong_content(target.with_database(made.name), marker, options)
            await _wait_until_unused(conn, made.name)
            if wrong is not None:
                aside = await _set_aside(conn, made, name, row["datname"], wrong)
                notes.append(
                    f"ready copy {row['datname']} of template {name} not used: {wrong}; set aside as {aside} "
                    "(look at it, then drop it)"
                )
                return None
            school = quote_ident(target.database)
            try:
                await conn.execute(
                    f"ALTER DATABASE {quote_ident(made.name)} RENAME TO {school}; COMMENT ON DATABASE {school} IS NULL"
                )
            except asyncpg.ObjectInUseError:
                continue  # someone connected to it under its passing name: dropped, the next one
            except (asyncpg.DuplicateDatabaseError, asyncpg.UniqueViolationError):
                return _Copied(False)  # another process created the school's database meanwhile
            made.kept = True
            return _Copied(True, marker.version, row["datname"])
        finally:
            await scratch.discard(conn, made)
    return None


# A copy of the template has none: CREATE DATABASE does not copy them; they are given without a session on it.
_HAS_SETTINGS = """
SELECT EXISTS (SELECT 1 FROM pg_db_role_setting
               WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database()))
"""

# Nor grants, a connection limit, or IS_TEMPLATE: CREATE DATABASE gives a copy none of them (its owner may give them
# to a spare without a session on it; a school's database must not start with them).
_ROW_CHANGED = """
SELECT datistemplate OR datconnlimit <> -1 OR datacl IS NOT NULL FROM pg_database WHERE datname = current_database()
"""


async def _wrong_content(spare: DatabaseTarget, marker: Marker, options: EngineOptions) -> str | None:
    """What a claimed spare holds that its marker does not say; None: what it says (its ledger, and the digest of
    what it holds, catalog.py: an untouched copy of the build the template is)."""
    try:
        async with session(spare, options.session) as conn:
            if await conn.fetchval(_HAS_SETTINGS):
                return "it has settings of its own (ALTER DATABASE ... SET), which every session on it would start with"
            if await conn.fetchval(_ROW_CHANGED):
                return "its pg_database row is not a fresh copy's (grants, a connection limit, or made a template)"
            applied = await read_history(conn)
            digest = await catalog_digest(conn) if applied is not None else None
    except DatabaseError as exc:
        raise TemplateUnavailable(f"a ready copy could not be checked: {exc}") from None
    if applied is None:
        return "it has no _sqlx_migrations table"
    if not all(row.success for row in applied.values()):
        return "its _sqlx_migrations holds a failed migration"
    if ledger_digest({v: row.checksum for v, row in applied.items()}) != marker.ledger:
        return "its _sqlx_migrations rows are not the template's"
    if digest != marker.catalog:
        return (
            "what it holds is not the template's: something was defined, dropped, altered, granted or written in it "
            "since it was made"
        )
    return None


async def _set_aside(conn: asyncpg.Connection, made: Scratch, name: str, spare: str, why: str) -> str:
    """A claimed spare that holds something else: closed, marked with why, renamed out of the spares' and the
    scratch databases' ways in one transaction. Never dropped: it is not what the tool made, so nothing proves that
    what it holds is nobody's."""
    aside = REJECTED_NAME_PREFIX + secrets.token_hex(8)
    record = {"template": name, "was": spare, "why": why, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    comment = REJECTED_MARKER_PREFIX + json.dumps(record, sort_keys=True)
    await conn.execute(
        f"ALTER DATABASE {quote_ident(made.name)} ALLOW_CONNECTIONS false;"
        f" COMMENT ON DATABASE {quote_ident(made.name)} IS {literal(comment)};"
        f" ALTER DATABASE {quote_ident(made.name)} RENAME TO {quote_ident(aside)}"
    )
    made.kept = True
    log.warning("template.spare_set_aside", template=name, spare=spare, database=aside, reason=why)
    return aside


@dataclass
class ServerTemplate:
    """What keeping a template ready did on one server (`orchestrator template`)."""

    server: str
    template: str
    version: int | None = None  # the template's version, once current
    spares: int = 0  # ready copies at the end
    made: int = 0
    dropped: int = 0  # stale copies (of an older template) and copies beyond the number asked for
    notes: list[str] = field(default_factory=list)  # built or refreshed
    error: str | None = None
    retryable: bool = False  # the error was transient (a connection lost or refused): worth another attempt
    attempts: int = 1
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


async def keep_ready(
    server: DatabaseTarget, name: str, source: MigrationSource, options: EngineOptions, spares: int
) -> ServerTemplate:
    """Make template `name` current on `server`'s server (built or refreshed as onboarding would) and keep exactly
    `spares` ready copies of it, dropping copies of an older template. Errors end up in the value."""
    started = time.perf_counter()
    result = ServerTemplate(server.server, name)
    try:
        wanted = _wanted(source, options)
        async with maker_session(server.with_database(MAINTENANCE_DATABASE), options.session) as conn:
            await drop_abandoned(conn)  # spares and builds a killed or interrupted run left half-made
            await _keep_ready(conn, server, wanted, source, options, spares, result)
    except TemplateUnavailable as exc:
        result.error = exc.reason
    except DatabaseError as exc:
        result.error, result.retryable = str(exc), exc.retryable
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        result.error, result.retryable = server.scrub(describe(exc)), is_connection_lost(exc)
    if result.error:
        log.warning("template.not_ready", template=name, server=server.server, error=result.error)
    result.duration_s = time.perf_counter() - started
    return result


async def _keep_ready(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    wanted: _Wanted,
    source: MigrationSource,
    options: EngineOptions,
    spares: int,
    result: ServerTemplate,
) -> None:
    name = result.template
    # The spares' own lock, exclusive: two runs at once make the spares one after the other, not twice the number
    # asked for. The template's lock only shared (a spare is a copy like an onboarding's, unless the template must
    # be built or refreshed first): onboardings that copy the template go on meanwhile, and take spares unlocked.
    spares_lock = template_lock(conn, name, exclusive=True, wait_s=options.lock_wait, of_spares=True)
    async with spares_lock, _current_template(conn, server, name, wanted, source, options, result.notes) as state:
        assert state.marker is not None
        result.version = state.marker.version
        ready: list[asyncpg.Record] = []
        for row in await conn.fetch(_LOOK, None, SPARE_NAME_PREFIX, None):
            marker = _spare_of(row["comment"], name)
            if marker is None:
                continue  # not a spare of this template: not ours to trim, whatever its name
            if _holds(marker, state.marker.ledger, state.marker.extensions):
                ready.append(row)
            elif await _drop_spare(conn, row):  # a copy of an older template: no onboarding takes it
                result.dropped += 1
        for extra in ready[spares:]:
            if await _drop_spare(conn, extra):
                result.dropped += 1
        ready = ready[:spares]
        if (seals := spare_seals.current()) is not None:  # the service: read those it did not make, sealed then
            ready = [row for row in ready if await _read_into_seal(conn, server, name, row, options, result)]
        for _ in range(spares - len(ready)):
            await _make_spare(conn, server.server, name, state.marker)
            result.made += 1
        # Counted again: onboardings took spares while this pass made others (the service shows the count).
        spares_now = await conn.fetch(_LOOK, None, SPARE_NAME_PREFIX, None)
        markers = [_spare_of(row["comment"], name) for row in spares_now]
        current = state.marker
        result.spares = sum(1 for m in markers if m is not None and _holds(m, current.ledger, current.extensions))
        if seals is not None:
            seals.keep_only(server.server, (row["datname"] for row in spares_now))


async def _read_into_seal(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    name: str,
    row: asyncpg.Record,
    options: EngineOptions,
    result: ServerTemplate,
) -> bool:
    """A spare this process has no seal of (another process made it, or this one before a restart): read as an
    onboarding reads it, then a spare again under a new name, sealed; one that holds something else is set aside.
    False: not a spare any more (set aside, or taken meanwhile)."""
    seals = spare_seals.current()
    if seals is None or seals.knows(server.server, row["datname"]):
        return True
    marker = _spare_of(row["comment"], name)
    assert marker is not None
    try:
        made = await scratch.take_over(conn, row["datname"], "checking", open_it=True)
    except (asyncpg.InvalidCatalogNameError, asyncpg.ObjectInUseError):
        return False  # taken by an onboarding meanwhile (or something holds it: left for the next pass)
    try:
        wrong = await _wrong_content(server.with_database(made.name), marker, options)
        await _wait_until_unused(conn, made.name)
        if wrong is not None:
            aside = await _set_aside(conn, made, name, row["datname"], wrong)
            result.notes.append(
                f"ready copy {row['datname']} of template {name} not kept: {wrong}; set aside as {aside}"
            )
            return False
        await _finish_spare(conn, server.server, made, row["comment"])
        return True
    finally:
        await scratch.discard(conn, made)


async def _make_spare(conn: asyncpg.Connection, server: str, name: str, marker: Marker) -> None:
    """A copy of the template as scratch (dropped if this run stops, by the next run if it is killed), then a
    spare."""
    made = await scratch.make(conn, "newspare", _copy_of(conn, name))
    try:
        await _finish_spare(conn, server, made, spare_comment(name, marker))
    finally:
        await scratch.discard(conn, made)


async def _finish_spare(conn: asyncpg.Connection, server: str, made: Scratch, comment: str) -> None:
    """Scratch database `made` given the spare's mark, closed to connections, a spare's name and sealed
    (spare_seals.py; in the service) in one transaction: a spare is always finished, and nothing done to it once it
    is one (a grant by anyone watching for new spares) is in its seal (its row is ours until the commit)."""
    spare = SPARE_NAME_PREFIX + secrets.token_hex(8)
    async with conn.transaction():
        await conn.execute(
            f"COMMENT ON DATABASE {quote_ident(made.name)} IS {literal(comment)};"
            f" ALTER DATABASE {quote_ident(made.name)} ALLOW_CONNECTIONS false;"
            f" ALTER DATABASE {quote_ident(made.name)} RENAME TO {quote_ident(spare)}"
        )
        await spare_seals.seal(conn, server, spare)
    made.kept = True


async def _drop_spare(conn: asyncpg.Connection, row: asyncpg.Record) -> bool:
    """Drop a spare, only if it still carries the spare's mark it was judged by (an onboarding may have taken it
    meanwhile: the school's database then has another name anyway). False: not dropped."""
    try:
        if await conn.fetchval(scratch.COMMENT_OF, row["datname"]) != row["comment"]:
            return False
        await scratch.drop_database(conn, row["datname"])
        return True
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        log.warning("template.spare_not_dropped", database=row["datname"], error=describe(exc))
        return False


# --- building and refreshing (under the exclusive lock) ------------------------------------------------------------


@dataclass
class _Build:
    target: DatabaseTarget
    made: Scratch
    schema: SchemaSnapshot | None = None
    marker: Marker | None = None

    @property
    def version(self) -> str:
        assert self.marker is not None
        return _version_text(self.marker.version)


async def _renew(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    name: str,
    state: TemplateState | None,
    source: MigrationSource,
    options: EngineOptions,
    notes: list[str],
) -> TemplateState:
    """Build the template (missing) or refresh it (behind) in new databases and put the result in its place."""
    options = replace(options, target_version=None, ignore_missing=False)  # exactly the files, all of them
    builds: list[_Build] = []  # each dropped at the end, unless it became the template
    try:
        if state is None:
            kept = await _fresh_build(conn, server, source, options, builds)
            note = f"built template {name} at {kept.version} (every migration, in a new database)"
        else:
            assert state.marker is not None
            if state.sessions:
                raise TemplateUnavailable(f"busy: {state.sessions} session(s) connected to it")
            refreshed = await _refreshed_build(conn, server, name, source, options, builds)
            fresh = await _fresh_build(conn, server, source, options, builds)
            was = _version_text(state.marker.version)
            assert refreshed.marker is not None and fresh.marker is not None
            if refreshed.marker.schema == fresh.marker.schema:
                kept = refreshed
                note = (
                    f"refreshed template {name} from {was} to {kept.version} (the new migrations applied to it; "
                    "its schema matches a fresh build's)"
                )
            else:
                kept = fresh
                difference = _first_difference(fresh, refreshed)
                note = (
                    f"rebuilt template {name} at {kept.version}: the new migrations applied to it at {was} gave "
                    f"another schema than every migration applied to a new database ({difference}); `orchestrator "
                    "audit` shows whether schools migrated the same way differ too"
                )
        await _install(conn, kept, name, state)
    finally:
        for build in builds:
            await scratch.discard(conn, build.made)
    notes.append(note)
    log.info("template.renewed", template=name, server=server.server, note=note)
    new_state = await read_state(conn, name)
    assert new_state is not None
    return new_state


def _version_text(version: int | None) -> str:
    return "no migration" if version is None else f"version {version}"


async def _fresh_build(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    source: MigrationSource,
    options: EngineOptions,
    builds: list[_Build],
) -> _Build:
    """Every file applied to a new database, as the audit builds its references."""
    build = await _create_build(conn, server, builds, "")
    reference = await build_expected(build.target, source, options)
    if reference.schema is None:
        raise TemplateUnavailable(f"building it failed: {reference.error}")
    build.schema = reference.schema
    await _mark(build, options, source)
    return build


async def _refreshed_build(
    conn: asyncpg.Connection,
    server: DatabaseTarget,
    name: str,
    source: MigrationSource,
    options: EngineOptions,
    builds: list[_Build],
) -> _Build:
    """A copy of the template with the new files applied: what `migrate` does to a school at its version."""
    build = await _create_build(conn, server, builds, _copy_of(conn, name))
    result = await engine.migrate(build.target, source, options)
    if isinstance(result.error, ModifiedMigration):
        # Not a reason to fall back to the files: they are the edited bytes. The template holds what was applied.
        raise split_onboarding(name, server.server, result.error.versions)
    if not result.ok:
        why = result.error.message if result.error else result.status.value
        raise TemplateUnavailable(f"stale, and applying the migrations to a copy of it failed: {why}")
    await _mark(build, options, source)
    return build


async def _create_build(
    conn: asyncpg.Connection, server: DatabaseTarget, builds: list[_Build], template: str
) -> _Build:
    try:
        made = await scratch.make(conn, "tmpl", template)
    except asyncpg.ObjectInUseError as exc:
        raise TemplateUnavailable(f"busy: {exc.detail or exc.message}") from None
    build = _Build(server.with_database(made.name), made)
    builds.append(build)
    return build


async def _mark(build: _Build, options: EngineOptions, source: MigrationSource) -> None:
    """The build's marker: its ledger (it must hold exactly the files), extensions and schema fingerprint."""
    async with session(build.target, options.session) as conn:
        await settle_sequences(conn)
        async with conn.transaction(readonly=True):
            applied = await read_applied(conn)
            if build.schema is None:
                build.schema = await snapshot(conn)
            digest = await catalog_digest(conn)
    checksums = {v: row.checksum for v, row in applied.items() if row.success}
    ledger = ledger_digest(checksums)
    if ledger != ledger_digest({m.version: m.checksum for m in source}):
        raise TemplateUnavailable("after building it, its _sqlx_migrations rows do not match the migration files")
    held = tuple((v, short_checksum(c)) for v, c in sorted(checksums.items()))
    schema = fingerprint(build.schema)
    build.marker = Marker(max(checksums, default=None), ledger, options.extensions, schema, held, digest)


def _first_difference(expected: _Build, actual: _Build) -> str:
    assert expected.schema is not None and actual.schema is not None
    found = diff(expected.schema, actual.schema)
    return found[0].text if found else "a difference the audit does not describe"


async def _install(conn: asyncpg.Connection, build: _Build, name: str, state: TemplateState | None) -> None:
    """Put the finished build in the template's place: marked as the template, flagged and renamed in one
    transaction. A template it replaces is first made scratch (marked, renamed) and dropped once the build is in
    place; if the build cannot be put in place, it gets its name and marker back."""
    assert build.marker is not None
    built = quote_ident(build.made.name)
    await _wait_until_unused(conn, build.made.name)
    retired: Scratch | None = None
    if state is not None:
        try:
            retired = await scratch.take_over(conn, name, "old")
        except asyncpg.ObjectInUseError as exc:
            raise TemplateUnavailable(f"busy: {exc.detail or exc.message}") from None
    try:
        await conn.execute(
            f"COMMENT ON DATABASE {built} IS {literal(build.marker.text)};"
            f" ALTER DATABASE {built} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false;"
            f" ALTER DATABASE {built} RENAME TO {quote_ident(name)}"
        )
        build.made.kept = True
    except BaseException:
        if retired is not None and state is not None and state.comment is not None:  # (a marker: it has one)
            await _give_back(conn, retired, name, state.comment)
        raise
    finally:
        if retired is not None:
            await scratch.discard(conn, retired)


async def _give_back(conn: asyncpg.Connection, retired: Scratch, name: str, comment: str) -> None:
    """The replaced template back under its name, with its marker, in one transaction (else it stays scratch, and is
    dropped: the next run builds the template again)."""
    with anyio.CancelScope(shield=True):
        try:
            await conn.execute(
                f"ALTER DATABASE {quote_ident(retired.name)} RENAME TO {quote_ident(name)};"
                f" COMMENT ON DATABASE {quote_ident(name)} IS {literal(comment)}"
            )
            retired.kept = True
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            log.warning("template.not_given_back", template=name, database=retired.name, error=describe(exc))


async def _wait_until_unused(conn: asyncpg.Connection, database: str) -> None:
    """Sessions this process closed on `database` may take a moment to leave the server."""
    with anyio.move_on_after(_SESSIONS_GONE_WAIT_S):
        while await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", database):
            await anyio.sleep(0.02)
