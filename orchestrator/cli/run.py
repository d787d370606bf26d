"""Running a command from its flags: validate (exit 2), show the plan, run with progress, render, write the
outputs, exit. Imported when a command runs, not at start-up (`orchestrator --version` and `--help` stay quick).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .. import eventloop
from ..command import Command
from ..errors import InvalidInput
from ..job import Job, prepare
from ..logsetup import json_logs, register_secrets
from ..outcome import Status
from ..report import write_atomically
from ..runner import Report, plan_first, run_any, split_in_plan
from ..target import DatabaseTarget
from . import render
from .options import Flags
from .render import EXIT_INTERRUPTED, EXIT_NOT_OK, EXIT_OK, fail_usage

# Extra files a command writes from its report (the audit's metrics and HTML page): (path, contents).
ExtraFile = tuple[Path, Callable[[Any], str | Iterable[str]]]


def execute(
    flags: Flags,
    command: Command,
    *,
    extra_files: Iterable[ExtraFile] = (),
    **specific: Any,
) -> None:
    """Validate (exit 2 on bad input), show the plan, run with progress, render, write the outputs, exit.

    A fleet `migrate` or `revert` on a terminal first runs a read-only plan pass (version histogram, what would
    run where) and asks before anything is written, unless --yes; in scripts and CI only with --preflight, never
    asking."""
    try:
        request = flags.request(command, **specific)
        job = prepare(request)
    except InvalidInput as error:
        fail_usage(error)
        return
    register_job_secrets(job)
    outputs = request.outputs
    human = render.make_console(stderr=outputs.json)
    render.print_plan(human, job)
    progress_console = render.make_console(stderr=True)
    show_progress = outputs.progress and not request.single and not json_logs()  # JSON logs: per-school events
    preflight, assume_yes = flags.values.get("preflight", False), flags.values.get("yes", False)
    ask = interactive() and not assume_yes and not outputs.json  # a prompt would end up inside the JSON on stdout
    if command.asks_first and not request.single and not request.dry_run and (preflight or ask):
        with render.progress(progress_console, len(job.tenants), enabled=show_progress) as observer:
            planned = eventloop.run(plan_first, job, observer)
        render.print_preflight(human, planned)
        split = split_in_plan(planned)
        if split is not None:
            fail_usage(split)
        something_to_do = any(o.result.status is Status.PLANNED for o in planned.outcomes)
        question = {
            Command.REVERT: "Revert these migrations now?",
            Command.RESOLVE: f"Record this in the ledger of these {len(job.tenants)} school(s) now?",
        }.get(command, "Apply these migrations now?")
        something_to_do = something_to_do or command is Command.RESOLVE
        if ask and something_to_do and not typer.confirm(question, default=False):
            human.print("aborted: nothing was written")
            raise typer.Exit(EXIT_NOT_OK)
    try:
        with render.progress(progress_console, len(job.tenants), enabled=show_progress) as observer:
            report = eventloop.run(run_any, job, observer)
    except InvalidInput as error:  # the safety gate, after its read-only plan pass: nothing was written
        fail_usage(error)
    progress_lines = show_progress and not progress_console.is_terminal  # one line per school was shown
    render.print_report(human, job, report, progress_lines=progress_lines)
    write_outputs(human, report, job, extra_files)
    raise typer.Exit(exit_code(report))


def execute_template(flags: Flags, spares: int) -> None:
    """`orchestrator template`: validate (exit 2), show the plan, keep each server's template ready, render one
    line per server, write the outputs, exit."""
    from ..template_fleet import keep_templates, template_groups

    try:
        job = prepare(flags.request(Command.TEMPLATE, spares=spares))
        groups = template_groups(job)
    except InvalidInput as error:
        fail_usage(error)
    register_job_secrets(job)
    human = render.make_console(stderr=job.request.outputs.json)
    render.print_template_plan(human, job, groups)
    report = eventloop.run(keep_templates, job)
    render.print_templates(human, report)
    write_outputs(human, report, job, ())
    raise typer.Exit(exit_code(report))


def register_job_secrets(job: Job) -> None:
    """Every password this run knows, so the log scrubber can hide any that slips into an event."""
    reference = [s for url in job.request.gate.reference_url for s in DatabaseTarget.parse(url).secrets]
    register_secrets([*(s for t in job.tenants for s in t.target.secrets), *reference])


def write_outputs(human: Console, report: Report, job: Job, extra_files: Iterable[ExtraFile]) -> None:
    outputs = job.request.outputs
    files: list[ExtraFile] = []
    if outputs.report:
        files.append((outputs.report, lambda r: r.json_chunks()))
    if outputs.junit:
        files.append((outputs.junit, lambda r: r.junit_xml()))
    for path, contents in [*files, *extra_files]:
        write_atomically(path, contents(report))
        human.print(f"wrote {path}")
    render.print_next_steps(human, report, str(outputs.report) if outputs.report else None)
    if outputs.json:
        sys.stdout.writelines(report.json_chunks())


def interactive() -> bool:
    return sys.stdin.isatty() and sys.stdout.isatty()


def exit_code(report: Report) -> int:
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_NOT_OK
