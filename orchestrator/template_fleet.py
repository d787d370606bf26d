"""`orchestrator template`: keep each server's template current and its spares ready, for the selected schools.

The schools are grouped by (server, the template they onboard from, its extensions): one `template.keep_ready` per
group, the groups at once up to `--concurrency` in all and `--per-server` on one server; a group that failed for a
transient reason (a connection lost or refused) is tried again up to `--retries` times, with exponential backoff
(keeping a template ready is idempotent: each attempt first drops what an earlier one half-made). A school without a
template takes no part; when none of the selected schools has one, the command is refused before any connection. The
template's own work (lock, build, refresh, spares) is `template.py`'s; this module only fans it out and reports.

Ctrl-C / SIGTERM (the CLI): no new group starts and running ones stop at once (a build or a spare is worth nothing
half-made), each dropping what it half-made on its way out (stopping.py: within the grace); the report says so and
the CLI exits 130.

Cheap to import (the template machinery loads when the command runs): tracing and the CLI's rendering name
`TemplateReport`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import anyio

from . import tracing
from .errors import UsageError
from .junit import JunitCase, render_junit
from .stopping import Stop, stoppable

if TYPE_CHECKING:
    from .job import Job
    from .registry import Tenant
    from .template import ServerTemplate


@dataclass(frozen=True)
class TemplateGroup:
    """The schools of one server that onboard from one template with the same extensions."""

    server: str
    template: str
    extensions: tuple[str, ...]
    tenants: tuple[Tenant, ...]  # the first gives the connection target and the session settings


def template_groups(job: Job) -> list[TemplateGroup]:
    """The (server, template, extensions) groups of the job's schools. Raises UsageError (exit 2, before any
    connection) on a negative --spares and when no selected school has a template."""
    spares = job.request.spares
    if spares < 0:
        raise UsageError(f"--spares {spares}: must not be negative", hint="0 drops every ready copy of the template")
    groups: dict[tuple[str, str, tuple[str, ...]], list[Tenant]] = {}
    for tenant in job.tenants:
        settings = job.settings_for(tenant)
        if settings.template_name is not None:
            key = (tenant.server, settings.template_name, settings.extensions)
            groups.setdefault(key, []).append(tenant)
    if not groups:
        raise UsageError(
            "no template to keep ready: none of the selected schools onboards from a template",
            hint="give --template NAME, or set `template` in the registry's defaults (or a school's entry)",
        )
    return [TemplateGroup(*key, tenants=tuple(tenants)) for key, tenants in groups.items()]


@dataclass
class TemplateReport:
    """What `orchestrator template` did: one `ServerTemplate` per server and template."""

    servers: list[ServerTemplate]
    spares: int
    started_at: datetime
    finished_at: datetime
    command: str = "template"
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.servers)

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def counts(self) -> dict[str, int]:
        ok = sum(1 for s in self.servers if s.ok)
        return {"ok": ok, "not_ok": len(self.servers) - ok}

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "started_at": self.started_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "spares": self.spares,
            "ok": self.ok,
            "interrupted": self.interrupted,
            "servers": [
                {
                    "server": s.server,
                    "template": s.template,
                    "version": s.version,
                    "spares": s.spares,
                    "made": s.made,
                    "dropped": s.dropped,
                    "notes": s.notes,
                    "error": s.error,
                    "attempts": s.attempts,
                    "duration_s": round(s.duration_s, 3),
                }
                for s in self.servers
            ],
        }

    def json_chunks(self) -> Iterator[str]:
        yield json.dumps(self.to_dict(), indent=2) + "\n"

    def junit_xml(self) -> str:
        """One case per server and template; a failure when it could not be made ready."""
        cases = [
            JunitCase(
                name=f"{s.server} {s.template}",
                classname=f"{self.command}.{s.server}",
                time_s=s.duration_s,
                failure=s.error,
                failure_type="template_unavailable",
                details="; ".join([*s.notes, f"{s.spares} spare(s) ready, {s.made} made, {s.dropped} dropped"]),
            )
            for s in self.servers
        ]
        return render_junit(
            f"orchestrator {self.command}", cases, duration_s=self.duration_s, timestamp=self.started_at
        )


async def keep_templates(job: Job) -> TemplateReport:
    """Make each group's template current on its server and keep `--spares` ready copies of it (traced when
    configured). Failures are values (`ServerTemplate.error`); only bad input raises (UsageError)."""
    from .template import ServerTemplate, keep_ready

    groups, spares = template_groups(job), job.request.spares
    started = datetime.now(UTC)
    results: list[ServerTemplate | None] = [None] * len(groups)  # in the order of the groups
    limiter = anyio.CapacityLimiter(job.request.budgets.concurrency)
    on_server = {server: anyio.CapacityLimiter(n) for server, n in job.per_server.items()}
    stop = Stop("servers", job.request.budgets.grace, cancel_at_once=True)

    budgets = job.request.budgets

    async def keep(i: int, group: TemplateGroup) -> None:
        first, began = group.tenants[0], False
        try:
            async with limiter, on_server[group.server]:
                if not stop.requested:
                    began = True
                    options = job.engine_options(first)
                    result = await keep_ready(first.target, group.template, job.source, options, spares)
                    for attempt in range(1, budgets.retries + 1):
                        if not result.retryable or stop.requested:
                            break
                        await anyio.sleep(budgets.retry_backoff * 2 ** (attempt - 1))
                        result = await keep_ready(first.target, group.template, job.source, options, spares)
                        result.attempts = attempt + 1
                    results[i] = result
        finally:
            if results[i] is None:  # stopped by an interrupt
                why = "stopped while working on it; what it had half-made is dropped" if began else "not started"
                results[i] = ServerTemplate(group.server, group.template, error=f"interrupted: {why}")

    with tracing.run_span(job) as span:
        async with stoppable(stop, signals=job.request.handle_signals), anyio.create_task_group() as tg:
            for i, group in enumerate(groups):
                tg.start_soon(keep, i, group)
        servers = [r for r in results if r is not None]
        report = TemplateReport(servers, spares, started, datetime.now(UTC), interrupted=stop.requested)
        span.finish(report)
    return report
