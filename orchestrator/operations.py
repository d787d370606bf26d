"""The per-school work of each database command: which engine call, with the settings resolved for that school."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio

from . import engine
from .command import Command
from .connection import known_pooler
from .engine import EngineOptions
from .errors import DatabaseError
from .fleet import Work
from .job import Job
from .outcome import DatabaseResult
from .registry import Tenant

if TYPE_CHECKING:
    from .applied_bytes import AppliedBytes


@dataclass(frozen=True)
class Survey:
    """What one query per server (engine.list_databases) said about the selected schools' databases, by tenant id."""

    # For `migrate --create-missing`: no database yet, so it is created without a connection attempt first.
    missing: frozenset[str] = frozenset()
    # For `status` and `plan`: exists and is not a template, so the school's session does not look it up again.
    not_templates: frozenset[str] = frozenset()


# A server's maintenance session costs about what a dozen of its schools' template lookups cost (each adds ~8% to a
# school's status): with fewer selected schools on a server, each school looks itself up.
SURVEY_MIN_SCHOOLS = 12


def make_work(
    job: Job,
    schema_matches: Mapping[str, frozenset[int]] | None = None,
    survey: Survey = Survey(),
    history: Mapping[bytes, AppliedBytes] | None = None,
) -> Work:
    """`schema_matches`: for `resolve --restamp` and `--applied --schema-evidence`, the schools whose live schema is
    what their files produce, with the versions they were compared at (from an audit pass; see
    runner._schema_matches). `survey`: what the servers said about the schools' databases. `history`: for
    `resolve --restamp`, the file's committed versions by checksum (applied_bytes.versions)."""
    matches = schema_matches or {}
    command, source = job.command, job.source

    async def work(tenant: Tenant) -> DatabaseResult:
        options = job.engine_options(tenant)
        match command:
            case Command.MIGRATE:
                return await engine.migrate(
                    tenant.target,
                    source,
                    options,
                    create_missing=job.request.create_missing,
                    creator=creator_for(job, tenant, options),
                    known_missing=tenant.id in survey.missing,
                )
            case Command.PLAN:
                return await engine.plan(
                    tenant.target, source, options, not_a_template=tenant.id in survey.not_templates
                )
            case Command.STATUS:
                return await engine.status(
                    tenant.target, source, options, not_a_template=tenant.id in survey.not_templates
                )
            case Command.BOOTSTRAP:
                return await engine.bootstrap(tenant.target, source, options)
            case Command.PROVISION:
                return await engine.provision(tenant.target, source, options, creator=creator_for(job, tenant, options))
            case Command.REVERT:
                assert job.request.revert_to is not None
                return await engine.revert(
                    tenant.target, source, job.request.revert_to, options, dry_run=job.request.dry_run
                )
            case Command.RESOLVE:
                from . import resolve

                request = job.request
                assert request.resolve is not None
                how, version = request.resolve
                if how == "applied":
                    evidence = resolve.SchemaEvidence(matches.get(tenant.id)) if request.schema_evidence else None
                    return await resolve.mark_applied(tenant.target, source, version, options, evidence=evidence)
                if how == "restamp":
                    return await resolve.restamp(
                        tenant.target,
                        source,
                        version,
                        options,
                        schema_matches=tenant.id in matches,
                        allow_unverified=request.allow_unverified,
                        history=history,
                    )
                return await resolve.forget_version(tenant.target, version, options)
            case Command.AUDIT | Command.TEMPLATE:
                raise AssertionError("not per school: orchestrator.audit.run's and orchestrator.template_fleet's")

    return work


def creator_for(job: Job, tenant: Tenant, options: EngineOptions) -> engine.Creator | None:
    """How a new school's database is created: from its template, when it has one; otherwise plainly."""
    name = job.settings_for(tenant).template_name
    if not name:
        return None
    from . import template  # with the audit's reference builder: only for schools onboarded from a template

    return template.creator(name, job.source, options)


async def survey_servers(job: Job) -> Survey:
    """For `migrate --create-missing`: the schools whose database does not exist; for `status` and `plan`: the
    schools whose database is not a template. One query per server (a server that cannot be asked is left out: its
    schools take the usual path)."""
    wants_missing = job.command is Command.MIGRATE and job.request.create_missing
    if not wants_missing and job.command not in (Command.STATUS, Command.PLAN):
        return Survey()
    by_server: dict[str, list[Tenant]] = {}
    for tenant in job.tenants:
        by_server.setdefault(tenant.server, []).append(tenant)
    missing: set[str] = set()
    not_templates: set[str] = set()
    limiter = anyio.CapacityLimiter(job.request.budgets.concurrency)

    async def ask(tenants: list[Tenant]) -> None:
        async with limiter:
            first = tenants[0]
            try:
                found = await engine.list_databases(
                    first.target, [t.target.database for t in tenants], job.engine_options(first).session
                )
            except DatabaseError:
                return
            if wants_missing:
                missing.update(t.id for t in tenants if t.target.database not in found)
            elif not known_pooler(first.target):  # a pooler's database names may be aliases of other names
                not_templates.update(t.id for t in tenants if found.get(t.target.database) is False)

    async with anyio.create_task_group() as tg:
        for tenants in by_server.values():
            if wants_missing or len(tenants) >= SURVEY_MIN_SCHOOLS:
                tg.start_soon(ask, tenants)
    return Survey(frozenset(missing), frozenset(not_templates))
