"""The nightly audit over the fleet: history drift and schema drift, read-only on every school.

1. Every school is read (history, extensions, live schema) through the fleet's budgets, read-only.
2. For each distinct set of applied migrations, the expected schema is built once by applying exactly those
   migrations to a scratch database (on --reference-url's server, or the first reachable school's server), read,
   and dropped. A fleet of 1,000 schools at one version builds one scratch database, not 1,000.
3. Each school's live schema is compared with the expected one; identical fingerprints skip the comparison.
Live schemas are kept once per fingerprint, so memory grows with the number of distinct schemas, not schools.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .. import engine
from ..bootstrap import scratch_database
from ..connection import session
from ..engine import EngineOptions
from ..errors import DatabaseError
from ..fleet import Observer, run_fleet
from ..job import Job
from ..logsetup import get_logger
from ..outcome import DatabaseResult, Status
from ..registry import Tenant
from ..source import MigrationSource
from ..target import DatabaseTarget
from .inspect import LiveState, inspect_school
from .model import AuditReport, Finding, SchoolAudit
from .schema import SchemaSnapshot, diff, fingerprint, snapshot

log = get_logger("orchestrator.audit")

# What a school's expected schema depends on: the migrations it applied, and the extensions it is set up with.
ReferenceKey = tuple[frozenset[int], tuple[str, ...]]


@dataclass(frozen=True)
class Reference:
    schema: SchemaSnapshot | None
    fingerprint: str | None
    error: str | None = None


async def run_audit(job: Job, observer: Observer | None = None) -> AuditReport:
    started = datetime.now(UTC)
    states: dict[str, LiveState] = {}
    schemas_by_fingerprint: dict[str, SchemaSnapshot] = {}
    fingerprints: dict[str, str] = {}
    with_schema = job.request.audit_schema

    async def work(tenant: Tenant) -> DatabaseResult:
        state = await inspect_school(
            tenant.target,
            job.source,
            job.engine_options(tenant),
            expected_extensions=job.configured_extensions(tenant),
            schema=with_schema,
        )
        if state.schema is not None:
            fp = fingerprint(state.schema)
            state.schema = schemas_by_fingerprint.setdefault(fp, state.schema)
            fingerprints[tenant.id] = fp
        states[tenant.id] = state
        if state.result.error is not None and state.result.status not in (
            Status.UNREACHABLE,
            Status.NO_DATABASE,
            Status.DENIED,
        ):
            # Connected but not read (a lock, a missing grant, a timeout): never counted clean.
            state.result.status = Status.UNREADABLE
        return state.result

    fleet_run = await run_fleet(job.tenants, work, job.fleet_options, observer)  # read-only: one wave, no halt

    references: dict[ReferenceKey, Reference] = {}
    if with_schema:
        references = await _build_references(job, states)

    schools = []
    for outcome in fleet_run.outcomes:
        state = states.get(outcome.tenant.id, LiveState(outcome.result))
        audit = SchoolAudit(outcome.tenant, state.result, list(state.findings), fingerprints.get(outcome.tenant.id))
        if with_schema and state.schema is not None:
            _compare(audit, state, references.get(_key(state, job.source)))
        if audit.findings and audit.result.status is Status.UP_TO_DATE:
            audit.result.status = Status.DRIFT
        schools.append(audit)
    return AuditReport(
        schools,
        started,
        datetime.now(UTC),
        str(job.request.migrations),
        job.source.latest,
        interrupted=fleet_run.interrupted,
    )


def _key(state: LiveState, source: MigrationSource) -> ReferenceKey:
    return frozenset(v for v in state.applied if source.get(v) is not None), state.extensions


def _compare(audit: SchoolAudit, state: LiveState, reference: Reference | None) -> None:
    assert state.schema is not None
    if reference is None or reference.schema is None:
        why = reference.error if reference else "no reference was built"
        audit.findings.append(Finding("schema", f"expected schema could not be built: {why}"))
        return
    audit.expected_fingerprint = reference.fingerprint
    if audit.fingerprint != reference.fingerprint:
        audit.findings.extend(diff(reference.schema, state.schema))


async def _build_references(job: Job, states: dict[str, LiveState]) -> dict[ReferenceKey, Reference]:
    wanted = {_key(s, job.source) for s in states.values() if s.schema is not None}
    if not wanted:
        return {}
    server = _reference_server(job, states)
    if server is None:
        return {k: Reference(None, None, "no reachable server to build it on (give --reference-url)") for k in wanted}
    references = {}
    for key in sorted(wanted, key=lambda k: (len(k[0]), sorted(k[0]), k[1])):
        references[key] = await _build_reference(server, job, key)
    return references


def _reference_server(job: Job, states: dict[str, LiveState]) -> DatabaseTarget | None:
    if job.request.gate.reference_url:
        return DatabaseTarget.parse(job.request.gate.reference_url)
    for tenant in job.tenants:
        state = states.get(tenant.id)
        if state is not None and state.schema is not None:
            return tenant.target
    return None


async def _build_reference(server: DatabaseTarget, job: Job, key: ReferenceKey) -> Reference:
    """Apply exactly the migrations (with the extensions) of `key` to a scratch database, read its schema, drop it."""
    versions, extensions = key
    subset = MigrationSource(job.source.directory, tuple(m for m in job.source if m.version in versions))
    options = replace(job.scratch_options, extensions=extensions, target_version=None)
    log.info("audit.reference", versions=len(versions), extensions=extensions, server=server.server)
    try:
        async with scratch_database(server, "ref", options.session) as scratch:
            return await build_expected(scratch, subset, options)
    except DatabaseError as exc:
        return Reference(None, None, exc.message)


async def build_expected(empty: DatabaseTarget, source: MigrationSource, options: EngineOptions) -> Reference:
    """The expected schema of `source`: every file applied by migrations (`engine.provision`, with the options'
    extensions) to the new, empty database `empty`, then its schema read. The template builds use it too
    (orchestrator.template), so a template and the audit's reference are made the same way."""
    result = await engine.provision(empty, source, options)
    if not result.ok:
        message = result.error.message if result.error else result.status.value
        return Reference(None, None, f"applying the migrations to a scratch database failed: {message}")
    async with session(empty, options.session) as conn, conn.transaction(readonly=True):
        expected = await snapshot(conn)
    return Reference(expected, fingerprint(expected))
