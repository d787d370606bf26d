"""The nightly audit over the fleet: history drift and schema drift, read-only on every school.

1. Every school is read (history, extensions, live schema) through the fleet's budgets, read-only.
2. For each distinct set of applied migrations (and server major version: catalog text differs between versions),
   the expected schema is built once by applying exactly those migrations to a scratch database on a server of that
   major version (audit/reference.py), read, and dropped. A fleet of 1,000 schools at one version builds one
   scratch database, not 1,000.
3. Each school's live schema is compared with the expected one; identical fingerprints skip the comparison.
Live schemas are kept once per fingerprint, so memory grows with the number of distinct schemas, not schools.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from .. import tracing
from ..fleet import FleetRun, Observer, run_fleet
from ..job import Job
from ..outcome import DatabaseResult, Status
from ..registry import Tenant
from .inspect import LiveState, inspect_school
from .model import AuditReport, SchoolAudit
from .reference import Reference, ReferenceKey, build_references, extensions_created, reference_key
from .schema import SchemaSnapshot, diff, fingerprint


async def run_audit(job: Job, observer: Observer | None = None) -> AuditReport:
    started = datetime.now(UTC)
    with_schema = job.request.audit_schema
    fleet_run, states, fingerprints = await read_schools(job, observer)

    references: dict[ReferenceKey, Reference] = {}
    created: dict[str, int] = {}
    if with_schema:
        references = await build_references(job, states)
        created = extensions_created(job.source)

    schools = []
    for outcome in fleet_run.outcomes:
        state = states.get(outcome.tenant.id, LiveState(outcome.result))
        audit = SchoolAudit(
            outcome.tenant,
            state.result,
            list(state.findings),
            fingerprints.get(outcome.tenant.id),
            server_major=state.server_major,
        )
        if with_schema and state.schema is not None:
            origins = _extension_origins(job, outcome.tenant, state, created)
            _compare(audit, state, references.get(reference_key(state, job.source)), job.source.where, origins)
        if audit.result.status is Status.UP_TO_DATE:
            audit.result.status = audit.status  # drift, or no_reference: read, but its schema not compared
        schools.append(audit)
    return AuditReport(
        schools,
        started,
        datetime.now(UTC),
        [str(d) for d in job.request.migrations],
        job.source.latest,
        interrupted=fleet_run.interrupted,
    )


async def read_schools(
    job: Job, observer: Observer | None = None
) -> tuple[FleetRun, dict[str, LiveState], dict[str, str]]:
    """Step 1, read-only: every school's history, extensions and (unless --no-schema) live schema, through the
    fleet's budgets; and each live schema's fingerprint, by tenant id."""
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
            extensions_origin=job.extensions_origin(tenant) or "",
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

    # Read-only: one wave, no halt. Traced like every command's schools when tracing is configured.
    fleet_run = await run_fleet(job.tenants, tracing.school_spans(work, "audit"), job.fleet_options, observer)
    return fleet_run, states, fingerprints


async def matching_schemas(job: Job, *, plus: int | None = None) -> dict[str, frozenset[int]]:
    """Read-only (for `resolve`): the schools whose live schema equals what their applied migrations produce, each
    with the versions it was compared at (its applied ones). With `plus`, only schools that have not applied that
    version, each compared with what their applied migrations and `plus` produce (its SQL was run by hand)."""
    _, states, fingerprints = await read_schools(job)
    compared = {
        tenant_id: replace(state, applied=state.applied | {plus}) if plus is not None else state
        for tenant_id, state in states.items()
        if plus is None or plus not in state.applied
    }
    references = await build_references(job, compared)
    matches = {}
    for tenant_id, state in compared.items():
        reference = references.get(reference_key(state, job.source))
        if reference is not None and reference.fingerprint and reference.fingerprint == fingerprints.get(tenant_id):
            matches[tenant_id] = states[tenant_id].applied
    return matches


def _extension_origins(job: Job, tenant: Tenant, state: LiveState, created: dict[str, int]) -> dict[str, str]:
    """Extension name -> where the school's expected schema gets it: configured (by which layer), or created by a
    migration the school applied."""
    origins = {name: f"created by migration {v}" for name, v in created.items() if v in state.applied}
    configured = job.extensions_origin(tenant)
    for name in state.extensions:
        also = origins.get(name)
        origins[name] = (configured or "configured") + (f"; {also}" if also else "")
    return origins


def _compare(
    audit: SchoolAudit, state: LiveState, reference: Reference | None, where: str, origins: dict[str, str]
) -> None:
    assert state.schema is not None
    if reference is None or reference.schema is None:
        # Not drift: the school could not be compared (audit.not_audited); what was read still counts.
        audit.reference_error = (reference.error if reference else None) or "no reference was built"
        return
    audit.expected_fingerprint = reference.fingerprint
    if state.fileless:
        # --ignore-missing, and versions applied with no file here (another migrator's): they cannot be rebuilt,
        # so the school is compared with what the files create, and whatever else it has is not drift.
        audit.fileless = state.fileless
        listed = ", ".join(map(str, state.fileless))
        audit.result.notes.append(
            f"schema compared only with what the files in {where} create: version(s) {listed} are applied with no "
            "file there (--ignore-missing) and cannot be rebuilt, so objects only this school has are not counted "
            "as drift; give every --migrations directory for a full comparison"
        )
    if audit.fingerprint != reference.fingerprint:
        audit.findings.extend(diff(reference.schema, state.schema, origins, covered_only=bool(state.fileless)))
