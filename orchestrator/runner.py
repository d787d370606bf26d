"""From a prepared job to a report: one pipeline (validate, select, fan out, report) for every command, the audit
included. The CLI and the Python API both go through here; neither holds logic of its own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, TypeAlias, cast

import anyio

from . import tracing
from .command import Command
from .errors import AuthFailed, ModifiedMigration, SplitOnboarding, UsageError, some
from .fleet import FleetOptions, FleetRun, Observer, Work, run_fleet, skipped_run
from .job import Job
from .operations import make_work, survey_servers
from .outcome import DatabaseResult, Status
from .registry import Tenant
from .report import RunReport

if TYPE_CHECKING:
    from .applied_bytes import AppliedBytes
    from .audit.model import AuditReport
    from .rehearsal import Rehearsal
    from .template_fleet import TemplateReport

Report: TypeAlias = "RunReport | AuditReport | TemplateReport"


async def run(job: Job, observer: Observer | None = None, *, planned: RunReport | None = None) -> RunReport:
    """Run a database command (not the audit: see `run_any`) over the job's schools (traced when configured).
    `planned`: the job's read-only plan pass, when the caller made it (the CLI shows it first): not made again."""
    with tracing.run_span(job) as span:
        report = await _run(job, observer, planned)
        span.finish(report)
        return report


async def _run(job: Job, observer: Observer | None, planned: RunReport | None) -> RunReport:
    request = job.request
    assert job.command not in (Command.AUDIT, Command.TEMPLATE), "see run_any and template_fleet.keep_templates"
    if planned is None and needs_plan(job):
        planned = await plan_first(job)
    if planned is not None and planned.interrupted:  # Ctrl-C / SIGTERM during the plan pass: nothing is written
        skipped = skipped_run(job.tenants, "interrupted during the read-only plan pass", observer)
        fleet_run, rehearsal = replace(skipped, halted=None, interrupted=True), None
    else:
        if planned is not None:
            refuse_before_writing(job, planned)
        fleet_run, rehearsal = await _rehearse_and_run(job, observer, planned)
    budgets, lint = job.fleet_options.budgets, job.lint
    unsafe_findings = []
    if lint and request.gate.allow_unsafe:
        from .lint.render import editor_line

        unsafe_findings = [editor_line(f) for f in lint.errors]
    report = RunReport(
        command=job.command.value,
        run=fleet_run,
        migrations_dirs=[str(d) for d in request.migrations],
        latest_version=job.source.latest,
        options={
            "concurrency": budgets.concurrency,
            "per_server": dict(job.per_server),
            "max_failures": str(budgets.max_failures) if budgets.max_failures else None,
            "retries": budgets.retries,
            "target_version": request.target_version,
            "revert_to": request.revert_to,
            "dry_run": request.dry_run,
            "resume_from": str(request.selection.resume) if request.selection.resume else None,
            "allow_unsafe": request.gate.allow_unsafe,
            "unsafe_findings": unsafe_findings,
            "rehearsed": rehearsal is not None,
            "resolve": _resolve_options(job),
        },
        rehearsal=rehearsal.lines + ([rehearsal.error] if rehearsal.error else []) if rehearsal else None,
        checksums={m.version: m.checksum.hex() for m in job.source},
    )
    refuse_split_onboarding(report)
    return report


async def _rehearse_and_run(
    job: Job, observer: Observer | None, planned: RunReport | None
) -> tuple[FleetRun, Rehearsal | None]:
    rehearsal = None
    if job.request.gate.rehearse and job.command.applies_migrations:
        from .rehearsal import rehearse

        rehearsal = await rehearse(job)
    if rehearsal is not None and not rehearsal.ok:
        reason = f"rehearsal failed, no school was touched: {rehearsal.error}"
        return skipped_run(job.tenants, reason, observer), rehearsal
    history = await _restamp_history(job)
    work = make_work(job, await _schema_matches(job, history), await survey_servers(job), history)
    options = job.fleet_options
    if planned is not None:
        work, options = _after_the_plan_pass(work, options, planned, job.command)
    fleet_run = await run_fleet(job.tenants, tracing.school_spans(work, job.command.value), options, observer)
    return fleet_run, rehearsal


def _after_the_plan_pass(
    work: Work, options: FleetOptions, planned: RunReport, command: Command
) -> tuple[Work, FleetOptions]:
    """What the plan pass found is not paid for twice: a server down costs one round of timeouts, a refused login
    is not tried again (repeated failures can lock the account), and a school `migrate` found up to date is not
    opened again (an idempotent rollout costs one pass, not two): the school ends as the plan pass saw it."""
    if planned.run.servers_down:
        down = {server: f"{why} (in the plan pass)" for server, why in planned.run.servers_down.items()}
        options = replace(options, servers_down=down)
    settled: dict[str, tuple[DatabaseResult, str]] = {}
    for o in planned.outcomes:
        if isinstance(o.result.error, AuthFailed):
            settled[o.tenant.id] = (o.result, "not tried again: the plan pass's login was refused")
        elif command is Command.MIGRATE and o.result.status is Status.UP_TO_DATE and o.result.error is None:
            settled[o.tenant.id] = (o.result, "up to date in the read-only plan pass: not opened again")
    if not settled:
        return work, options

    async def once(tenant: Tenant) -> DatabaseResult:
        seen = settled.get(tenant.id)
        if seen is None:
            return await work(tenant)
        result, why = seen
        return replace(result, notes=[*result.notes, why])

    return once, options


async def _restamp_history(job: Job) -> dict[bytes, AppliedBytes]:
    """For `resolve --restamp V` only: V's committed versions by checksum, where the applied bytes are looked for
    (applied_bytes.py; read once per run, in a thread: git is bounded in time but not instant)."""
    request = job.request
    if job.command is not Command.RESOLVE or request.resolve is None or request.resolve[0] != "restamp":
        return {}
    migration = job.source.get(request.resolve[1])
    if migration is None:
        return {}
    from .applied_bytes import versions

    return await anyio.to_thread.run_sync(versions, migration.up_path)


async def _schema_matches(job: Job, history: Mapping[bytes, AppliedBytes]) -> dict[str, frozenset[int]]:
    """For `resolve --restamp` and `resolve --applied --schema-evidence` only: a read-only audit pass, and the
    schools whose live schema equals what their files produce (re-stamping anything else would hide a real
    difference), with the versions each was compared at. With --schema-evidence, the files are each school's
    applied ones and the version being resolved (for the schools that have not applied it)."""
    request = job.request
    if job.command is not Command.RESOLVE or request.resolve is None:
        return {}
    how, version = request.resolve
    if how == "restamp":
        if not history and not request.allow_unverified:
            return {}  # no applied bytes to find: refused on every school that would need it, whatever the schemas
        plus = None
    elif how == "applied" and request.schema_evidence:
        plus = version
    else:
        return {}
    from .audit.run import matching_schemas

    return await matching_schemas(job.as_command(Command.AUDIT), plus=plus)


def _resolve_options(job: Job) -> dict[str, object] | None:
    """`resolve`'s action in the report's options: what was recorded, and on what grounds."""
    request = job.request
    if job.command is not Command.RESOLVE or request.resolve is None:
        return None
    how, version = request.resolve
    return {
        "action": how,
        "version": version,
        "schema_evidence": request.schema_evidence,
        "allow_unverified": request.allow_unverified,
    }


async def run_any(job: Job, observer: Observer | None = None, *, planned: RunReport | None = None) -> Report:
    """Every command, the audit and `template` included (their modules are loaded only when they run). `planned`:
    as for `run`."""
    if job.command is Command.TEMPLATE:
        from .template_fleet import keep_templates

        return await keep_templates(job)
    if job.command is Command.AUDIT:
        from .audit.run import run_audit

        with tracing.run_span(job) as span:
            report = await run_audit(job, observer)
            span.finish(report)
            return report
    return await run(job, observer, planned=planned)


def plans_first(job: Job) -> bool:
    """A rollout over a registry (migrate, revert, resolve, provision) makes a read-only plan pass before it writes,
    which refuses a split fleet; only --no-preflight (`Gate.preflight`) leaves it out. One database (-D): no pass."""
    request = job.request
    return job.command.plans_first and job.writes and not request.single and request.gate.preflight


def preflight_skipped(job: Job) -> bool:
    """A rollout over a registry that --no-preflight left without its plan pass (the command line warns)."""
    return job.command.plans_first and job.writes and not job.request.single and not job.request.gate.preflight


def needs_plan(job: Job) -> bool:
    """The plan pass, or the safety gate's: lint errors refuse the run only in files that would run somewhere."""
    gate_errors = job.lint is not None and bool(job.lint.errors) and not job.request.gate.allow_unsafe
    return plans_first(job) or gate_errors


def refuse_before_writing(job: Job, planned: RunReport) -> None:
    """From the plan pass, before any write (raises InvalidInput): a split fleet, then the safety gate's errors in
    files that would run. An interrupted pass refuses nothing: the run stops there, writing nothing."""
    if planned.interrupted:
        return
    if plans_first(job):
        split = split_in_plan(planned, _restamped(job))
        if split is not None:
            raise split
    if job.lint is not None and job.lint.errors and not job.request.gate.allow_unsafe:
        from . import gate

        gate.refuse_where_it_runs(job, planned)  # each file judged by where it would run (new schools apart)


def _restamped(job: Job) -> frozenset[int]:
    """`resolve --restamp V` is the way out of a harmless edit of V: V's other bytes are what it is for."""
    resolve = job.request.resolve
    if job.command is Command.RESOLVE and resolve is not None and resolve[0] == "restamp":
        return frozenset({resolve[1]})
    return frozenset()


async def plan_first(job: Job, observer: Observer | None = None) -> RunReport:
    """The read-only plan pass a rollout makes before writing (see `plans_first`): same schools, same options;
    `planned` schools are those with something to do."""
    if job.command is Command.REVERT:
        return await run(job.as_command(Command.REVERT, dry_run=True), observer)
    if job.command is Command.RESOLVE:
        return await run(job.as_command(Command.STATUS), observer)  # where each school's ledger stands
    return await run(job.as_command(Command.PLAN), observer)


def split_in_plan(planned: RunReport, allowed: Collection[int] = ()) -> UsageError | None:
    """From the read-only plan pass: files whose applied bytes differ on some schools (`modified`), except the
    `allowed` versions. Refused before any write: one file, one checksum across the fleet."""
    modified: dict[int, list[str]] = {}
    for o in planned.outcomes:
        if isinstance(o.result.error, ModifiedMigration):
            for version in o.result.error.versions:
                if version not in allowed:
                    modified.setdefault(version, []).append(o.tenant.id)
    lines = [
        f"version {v}: the file differs from what {len(ids)} school(s) applied ({some(ids, 10)})"
        for v, ids in sorted(modified.items())
    ]
    return split_fleet("the plan pass", "schools already applied", lines) if lines else None


def refuse_split_onboarding(report: RunReport) -> None:
    """A school the run would have created from files that differ from what its template holds was refused (left
    uncreated, `modified`). When the run wrote nothing anywhere, that is refused input, as the plan pass refuses:
    raises InvalidInput. Otherwise the report stands: the rollout halted at it, as at any `modified` school."""
    refused = [o for o in report.outcomes if isinstance(o.result.error, SplitOnboarding)]
    wrote = any(
        o.result.created_database or o.result.steps or o.result.status is Status.APPLIED for o in report.outcomes
    )
    if not refused or wrote:
        return
    errors = [cast(SplitOnboarding, o.result.error) for o in refused]
    lines = sorted({line for error in errors for line in error.lines})
    raise split_fleet("onboarding", "the template holds", lines, hint=errors[0].hint)


def split_fleet(found_by: str, holders: str, lines: list[str], *, hint: str | None = None) -> UsageError:
    """One file, one checksum across the fleet: the refusal, in the same words wherever it is found."""
    return UsageError(
        f"{found_by} found migration files that differ from the bytes {holders}; applying them elsewhere would "
        "split the fleet. Nothing was written:\n  " + "\n  ".join(lines),
        hint=hint
        or "restore each file as it was applied (`git log -p -- FILE`) and put the change in a new migration "
        "(`orchestrator new ...`); or revert those schools first",
    )
