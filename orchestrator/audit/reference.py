"""The audit's expected schemas: built in scratch databases, one per distinct (server major version, applied
migrations, extensions), each on a server of that major version.

A school's expected schema is what its applied migrations produce on a server like its own. The catalog's text
(`pg_get_viewdef`, defaults, constraints) is rendered by the server and changes between major versions (PostgreSQL
16 stopped qualifying a view's columns with the table name), so a reference built on another major version would
report every school of a fleet mid-upgrade as drifted. Never compared across versions: a school whose version has no
server to build on gets a finding that says so.

Where references are built, per major version: the `--reference-url` server of that version (several may be given,
one per version; each is asked its version once); without `--reference-url`, the first reachable school's server of
that version, through the school's `direct_url` when it has one (building writes; a pooler would refuse it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, replace

from .. import engine
from ..bootstrap import scratch_database
from ..command import Command
from ..connection import session
from ..engine import EngineOptions
from ..errors import DatabaseError, MigrationFailed, PermissionDenied
from ..job import Job
from ..logsetup import get_logger
from ..serverversion import first_server_per_major
from ..source import MigrationSource
from ..sqltext import SqlText
from ..target import DatabaseTarget
from .inspect import LiveState
from .schema import SchemaSnapshot, fingerprint, snapshot

log = get_logger("orchestrator.audit")
_ELSEWHERE = "give --reference-url a server where the URL's role may create databases, or grant that role CREATEDB"
UNDEFINED_FUNCTION = "42883"

# What a school's expected schema depends on: its server's major version, the migrations it applied, and the
# extensions it is set up with.
ReferenceKey = tuple[int | None, frozenset[int], tuple[str, ...]]


@dataclass(frozen=True)
class Reference:
    schema: SchemaSnapshot | None
    fingerprint: str | None
    error: str | None = None


_CREATE_EXTENSION = re.compile(r'\bCREATE\s+EXTENSION\s+(?:IF\s+NOT\s+EXISTS\s+)?("(?:[^"]|"")+"|[^\s;"]+)', re.I)


def extensions_created(source: MigrationSource) -> dict[str, int]:
    """Extension name -> the first migration whose up file creates it (outside comments and strings), so that a
    finding about a missing extension says where the expectation comes from."""
    found: dict[str, int] = {}
    for m in source:
        if "extension" not in m.up_sql.lower():
            continue
        for match in _CREATE_EXTENSION.finditer(SqlText(m.up_sql).masked):
            raw = match.group(1)
            found.setdefault(raw[1:-1].replace('""', '"') if raw.startswith('"') else raw.lower(), m.version)
    return found


def default_reference_server(job: Job) -> str | None:
    """host:port where an audit without --reference-url creates its scratch databases: the first school's server
    (a later school's when that one cannot be read; one per PostgreSQL version). None when it creates none there
    (--reference-url given, or --no-schema)."""
    if job.command is not Command.AUDIT or not job.request.audit_schema or job.request.gate.reference_url:
        return None
    first = job.tenants[0]
    return (first.direct or first.target).server


def reference_key(state: LiveState, source: MigrationSource) -> ReferenceKey:
    applied = frozenset(v for v in state.applied if source.get(v) is not None)
    return state.server_major, applied, state.extensions


async def build_references(job: Job, states: dict[str, LiveState]) -> dict[ReferenceKey, Reference]:
    """One reference per key some school needs, each built on a server of the key's major version."""
    wanted = {reference_key(s, job.source) for s in states.values() if s.schema is not None}
    if not wanted:
        return {}
    servers, unknown = await _servers_by_major(job, states, {k[0] for k in wanted})
    references = {}
    for key in sorted(wanted, key=lambda k: (k[0] or 0, len(k[1]), sorted(k[1]), k[2])):
        server = servers.get(key[0])
        if server is None:
            references[key] = Reference(None, None, _no_server(key[0], bool(job.request.gate.reference_url), unknown))
        else:
            references[key] = await _build(server, job, key)
    return references


def _no_server(major: int | None, given: bool, unknown: Sequence[str]) -> str:
    version = f"PostgreSQL {major}" if major is not None else "this school's PostgreSQL version"
    if not given:
        return f"no reachable server of {version} to build it on (give --reference-url)"
    also = f"; not reached: {'; '.join(unknown)}" if unknown else ""
    return (
        f"no --reference-url server runs {version}, this school's version (it is never compared with another "
        f"version's schema): give one --reference-url per version{also}"
    )


async def _servers_by_major(
    job: Job, states: dict[str, LiveState], majors: set[int | None]
) -> tuple[dict[int | None, DatabaseTarget], list[str]]:
    """Major version -> the server to build its references on; and why any given --reference-url could not be
    asked its version (a finding names them)."""
    servers: dict[int | None, DatabaseTarget] = {}
    if job.request.gate.reference_url:
        targets = [DatabaseTarget.parse(url) for url in job.request.gate.reference_url]
        given, problems = await first_server_per_major(targets, job.scratch_options.session)
        for problem in problems:
            log.warning("audit.reference_server_not_reached", error=problem)
        servers.update(given.items())
        return servers, problems
    for tenant in job.tenants:  # their versions were read with their schemas
        state = states.get(tenant.id)
        if state is not None and state.schema is not None and state.server_major in majors:
            # Building a reference writes (a scratch database, migrations under SQLx's lock): on the server
            # itself, where the school has a `direct_url` (its `url`, read by the audit, may be a pooler).
            servers.setdefault(state.server_major, tenant.direct or tenant.target)
    return servers, []


async def _build(server: DatabaseTarget, job: Job, key: ReferenceKey) -> Reference:
    """Apply exactly the migrations (with the extensions) of `key` to a scratch database, read its schema, drop it."""
    major, versions, extensions = key
    subset = job.source.subset(lambda m: m.version in versions)
    options = replace(job.scratch_options, extensions=extensions, target_version=None)
    log.info("audit.reference", major=major, versions=len(versions), extensions=extensions, server=server.server)
    try:
        async with scratch_database(server, "ref", options.session) as scratch:
            return await build_expected(scratch, subset, options)
    except PermissionDenied as exc:  # most often no CREATEDB: the school is not audited (no_reference), not drift
        return Reference(None, None, f"{exc.message} ({_ELSEWHERE})")
    except DatabaseError as exc:
        return Reference(None, None, exc.message)


async def build_expected(empty: DatabaseTarget, source: MigrationSource, options: EngineOptions) -> Reference:
    """The expected schema of `source`: every file applied by migrations (`engine.provision`, with the options'
    extensions) to the new, empty database `empty`, then its schema read. The template builds use it too
    (orchestrator.template), so a template and the audit's reference are made the same way."""
    result = await engine.provision(empty, source, options)
    if not result.ok:
        message = result.error.message if result.error else result.status.value
        if isinstance(result.error, MigrationFailed) and result.error.sqlstate == UNDEFINED_FUNCTION:
            message += f" ({result.error.hint})"  # most often an extension the registry does not configure
        return Reference(None, None, f"applying the migrations to a scratch database failed: {message}")
    async with session(empty, options.session) as conn, conn.transaction(readonly=True):
        expected = await snapshot(conn)
    return Reference(expected, fingerprint(expected))
