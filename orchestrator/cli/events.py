"""The run's output as structlog events, for --log-format json: what the console shows a human (plan, plan pass,
each school's result, summary, next steps, files written), one JSON object per line on stderr.

Event names and fields are stable (docs/report.md lists them); the figures are the report's own. A school's
result is `info` when it ended ok and `warning` when it did not, so --log-level warning keeps only what needs
attention.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InvalidInput
from ..fleet import TenantOutcome
from ..job import Job
from ..logsetup import get_logger
from ..outcome import DatabaseResult, Status
from ..report import RunReport

if TYPE_CHECKING:
    from ..audit.model import AuditReport
    from ..lint.findings import LintReport
    from ..template_fleet import TemplateGroup, TemplateReport

log = get_logger("orchestrator.cli")


def invalid_input(error: InvalidInput) -> None:
    log.error("invalid_input", code=error.code, message=error.message, hint=error.hint)


def plan(job: Job) -> None:
    source, request = job.source, job.request
    fields: dict[str, Any] = {
        "command": job.command.value,
        "migrations": len(source),
        "latest": source.latest,
        "source": str(source.where),
        "read_only": not job.writes,
    }
    if request.single:
        fields["databases"] = 1
    else:
        budgets = job.fleet_options.budgets
        fields.update(schools=len(job.tenants), servers=len(job.servers))
        if job.writes:
            fields.update(
                waves={name: len(group) for name, group in job.waves},
                concurrency=budgets.concurrency,
                per_server=sorted(set(job.per_server.values())),
                max_failures=str(budgets.max_failures) if budgets.max_failures else None,
                retries=budgets.retries,
            )
    log.info("plan", **fields)
    warnings(job)


def warnings(job: Job) -> None:
    for warning in job.source.warnings:
        log.warning("migrations.warning", message=str(warning))


def no_preflight() -> None:
    log.warning("preflight.skipped", message="--no-preflight: no read-only plan pass; an edited file is not refused "
                "before writing")  # fmt: skip


def preflight(planned: RunReport) -> None:
    """The read-only plan pass: where the fleet stands and who would get what (each school's own outcome is the
    rollout's `school_result`)."""
    would_get: dict[tuple[int, ...], int] = {}
    for o in planned.outcomes:
        if o.result.status is Status.PLANNED:
            key = tuple(s.version for s in o.result.steps)
            would_get[key] = would_get.get(key, 0) + 1
    log.info(
        "preflight",
        command=planned.command,
        schools=len(planned.outcomes),
        versions=histogram(planned),
        would_get=[{"versions": list(k), "schools": n} for k, n in sorted(would_get.items(), key=lambda kv: -kv[1])],
        counts=planned.counts(),
        servers_down=servers_found_down(planned),
    )


def servers_found_down(planned: RunReport) -> dict[str, str]:
    """Each server the plan pass found down, with the first error that said so (the rollout's results for its
    schools say only `server down`: the cause is said here, once)."""
    down: dict[str, str] = {}
    for o in planned.outcomes:
        r = o.result
        if r.server in planned.run.servers_down and r.error is not None and r.error.no_answer:
            down.setdefault(r.server, r.error.message.splitlines()[0])
    return down


def histogram(report: RunReport) -> dict[str, int]:
    """Schools per version; "none" for those with no version yet."""
    return {("none" if v is None else str(v)): n for v, n in report.version_histogram()}


def school_result(outcome: TenantOutcome) -> None:
    r = outcome.result
    (log.info if r.ok else log.warning)("school_result", tenant=outcome.tenant.id, **result_fields(r))


def result_fields(r: DatabaseResult) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "database": r.database,
        "server": r.server,
        "status": r.status.value,
        "ok": r.ok,
        "version_before": r.version_before,
        "version_after": r.version_after,
        "applied": r.applied_versions,
        "ms": round(r.duration_s * 1000, 1),
    }
    if r.pending:
        fields["pending"] = r.pending
    if r.attempts != 1:
        fields["attempts"] = r.attempts
    if r.notes:
        fields["notes"] = r.notes
    if r.error is not None:
        fields.update(code=r.error.code, message=r.error.message, hint=r.error.hint)
    return fields


def gate_and_rehearsal(job: Job, report: RunReport) -> None:
    if job.lint is not None and job.lint.errors and job.request.gate.allow_unsafe:
        log.warning("gate.unsafe_allowed", findings=report.options.get("unsafe_findings", []))
    if report.rehearsal:
        log.info("rehearsal", lines=report.rehearsal)


def summary(report: RunReport, *, versions: bool) -> None:
    run = report.run
    fields: dict[str, Any] = {
        "command": report.command,
        "schools": len(report.outcomes),
        "counts": report.counts(),
        "ok": report.ok,
        "duration_s": round(run.duration_s, 3),
    }
    if versions:
        fields["versions"] = histogram(report)
    if run.servers_down:
        fields["servers_down"] = dict(run.servers_down)
    if run.halted:
        fields["halted"] = run.halted
    if run.interrupted:
        fields.update(interrupted=True, aborted=bool(run.aborted))
    (log.info if report.ok else log.warning)("summary", **fields)


def next_steps(command: str, report_path: Path | None) -> None:
    resume = f"orchestrator {command} --resume {report_path}" if report_path else None
    log.info("next_steps", message="fix what each school's result says, then run again", resume=resume)


def wrote(path: Path) -> None:
    log.info("wrote", path=str(path))


def output_not_written(flag: str, path: Path, reason: str, hint: str) -> None:
    log.error("output_not_written", flag=flag, path=str(path), reason=reason, hint=hint)


def metrics_pushed(url: str) -> None:
    log.info("metrics_pushed", pushgateway=url)


def metrics_not_pushed(url: str, reason: str) -> None:
    log.warning("metrics_not_pushed", pushgateway=url, reason=reason)


def scratch_databases(server: str, message: str, hint: str) -> None:
    """Where the audit will create scratch databases: the audit's own event."""
    get_logger("orchestrator.audit").warning("audit.scratch_databases", server=server, message=message, hint=hint)


def aborted() -> None:
    log.warning("aborted", message="not confirmed: nothing was written")


def audit(report: AuditReport) -> None:
    """One event per school (its drift verdict), then the summary."""
    for s in report.schools:
        fields: dict[str, Any] = {
            "database": s.result.database,
            "server": s.result.server,
            "status": "drift" if s.drift and s.readable else s.result.status.value,
            "drift": s.drift,
            "version": s.result.version_after,
            "findings": [f.text for f in s.findings],
            "ms": round(s.result.duration_s * 1000, 1),
        }
        if s.result.error is not None:
            fields.update(code=s.result.error.code, message=s.result.error.message, hint=s.result.error.hint)
        (log.warning if s.drift else log.info)("school_result", tenant=s.tenant.id, **fields)
    (log.info if report.clean else log.warning)(
        "summary", command="audit", counts=report.counts(), ok=report.clean, duration_s=round(report.duration_s, 3)
    )


def template_plan(job: Job, groups: list[TemplateGroup]) -> None:
    log.info(
        "plan",
        command=job.command.value,
        templates=sorted({g.template for g in groups}),
        servers=len({g.server for g in groups}),
        spares=job.request.spares,
        migrations=len(job.source),
        latest=job.source.latest,
        source=str(job.source.where),
    )
    warnings(job)


def templates(report: TemplateReport, states: Sequence[str]) -> None:
    """One event per server and template, then the summary. `states`: what the run did to each template, in the
    report's order, as the console says it."""
    for s, state in zip(report.servers, states, strict=True):
        fields: dict[str, Any] = {"server": s.server, "template": s.template, "ok": s.error is None}
        if s.error is not None:
            fields["message"] = s.error
        else:
            fields.update(
                version=s.version, state=state, spares=s.spares, made=s.made, dropped=s.dropped, notes=s.notes
            )
        (log.info if s.error is None else log.warning)("template_result", **fields)
    counts = report.counts()
    (log.info if report.ok else log.warning)(
        "summary", command="template", templates=len(report.servers), counts=counts, ok=report.ok,
        duration_s=round(report.duration_s, 3), interrupted=report.interrupted,
    )  # fmt: skip


def lint(report: LintReport) -> None:
    """`lint`'s text report as events: one per finding, then the summary."""
    for f in report.findings:
        fields = f.to_dict()
        (log.warning if fields["severity"] == "error" and not f.suppressed else log.info)("lint_finding", **fields)
    (log.info if report.ok else log.warning)(
        "summary",
        command="lint",
        ok=report.ok,
        errors=len(report.errors),
        warnings=len(report.warnings),
        suppressed=len(report.suppressed),
        files=len(report.files_checked),
        released_recorded=report.released_recorded,
        not_recorded=report.not_recorded,
        unread=report.unread,
    )
