"""The per-school work of each database command: which engine call, with the settings resolved for that school."""

from __future__ import annotations

import anyio

from . import engine, template
from .command import Command
from .engine import EngineOptions
from .errors import DatabaseError
from .fleet import Work
from .job import Job
from .outcome import DatabaseResult
from .registry import Tenant


def make_work(job: Job, schema_matches: frozenset[str] = frozenset(), missing: frozenset[str] = frozenset()) -> Work:
    """`schema_matches`: for `resolve --restamp`, the schools whose live schema is what the current files
    produce (from an audit pass). `missing`: for `migrate --create-missing`, the schools known to have no database
    yet (their servers were asked once), created without a connection attempt at the school first."""
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
                    known_missing=tenant.id in missing,
                )
            case Command.PLAN:
                return await engine.plan(tenant.target, source, options)
            case Command.STATUS:
                return await engine.status(tenant.target, source, options)
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

                assert job.request.resolve is not None
                how, version = job.request.resolve
                if how == "applied":
                    return await resolve.mark_applied(tenant.target, source, version, options)
                if how == "restamp":
                    matches = tenant.id in schema_matches
                    return await resolve.restamp(tenant.target, source, version, options, schema_matches=matches)
                return await resolve.forget_version(tenant.target, version, options)
            case Command.AUDIT:
                raise AssertionError("the audit's work is orchestrator.audit.run's")

    return work


def creator_for(job: Job, tenant: Tenant, options: EngineOptions) -> engine.Creator | None:
    """How a new school's database is created: from its template, when it has one; otherwise plainly."""
    name = job.settings_for(tenant).template_name
    return template.creator(name, job.source, options) if name else None


async def missing_databases(job: Job) -> frozenset[str]:
    """For `migrate --create-missing`: the schools whose database does not exist, one query per server (a server
    that cannot be asked is left out: its schools take the usual path, a connection attempt first)."""
    if job.command is not Command.MIGRATE or not job.request.create_missing:
        return frozenset()
    by_server: dict[str, list[Tenant]] = {}
    for tenant in job.tenants:
        by_server.setdefault(tenant.server, []).append(tenant)
    missing: set[str] = set()
    limiter = anyio.CapacityLimiter(job.request.budgets.concurrency)

    async def ask(tenants: list[Tenant]) -> None:
        async with limiter:
            first = tenants[0]
            try:
                found = await engine.existing_databases(
                    first.target, [t.target.database for t in tenants], job.engine_options(first).session
                )
            except DatabaseError:
                return
            missing.update(t.id for t in tenants if t.target.database not in found)

    async with anyio.create_task_group() as tg:
        for tenants in by_server.values():
            tg.start_soon(ask, tenants)
    return frozenset(missing)
