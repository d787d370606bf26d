"""Running a command from its flags: validate (exit 2), show the plan, run with progress, render, write the
outputs, exit. Imported when a command runs, not at start-up (`orchestrator --version` and `--help` stay quick).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .. import eventloop
from ..command import Command
from ..confirm import to_confirm
from ..errors import InvalidInput
from ..job import Job, prepare
from ..logsetup import json_logs, register_secrets
from ..report import RunReport, write_atomically
from ..runner import Report, plan_first, plans_first, preflight_skipped, refuse_before_writing, run_any
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
    """Validate (exit 2 on bad input), show the plan, confirm, run with progress, render, write the outputs, exit.

    A rollout over a registry first makes a read-only plan pass that refuses a split fleet (exit 2; --no-preflight
    leaves it out, with a warning). What it would write, and any write over the whole registry, is then confirmed
    (`confirm.py`): asked on a terminal (stdin), refused without one unless --yes."""
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
    progress_console = render.progress_console(human)
    show_progress = outputs.progress and not outputs.quiet and not request.single and not json_logs()
    planned = plan_pass(job, human, progress_console, show_progress)
    confirm_writing(job, planned, human, assume_yes=flags.values.get("yes", False))
    outcomes = command is not Command.AUDIT  # the audit's outcome per school is its verdict, rendered at the end
    try:
        with render.progress(progress_console, len(job.tenants), show_progress, outcomes=outcomes) as observer:
            report = eventloop.run(functools.partial(run_any, planned=planned), job, observer)
    except InvalidInput as error:  # the safety gate, after its read-only plan pass: nothing was written
        fail_usage(error)
    progress_lines = show_progress and outcomes and not progress_console.is_terminal  # each school's line shown
    render.print_report(human, job, report, progress_lines=progress_lines)
    write_outputs(human, report, job, extra_files)
    raise typer.Exit(exit_code(report))


def plan_pass(job: Job, human: Console, progress_console: Console, show_progress: bool) -> RunReport | None:
    """A rollout's read-only plan pass over a registry, shown, then checked before anything is written (exit 2)."""
    if not plans_first(job):
        if preflight_skipped(job):
            render.print_no_preflight(human)
        return None
    with render.progress(progress_console, len(job.tenants), show_progress, outcomes=False) as observer:
        planned = eventloop.run(plan_first, job, observer)
    render.print_preflight(human, job, planned)
    try:
        refuse_before_writing(job, planned)
    except InvalidInput as error:
        fail_usage(error)
    return planned


def confirm_writing(job: Job, planned: RunReport | None, human: Console, *, assume_yes: bool) -> None:
    """Ask on a terminal (the question on stderr: --json and a piped stdout neither skip nor pollute it); without
    one, or with JSON logs (stderr holds JSON only), refuse (exit 2, nothing written) unless --yes."""
    confirmation = to_confirm(job, planned)
    if confirmation is None or assume_yes:
        return
    if not sys.stdin.isatty() or json_logs():
        fail_usage(confirmation.refusal())
    if not ask(confirmation.question):
        render.print_aborted(human)
        raise typer.Exit(EXIT_NOT_OK)


def ask(question: str) -> bool:
    """A yes/no question on stderr, answered on stdin; no by default. (click's prompt echoes a space to stdout.)"""
    sys.stderr.write(f"{question} [y/N]: ")
    sys.stderr.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


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
    confirm_writing(job, None, human, assume_yes=flags.values.get("yes", False))
    report = eventloop.run(keep_templates, job)
    render.print_templates(human, report, quiet=job.request.outputs.quiet)
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
        render.print_wrote(human, job, path)
    render.print_next_steps(human, job, report)
    if outputs.json:
        sys.stdout.writelines(report.json_chunks())


def exit_code(report: Report) -> int:
    if report.interrupted:
        return EXIT_INTERRUPTED
    return EXIT_OK if report.ok else EXIT_NOT_OK
