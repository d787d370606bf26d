"""The `orchestrator` command: flags in, rendering out. Logic lives in runner, fleet and engine.

Exit codes: 0 every selected database ended ok; 1 any did not, or the run halted; 2 invalid input (nothing was
touched); 130 interrupted.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import anyio
import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..connection import SessionSettings
from ..engine import EngineOptions
from ..errors import InvalidInput, Location, UsageError
from ..fleet import FailureBudget, FleetOptions
from ..logsetup import configure_logging, register_secrets
from ..operations import Command, Overrides
from ..outcome import Status
from ..registry import Selection, parse_duration, parse_shard
from ..report import RunReport, write_json, write_junit
from ..runner import Job, JobSpec, plan_first, prepare, run
from ..target import DatabaseTarget
from . import render

EXIT_OK, EXIT_NOT_OK, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130

app = typer.Typer(
    name="orchestrator",
    help="Fleet migration orchestrator for per-school PostgreSQL databases (SQLx-compatible).\n\n"
    "Work on one database with -D URL (or DATABASE_URL), or on the schools of a registry (tenants.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


@app.callback(invoke_without_command=True)
def main_callback(
    log_format: Annotated[
        str, typer.Option("--log-format", help="console or json (structlog JSON lines).")
    ] = "console",
    log_level: Annotated[str | None, typer.Option("--log-level", help="debug, info, warning, error.")] = None,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"orchestrator {__version__}")
        raise typer.Exit(EXIT_OK)
    if log_format not in ("console", "json"):
        fail_usage(UsageError(f"--log-format {log_format!r} is not console or json"))
    level = log_level or ("info" if log_format == "json" else "warning")
    if level not in ("debug", "info", "warning", "error"):
        fail_usage(UsageError(f"--log-level {level!r} is not debug, info, warning or error"))
    configure_logging(log_format, level)


def fail_usage(error: InvalidInput) -> None:
    console = render.make_console(stderr=True)
    console.print(f"[red]error[/] {escape(f'[{error.code}]')}: {escape(error.message)}", highlight=False)
    if error.hint:
        console.print(f"  what to do: {escape(error.hint)}", highlight=False)
    raise typer.Exit(EXIT_INVALID)


def seconds(flag: str, value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return parse_duration(value, Location(Path(flag)))
    except InvalidInput:
        raise UsageError(f"{flag} {value!r} is not a duration", hint="write e.g. 5s, 500ms or 10m") from None


def resolve_target(database_url: str | None, registry: Path | None) -> tuple[str | None, Path]:
    """-D wins; then an explicit --registry; then $DATABASE_URL; then tenants.yaml."""
    if database_url is not None and registry is not None:
        raise UsageError("give either -D URL or --registry PATH, not both")
    if database_url is None and registry is None and os.environ.get("DATABASE_URL"):
        database_url = os.environ["DATABASE_URL"]
    return database_url, registry or Path("tenants.yaml")


def build_spec(
    command: Command,
    *,
    database_url: str | None,
    registry: Path | None,
    migrations: Path,
    tenant: list[str] | None = None,
    tag: list[str] | None = None,
    exclude: list[str] | None = None,
    shard: str | None = None,
    resume: Path | None = None,
    concurrency: int = 8,
    per_server: int | None = None,
    canary: int = 0,
    max_failures: str | None = None,
    retries: int = 2,
    lock_timeout: str | None = None,
    statement_timeout: str | None = None,
    lock_wait: str | None = None,
    connect_timeout: str | None = None,
    target_version: int | None = None,
    revert_to: int | None = None,
    allow_unsafe: bool = False,
    rehearse: bool = False,
    reference_url: str | None = None,
    ignore_missing: bool = False,
) -> JobSpec:
    url, registry_path = resolve_target(database_url, registry)
    if per_server is not None and per_server < 1:
        raise UsageError("--per-server must be at least 1")
    return JobSpec(
        command=command,
        migrations_dir=migrations,
        database_url=url,
        registry_path=registry_path,
        selection=Selection(
            ids=tuple(tenant or ()),
            tags=tuple(tag or ()),
            exclude=tuple(exclude or ()),
            shard=parse_shard(shard) if shard else None,
        ),
        resume_from=resume,
        engine=EngineOptions(session=SessionSettings(), target_version=target_version, ignore_missing=ignore_missing),
        overrides=Overrides(
            lock_timeout=seconds("--lock-timeout", lock_timeout),
            statement_timeout=seconds("--statement-timeout", statement_timeout),
            lock_wait=seconds("--lock-wait", lock_wait),
            connect_timeout=seconds("--connect-timeout", connect_timeout),
        ),
        fleet=FleetOptions(
            concurrency=concurrency,
            canary=canary,
            max_failures=FailureBudget.parse(max_failures),
            retries=retries,
            handle_signals=True,
        ),
        per_server=per_server,
        revert_to=revert_to,
        allow_unsafe=allow_unsafe,
        rehearse=rehearse,
        reference_url=reference_url,
    )


def execute(
    spec_factory: Callable[[], JobSpec],
    *,
    json_out: bool,
    report_path: Path | None,
    junit_path: Path | None,
    no_progress: bool,
    preflight: bool = False,
    assume_yes: bool = False,
) -> None:
    """Validate (exit 2 on bad input), show the plan, run with progress, render, write reports, exit.

    A fleet `migrate` on a terminal first runs a read-only plan pass (version histogram, what would run where) and
    asks before anything is written, unless `assume_yes`; in scripts and CI only with `preflight`, never asking."""
    try:
        spec = spec_factory()
        job = prepare(spec)
    except InvalidInput as error:
        fail_usage(error)
        return
    register_job_secrets(job, spec.reference_url)
    human = render.make_console(stderr=json_out)
    render.print_plan(human, job)
    progress_console = render.make_console(stderr=True)
    single = spec.database_url is not None
    show_progress = not (no_progress or single)
    ask = interactive() and not assume_yes and not json_out  # a prompt would end up inside the JSON on stdout
    if spec.command is Command.MIGRATE and not single and (preflight or ask):
        with render.progress(progress_console, len(job.tenants), enabled=show_progress) as observer:
            planned = anyio.run(plan_first, job, observer)
        render.print_preflight(human, planned)
        something_to_do = any(o.result.status is Status.PLANNED for o in planned.outcomes)
        if ask and something_to_do and not typer.confirm("Apply these migrations now?", default=False):
            human.print("aborted: nothing was written")
            raise typer.Exit(EXIT_NOT_OK)
    with render.progress(progress_console, len(job.tenants), enabled=show_progress) as observer:
        report = anyio.run(run, job, observer)
    progress_lines = show_progress and not progress_console.is_terminal  # one line per school was shown
    write_outputs(
        report,
        job,
        human,
        json_out=json_out,
        report_path=report_path,
        junit_path=junit_path,
        progress_lines=progress_lines,
    )
    raise typer.Exit(exit_code(report))


def register_job_secrets(job: Job, reference_url: str | None) -> None:
    """Every password this run knows, so the log scrubber can hide any that slips into an event."""
    reference = DatabaseTarget.parse(reference_url).secrets if reference_url else ()
    register_secrets([*(s for t in job.tenants for s in t.target.secrets), *reference])


def write_outputs(
    report: RunReport,
    job: Job,
    human: Console,
    *,
    json_out: bool,
    report_path: Path | None,
    junit_path: Path | None,
    progress_lines: bool = False,
) -> None:
    render.print_gate_and_rehearsal(human, job, report)
    if job.spec.database_url is not None:
        render.print_single(human, report)
    else:
        if job.spec.command in (Command.STATUS, Command.PLAN):
            render.print_histogram(human, report)
        render.print_results(human, report, ok_already_listed=progress_lines)
        render.print_summary(human, report)
    if report_path:
        write_json(report, report_path)
        human.print(f"report: {report_path}")
    if junit_path:
        write_junit(report, junit_path)
        human.print(f"junit: {junit_path}")
    render.print_next_steps(human, report, str(report_path) if report_path else None)
    if json_out:
        sys.stdout.writelines(report.json_chunks())


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def exit_code(report: RunReport) -> int:
    if report.run.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_NOT_OK


def main() -> None:
    app()


# Registered last: the command modules use the shared options defined above.
from . import audit, commands  # noqa: E402, F401
from .lint import register as _register_lint  # noqa: E402

_register_lint(app)
