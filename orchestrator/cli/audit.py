"""The `audit` command: flags and rendering only; the work is in orchestrator.audit.

Exit codes: 0 clean; 1 drift found (or a school unreachable); 2 invalid input; 130 interrupted.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..audit.html import render_html
from ..audit.metrics import write_prometheus
from ..audit.model import AuditReport
from ..audit.run import AuditOptions, run_audit
from ..errors import InvalidInput
from ..junit import JunitCase, render_junit
from ..operations import Command
from ..report import write_atomically
from ..runner import prepare
from ..target import DatabaseTarget
from . import (
    EXIT_INTERRUPTED,
    EXIT_NOT_OK,
    EXIT_OK,
    app,
    build_spec,
    fail_usage,
    register_job_secrets,
    render,
)
from .options import (
    Concurrency,
    ConnectTimeout,
    DatabaseUrl,
    Excludes,
    JsonOut,
    JunitPath,
    MigrationsDir,
    NoProgress,
    PerServer,
    RegistryPath,
    ReportPath,
    Shard,
    Tags,
    Tenants,
)


@app.command()
def audit(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    connect_timeout: ConnectTimeout = None,
    reference_url: Annotated[
        str | None,
        typer.Option(
            "--reference-url",
            help="Server for the scratch databases that hold the expected schema "
            "(needs CREATEDB). [default: the first reachable school's server]",
            show_default=False,
        ),
    ] = None,
    no_schema: Annotated[bool, typer.Option("--no-schema", help="Check history drift only.")] = False,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
    metrics: Annotated[
        Path | None, typer.Option("--metrics", help="Prometheus text file for node_exporter's textfile collector.")
    ] = None,
    html: Annotated[Path | None, typer.Option("--html", help="One self-contained HTML page.")] = None,
    no_progress: NoProgress = False,
) -> None:
    """Nightly drift audit, read-only: pending, edited, missing or half-applied migrations, and live schemas that
    differ from what their migrations produce."""
    try:
        spec = build_spec(
            Command.STATUS, database_url=database_url, registry=registry, migrations=migrations, tenant=tenant,
            tag=tag, exclude=exclude, shard=shard, concurrency=concurrency, per_server=per_server,
            connect_timeout=connect_timeout,
        )  # fmt: skip
        if reference_url is not None:
            DatabaseTarget.parse(reference_url)
        job = prepare(spec)
    except InvalidInput as error:
        fail_usage(error)
        return
    register_job_secrets(job, reference_url)
    human = render.make_console(stderr=json_out)
    human.print(f"[bold]audit[/]: {render.schools(len(job.tenants))} on {len(job.servers)} server(s); read-only")
    options = AuditOptions(reference_url=reference_url, schema=not no_schema)
    with render.progress(render.make_console(stderr=True), len(job.tenants), enabled=not no_progress) as observer:
        result = anyio.run(run_audit, job, options, observer)
    print_audit(human, result)
    if report is not None:
        write_atomically(report, json.dumps(result.to_dict(), indent=2) + "\n")
    if junit is not None:
        write_atomically(junit, audit_junit(result))
    if metrics is not None:
        write_prometheus(result, metrics)
    if html is not None:
        write_atomically(html, render_html(result))
    for path in (report, junit, metrics, html):
        if path is not None:
            human.print(f"wrote {path}")
    if json_out:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    if result.interrupted:
        raise typer.Exit(EXIT_INTERRUPTED)
    raise typer.Exit(EXIT_OK if result.clean else EXIT_NOT_OK)


def print_audit(console: Console, report: AuditReport) -> None:
    counts = report.counts()
    groups = report.fingerprint_groups()
    if groups:
        identical = len(groups[0][1])
        differ = sum(len(ids) for _, ids in groups[1:])
        console.print(f"schemas: {identical} identical" + (f", {differ} differ" if differ else ""))
    drifting = [s for s in report.schools if s.drift]
    if drifting:
        table = Table(title=f"drift in {len(drifting)} of {len(report.schools)} schools")
        for column in ("school", "server", "status", "version", "findings"):
            table.add_column(column, overflow="fold")
        for s in drifting:
            findings = [f.text for f in s.findings]
            if s.result.error:
                findings.append(s.result.error.message + (f" -> {s.result.error.hint}" if s.result.error.hint else ""))
            status = "drift" if s.reachable else s.result.status.value
            table.add_row(
                escape(s.tenant.id), s.result.server, status, render.version(s.result.version_after),
                escape("\n".join(findings)),
            )  # fmt: skip
        console.print(table)
    verdict = "[green]clean[/]" if report.clean else "[red]drift found[/]"
    console.print(
        f"[bold]summary[/]: {counts['schools']} schools: {counts['clean']} clean, {counts['drift']} drift "
        f"({counts['schema_drift']} schema, {counts['pending']} pending), {counts['unreachable']} unreachable: "
        f"{verdict} ({report.duration_s:.2f}s)"
    )


def audit_junit(report: AuditReport) -> str:
    cases = [
        JunitCase(
            name=s.tenant.id,
            classname=f"audit.{s.result.server}",
            time_s=s.result.duration_s,
            failure=(f"{len(s.findings)} finding(s)" if s.reachable else s.result.status.value) if s.drift else None,
            failure_type="drift" if s.reachable else s.result.status.value,
            details="\n".join([f.text for f in s.findings] + ([s.result.error.message] if s.result.error else [])),
        )
        for s in report.schools
    ]
    return render_junit("orchestrator audit", cases, duration_s=report.duration_s, timestamp=report.started_at)
