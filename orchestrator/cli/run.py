"""Running a command from its flags: validate (exit 2), show the plan, run with progress, render, write the
outputs, exit. Imported when a command runs, not at start-up (`orchestrator --version` and `--help` stay quick).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from .. import eventloop
from ..command import Command
from ..confirm import to_confirm
from ..errors import InvalidInput
from ..job import Job, Request, prepare
from ..logsetup import json_logs, register_secrets
from ..output_files import OutputFile, check_outputs, write_atomically
from ..report import RunReport
from ..runner import Report, plan_first, plans_first, preflight_skipped, refuse_before_writing, run_any
from ..settings import parse_duration, parse_listen
from ..target import DatabaseTarget
from . import render
from .options import Flags
from .render import EXIT_INTERRUPTED, EXIT_NOT_AUDITED, EXIT_NOT_OK, EXIT_OK, fail_usage

# Extra files a command writes from its report (the audit's HTML page): (flag, path, contents).
ExtraFile = tuple[str, Path, Callable[[Any], str | Iterable[str]]]


def execute(
    flags: Flags,
    command: Command,
    *,
    extra_files: Sequence[ExtraFile] = (),
    **specific: Any,
) -> None:
    """Validate (exit 2 on bad input), show the plan, confirm, run with progress, render, write the outputs, exit.

    A rollout over a registry first makes a read-only plan pass that refuses a split fleet (exit 2; --no-preflight
    leaves it out, with a warning). What it would write, and any write over the whole registry, is then confirmed
    (`confirm.py`): asked on a terminal (stdin), refused without one unless --yes."""
    try:
        request = flags.request(command, **specific)
        check_outputs(request.outputs, [OutputFile(f, path) for f, path, _ in extra_files], inputs_of(request))
        job = prepare(request)
    except InvalidInput as error:
        fail_usage(error)
        return
    register_job_secrets(job)
    outputs = request.outputs
    human = render.make_console(stderr=outputs.json)
    render.print_plan(human, job)
    render.print_scratch_notice(job)
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
    written = write_outputs(human, report, job, extra_files)
    raise typer.Exit(exit_code(report, written))


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
        request = flags.request(Command.TEMPLATE, spares=spares)
        check_outputs(request.outputs, inputs=inputs_of(request))
        job = prepare(request)
        groups = template_groups(job)
    except InvalidInput as error:
        fail_usage(error)
    register_job_secrets(job)
    human = render.make_console(stderr=job.request.outputs.json)
    render.print_template_plan(human, job, groups)
    confirm_writing(job, None, human, assume_yes=flags.values.get("yes", False))
    report = eventloop.run(keep_templates, job)
    render.print_templates(human, report, quiet=job.request.outputs.quiet)
    written = write_outputs(human, report, job, ())
    raise typer.Exit(exit_code(report, written))


def inputs_of(request: Request) -> list[OutputFile]:
    """What the run reads, which no output may replace."""
    registry = [] if request.single else [OutputFile("--registry", request.registry)]
    return [*registry, *(OutputFile("--migrations", d) for d in request.migrations)]


def register_job_secrets(job: Job) -> None:
    """Every password this run knows, so the log scrubber can hide any that slips into an event."""
    reference = [s for url in job.request.gate.reference_url for s in DatabaseTarget.parse(url).secrets]
    register_secrets([*(s for t in job.tenants for s in t.target.secrets), *reference])


def write_outputs(human: Console, report: Report, job: Job, extra_files: Sequence[ExtraFile]) -> bool:
    """Write each output file (atomically: a failure leaves the previous file as it was) and push the metrics.
    Returns False when a file could not be written (said, with what to do); a failed push is a warning only."""
    from .. import metrics  # prometheus_client: only when a run ends

    outputs = job.request.outputs
    files: list[ExtraFile] = []
    if outputs.report:
        files.append(("--report", outputs.report, lambda r: r.json_chunks()))
    if outputs.junit:
        files.append(("--junit", outputs.junit, lambda r: r.junit_xml()))
    registry = metrics.registry_for(report) if outputs.metrics or outputs.pushgateway else None
    if outputs.metrics and registry is not None:
        text = metrics.render(registry)
        files.append(("--metrics", outputs.metrics, lambda _: text))
    unwritten = set()
    for flag, path, contents in [*files, *extra_files]:
        try:
            write_atomically(path, contents(report))
        except OSError as exc:
            unwritten.add(flag)
            render.print_unwritten(human, flag, path, exc)
        else:
            render.print_wrote(human, job, path)
    if outputs.pushgateway and registry is not None:
        try:
            group = metrics.grouping_key(metrics.command_of(report), job.request.selection.shard)
            metrics.push(registry, outputs.pushgateway, group)
        except (OSError, ValueError) as exc:
            render.print_push_failed(human, outputs.pushgateway, exc)
        else:
            render.print_pushed(human, job, outputs.pushgateway)
    render.print_next_steps(human, job, report, report_written="--report" not in unwritten)
    if outputs.json:
        sys.stdout.writelines(report.json_chunks())
    return not unwritten


def exit_code(report: Report, written: bool = True) -> int:
    """Every command's exit code, here only: 0 ok, 1 not ok (the audit: drift found; or an output that could not be
    written after an otherwise ok run: the run's record is missing), 3 the audit could not audit some school and
    found no drift, 130 interrupted (2, invalid input, is raised before anything runs)."""
    from ..audit.model import AuditReport

    if report.interrupted:
        return EXIT_INTERRUPTED
    if report.ok:
        return EXIT_OK if written else EXIT_NOT_OK
    return EXIT_NOT_AUDITED if isinstance(report, AuditReport) and report.verdict == "not_audited" else EXIT_NOT_OK


def execute_serve(flags: Flags, *, listen: str, token_file: Path | None, spares: int, survey_every: str) -> None:
    """`orchestrator serve`: validate (exit 2: the flags, the token, the files, the registry), then serve until
    SIGTERM (exit 0)."""
    from ..serve import auth
    from ..serve.state import Service, service_request

    try:
        every = parse_duration(survey_every, "--survey-every")
        request = service_request(flags.request(Command.PROVISION), spares=spares, survey_every=every)
        host, port = parse_listen(listen)
        token = auth.load_token(token_file)
        service = Service(request, survey_every=every)
        service.load()
    except InvalidInput as error:
        fail_usage(error)
    from ..serve.server import serve

    raise typer.Exit(EXIT_OK if serve(service, token, host, port) else EXIT_NOT_OK)
