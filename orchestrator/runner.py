"""From a prepared job to a report: one pipeline (validate, select, fan out, report) for every command, the audit
included. The CLI and the Python API both go through here; neither holds logic of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from . import tracing
from .command import Command
from .errors import ModifiedMigration, UsageError, some
from .fleet import Observer, run_fleet, skipped_run
from .job import Job
from .operations import make_work, survey_servers
from .report import RunReport

if TYPE_CHECKING:
    from .audit.model import AuditReport
    from .template_fleet import TemplateReport

Report: TypeAlias = "RunReport | AuditReport | TemplateReport"


async def run(job: Job, observer: Observer | None = None) -> RunReport:
    """Run a database command (not the audit: see `run_any`) over the job's schools (traced when configured)."""
    with tracing.run_span(job) as span:
        report = await _run(job, observer)
        span.finish(report)
        return report


async def _run(job: Job, observer: Observer | None) -> RunReport:
    request = job.request
    assert job.command not in (Command.AUDIT, Command.TEMPLATE), "see run_any and template_fleet.keep_templates"
    if job.lint is not None and job.lint.errors and not request.gate.allow_unsafe:
        from . import gate

        # Judge each file by where it would run (raises InvalidInput before any write).
        gate.refuse_where_it_runs(job, await plan_first(job))
    rehearsal = None
    if request.gate.rehearse and job.command.applies_migrations:
        from .rehearsal import rehearse

        rehearsal = await rehearse(job)
    if rehearsal is not None and not rehearsal.ok:
        fleet_run = skipped_run(job.tenants, f"rehearsal failed, no school was touched: {rehearsal.error}", observer)
    else:
        work = make_work(job, await _schema_matches(job), await survey_servers(job))
        fleet_run = await run_fleet(
            job.tenants, tracing.school_spans(work, job.command.value), job.fleet_options, observer
        )
    budgets, lint = job.fleet_options.budgets, job.lint
    unsafe_findings = []
    if lint and request.gate.allow_unsafe:
        from .lint.render import editor_line

        unsafe_findings = [editor_line(f) for f in lint.errors]
    return RunReport(
        command=job.command.value,
        run=fleet_run,
        migrations_dir=str(request.migrations),
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
        },
        rehearsal=rehearsal.lines + ([rehearsal.error] if rehearsal.error else []) if rehearsal else None,
        checksums={m.version: m.checksum.hex() for m in job.source},
    )


async def _schema_matches(job: Job) -> frozenset[str]:
    """For `resolve --restamp` only: a read-only audit pass, and the schools whose live schema equals what the
    current files produce (re-stamping anything else would hide a real difference)."""
    if job.command is not Command.RESOLVE or job.request.resolve is None or job.request.resolve[0] != "restamp":
        return frozenset()
    from .audit.run import run_audit

    audit = await run_audit(job.as_command(Command.AUDIT))
    return frozenset(s.tenant.id for s in audit.schools if s.fingerprint and s.fingerprint == s.expected_fingerprint)


async def run_any(job: Job, observer: Observer | None = None) -> Report:
    """Every command, the audit and `template` included (their modules are loaded only when they run)."""
    if job.command is Command.TEMPLATE:
        from .template_fleet import keep_templates

        return await keep_templates(job)
    if job.command is Command.AUDIT:
        from .audit.run import run_audit

        with tracing.run_span(job) as span:
            report = await run_audit(job, observer)
            span.finish(report)
            return report
    return await run(job, observer)


async def plan_first(job: Job, observer: Observer | None = None) -> RunReport:
    """The read-only plan pass a `migrate` or `revert` job makes before writing (--preflight): same schools, same
    options; `planned` schools are those with something to do."""
    if job.command is Command.REVERT:
        return await run(job.as_command(Command.REVERT, dry_run=True), observer)
    if job.command is Command.RESOLVE:
        return await run(job.as_command(Command.STATUS), observer)  # where each school's ledger stands
    return await run(job.as_command(Command.PLAN), observer)


def split_in_plan(planned: RunReport) -> UsageError | None:
    """From the read-only plan pass: files whose applied bytes differ on some schools (`modified`) while the
    rollout would apply them elsewhere. Refused before any write: one file, one checksum across the fleet."""
    modified: dict[int, list[str]] = {}
    for o in planned.outcomes:
        if isinstance(o.result.error, ModifiedMigration):
            for version in o.result.error.versions:
                modified.setdefault(version, []).append(o.tenant.id)
    if not modified:
        return None
    lines = [
        f"version {v}: the file differs from what {len(ids)} school(s) applied ({some(ids, 10)})"
        for v, ids in sorted(modified.items())
    ]
    return UsageError(
        "the plan pass found migration files that differ from the bytes schools already applied; applying them "
        "elsewhere would split the fleet. Nothing was written:\n  " + "\n  ".join(lines),
        hint="restore each file as it was applied (`git log -p -- FILE`) and put the change in a new migration "
        "(`orchestrator new ...`); or revert those schools first",
    )
