"""Human output: the plan before anything runs, progress while it runs, the table and summary after.
Rendering only: every figure shown comes from the report values.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from ..errors import InvalidInput
from ..fleet import Observer, TenantOutcome
from ..job import Job
from ..logsetup import json_logs
from ..outcome import DatabaseResult, Status
from ..report import RunReport
from ..runner import Report
from . import events

if TYPE_CHECKING:
    from ..audit.model import AuditReport
    from ..source import MigrationSource
    from ..template import ServerTemplate
    from ..template_fleet import TemplateGroup, TemplateReport

EXIT_OK, EXIT_NOT_OK, EXIT_INVALID, EXIT_INTERRUPTED = 0, 1, 2, 130
EXIT_NOT_AUDITED = 3  # audit: some school could not be audited and none drifted (drift found wins: 1)

STATUS_STYLE = {
    Status.APPLIED: "green",
    Status.UP_TO_DATE: "green",
    Status.REVERTED: "green",
    Status.PLANNED: "cyan",
    Status.PENDING: "cyan",
    Status.SKIPPED: "yellow",
    Status.LOCKED: "yellow",
}
TABLE_LIMIT = 200  # beyond this many schools, the table lists only those not ok (the JSON report has all)


def schools(n: int) -> str:
    return f"{n} school" if n == 1 else f"{n} schools"


def version(v: int | None) -> str:
    return "-" if v is None else str(v)


def version_change(r: DatabaseResult) -> str:
    if r.version_before == r.version_after:
        return version(r.version_after)
    return f"{version(r.version_before)} -> {version(r.version_after)}"


def status_text(status: Status) -> str:
    return f"[{STATUS_STYLE.get(status, 'red')}]{status.value}[/]"


def fail_usage(error: InvalidInput) -> NoReturn:
    """Bad input: say what is wrong and what to do, exit 2 (nothing was touched)."""
    if json_logs():  # stderr carries JSON lines only
        events.invalid_input(error)
        raise typer.Exit(EXIT_INVALID)
    console = make_console(stderr=True)
    console.print(f"[red]error[/] {escape(f'[{error.code}]')}: {escape(error.message)}", highlight=False)
    if error.hint:
        console.print(f"  what to do: {escape(error.hint)}", highlight=False)
    raise typer.Exit(EXIT_INVALID)


def quiet_asked(job: Job) -> bool:
    """--quiet: only what is not ok, the summary and errors."""
    return job.request.outputs.quiet


def print_plan(console: Console, job: Job) -> None:
    if json_logs():
        events.plan(job)
        return
    if quiet_asked(job):
        print_warnings(console, job)
        return
    request, source = job.request, job.source
    where = "1 database" if request.single else f"{schools(len(job.tenants))} on {len(job.servers)} server(s)"
    read_only = "" if job.writes else "; read-only"
    print_plan_head(console, job, f"{where}; {migrations_text(source)}{read_only}")
    if not request.single and job.writes:
        budgets = job.fleet_options.budgets
        waves = " then ".join(f"{name} ({len(group)})" for name, group in job.waves) or "nothing to do"
        budget = f"halt after {budgets.max_failures} failures" if budgets.max_failures else "no failure budget"
        console.print(
            f"  waves: {waves}; concurrency {budgets.concurrency}, {per_server_text(job)} per server; {budget}; "
            f"{budgets.retries} retries for transient errors"
        )


def print_scratch_notice(job: Job) -> None:
    """Say where the audit will create scratch databases (a write, on a server the operator may think it only
    reads): on stderr, or one `audit.scratch_databases` event with --log-format json."""
    from ..audit.reference import default_reference_server

    server = default_reference_server(job)
    if server is None:
        return
    where = (
        f"the expected schemas are built in scratch databases (created, then dropped; CREATEDB needed) on {server}, "
        "the first school's server (the next school's if that one cannot be read; one per PostgreSQL version)"
    )
    hint = (
        "to build them elsewhere, give --reference-url URL: a server of the schools' PostgreSQL version where the "
        "URL's role may create databases (one per version)"
    )
    if json_logs():
        events.scratch_databases(server, where, hint)
        return
    make_console(stderr=True).print(f"[yellow]note[/]: {escape(where)}; {escape(hint)}", highlight=False)


def print_plan_head(console: Console, job: Job, what: str) -> None:
    """The plan's first line (the command, then `what`), and what loading the migration files warned about."""
    console.print(f"[bold]{job.command.value}[/]: {what}")
    print_warnings(console, job)


def print_warnings(console: Console, job: Job) -> None:
    """What loading the migration files warned about (shown with --quiet too)."""
    for warning in job.source.warnings:
        console.print(f"[yellow]warning[/]: {escape(str(warning))}")


def migrations_text(source: MigrationSource) -> str:
    return f"migrations in {source.where} ({len(source)} files, latest {version(source.latest)})"


def per_server_text(job: Job) -> str:
    sizes = sorted(set(job.per_server.values()))
    return "/".join(map(str, sizes)) or "0"


def print_report(console: Console, job: Job, report: Report, *, progress_lines: bool) -> None:
    """What happened, for a human: one database in detail, or the fleet's table (or the audit's) and a summary."""
    if not isinstance(report, RunReport):
        from ..template_fleet import TemplateReport  # the audit's or the template command's report

        if isinstance(report, TemplateReport):
            print_templates(console, report, quiet=quiet_asked(job))
        else:
            print_audit(console, report, quiet=quiet_asked(job))
        return
    if json_logs():  # each school's result was an event as it ended
        events.gate_and_rehearsal(job, report)
        events.summary(report, versions=not job.writes)
        return
    print_gate_and_rehearsal(console, job, report)
    if job.request.single:
        print_single(console, report, quiet=quiet_asked(job))
        return
    if not job.writes and not quiet_asked(job):
        print_histogram(console, report)
    print_results(console, report, listed=progress_lines, quiet=quiet_asked(job))
    print_summary(console, report)


def progress_console(human: Console) -> Console:
    """A live bar goes to stderr when it is a terminal; otherwise each school's line is part of the human output,
    in order with the plan and the summary."""
    bar = make_console(stderr=True)
    return bar if bar.is_terminal else human


@contextmanager
def progress(console: Console, total: int, enabled: bool, *, outcomes: bool = True) -> Iterator[Observer | None]:
    """A live bar on a terminal; one line per school otherwise (CI logs), its hint under it when it did not end ok:
    each school's one line, not repeated at the end; nothing when disabled. `outcomes=False` (the read-only plan
    pass, the audit's read): what the schools said is not their outcome, so a bar at most. With JSON logs, one
    `school_result` event per school whatever `enabled` says (that is the log)."""
    if json_logs():
        yield events.school_result if outcomes else None
        return
    if not enabled or (not outcomes and not console.is_terminal):
        yield None
        return
    if console.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[counts]}"),
            TimeElapsedColumn(),
            console=console,
            transient=False,
        )
        counts: dict[str, int] = {}
        with bar:
            task = bar.add_task("schools", total=total, counts="")

            def on_result(outcome: TenantOutcome) -> None:
                status = outcome.result.status.value
                counts[status] = counts.get(status, 0) + 1
                bar.update(task, advance=1, counts=" ".join(f"{k}={v}" for k, v in sorted(counts.items())))

            yield on_result
        return
    done = 0

    def on_line(outcome: TenantOutcome) -> None:
        nonlocal done
        done += 1
        pct = 100 * done // max(total, 1)
        line, *why = school_lines(outcome)
        console.print("\n".join([f"[{done}/{total} {pct:3d}%] {line}", *why]), highlight=False, markup=False)

    yield on_line


def line_summary(r: DatabaseResult) -> str:
    applied = r.applied_versions
    parts = [r.status.value]
    if applied:
        parts.append(f"{len(applied)} applied")
    if r.status in (Status.PENDING, Status.PLANNED) and r.pending:
        parts.append(f"{len(r.pending)} pending")
    if r.error:
        parts.append(r.error.message.splitlines()[0])
    elif r.status is Status.SKIPPED and r.notes:
        parts.append(r.notes[0])  # why: not started, or (resolve) nothing to resolve there
    return ", ".join(parts) + f" ({r.duration_s:.2f}s)"


def print_single(console: Console, report: RunReport, *, quiet: bool = False) -> None:
    """One database: say what happened to each migration (--quiet: what happened, and the error)."""
    r = report.outcomes[0].result
    console.print(
        f"{escape(r.database)} on {escape(r.server)}: {status_text(r.status)} (version {version(r.version_before)} -> "
        f"{version(r.version_after)}, {r.duration_s:.2f}s)"
    )
    if quiet:
        print_error(console, r)
        return
    for note in r.notes:
        console.print(f"  - {escape(note)}")
    for step in r.steps:
        done = step.duration_s is not None
        verb = {"up": "applied" if done else "would apply", "down": "reverted" if done else "would revert"}[
            step.direction
        ]
        timing = f" ({step.duration_s * 1000:.1f} ms)" if step.duration_s is not None else ""
        console.print(f"  {verb} {step.version} {escape(step.description)}{timing}")
    if r.pending and r.status is not Status.PLANNED:
        console.print(f"  pending: {', '.join(map(str, r.pending))}")
    print_error(console, r)


def print_error(console: Console, r: DatabaseResult) -> None:
    if r.error is None:
        return
    console.print(f"  [red]error[/] {escape(f'[{r.error.code}]')}: {escape(r.error.message)}", highlight=False)
    if r.error.hint:
        console.print(f"  [bold]what to do[/]: {escape(r.error.hint)}", highlight=False)


def print_results(console: Console, report: RunReport, *, listed: bool, quiet: bool = False) -> None:
    """A table on a terminal; in logs and pipes one plain line per school (grep-friendly, and cheap at fleet
    size), none when the progress lines already gave each school its line. --quiet: the schools not ok only."""
    if console.is_terminal:
        print_table(console, report, quiet=quiet)
        return
    if listed:
        return
    lines = [line for o in report.outcomes if not (quiet and o.result.ok) for line in school_lines(o)]
    if lines:  # one print: rich renders each call on its own (a 1,000-school list costs 60 ms line by line)
        console.print("\n".join(lines), markup=False, highlight=False)


def school_lines(o: TenantOutcome) -> list[str]:
    """A school's line in logs and pipes, and its hint (or why it was skipped) under it."""
    r = o.result
    lines = [f"{o.tenant.id} ({r.server}): {line_summary(r)}"]
    if r.error and r.error.hint:
        lines.append(f"  -> {r.error.hint}")
    elif r.status is Status.SKIPPED and len(r.notes) > 1:  # the first is on the line itself
        lines.append(f"  -> {'; '.join(r.notes[1:])}")
    return lines


def print_table(console: Console, report: RunReport, *, quiet: bool = False) -> None:
    outcomes = report.outcomes
    shown = outcomes if len(outcomes) <= TABLE_LIMIT and not quiet else [o for o in outcomes if not o.result.ok]
    if not shown:
        return
    from rich.table import Table  # on a terminal only: logs and pipes get plain lines

    table = Table(title=f"{report.command}: {schools(len(outcomes))}", show_lines=False)
    for column in ("school", "server", "status", "version", "migrations", "time", "error / what to do"):
        table.add_column(column, overflow="fold")
    for o in shown:
        r = o.result
        if r.steps:
            migrations = ", ".join(str(s.version) for s in r.steps)
            if r.status is Status.PLANNED:
                migrations = f"would {'revert' if r.steps[0].direction == 'down' else 'apply'} {migrations}"
            elif r.status is Status.REVERTED:
                migrations = "reverted " + migrations
        elif r.pending:
            migrations = f"{len(r.pending)} pending"
        else:
            migrations = ""
        error = ""
        if r.error:
            error = escape(r.error.message) + (f"\n-> {escape(r.error.hint)}" if r.error.hint else "")
        elif r.status is Status.SKIPPED:
            error = escape("; ".join(r.notes))
        table.add_row(
            escape(o.tenant.id),
            escape(r.server),
            status_text(r.status),
            version_change(r),
            migrations,
            f"{r.duration_s:.2f}s",
            error,
        )
    console.print(table)
    if len(shown) < len(outcomes) and not quiet:
        console.print(f"({len(outcomes) - len(shown)} schools that ended ok are not listed; see --report)")


def print_histogram(console: Console, report: RunReport) -> None:
    histogram = report.version_histogram()
    if not histogram:
        return
    width = max(n for _, n in histogram)
    console.print("[bold]versions across the fleet[/]:")
    for v, n in histogram:
        bar = "#" * max(1, round(30 * n / width))
        latest = " (latest)" if v is not None and v == report.latest_version else ""
        console.print(f"  {version(v):>16} {bar} {n}{latest}", highlight=False)


def print_gate_and_rehearsal(console: Console, job: Job, report: RunReport) -> None:
    if job.lint is not None and job.lint.errors and job.request.gate.allow_unsafe:
        console.print(f"[yellow]--allow-unsafe[/]: {len(job.lint.errors)} unsafe change(s) let through:")
        for line in report.options.get("unsafe_findings", []):
            console.print(f"  {escape(line)}", highlight=False)
    for line in report.rehearsal or []:
        console.print(f"rehearsal: {escape(line)}", highlight=False)


def print_unwritten(console: Console, flag: str, path: Path, error: OSError) -> None:
    """An output file the run could not write although it was checked before (a full disk, a volume gone). The
    run's result was shown above; the exit code says the run's record is missing."""
    reason = error.strerror or str(error)
    hint = f"the previous {path} (if any) is left as it was; free space or fix the volume, then run again"
    if json_logs():
        events.output_not_written(flag, path, reason, hint)
        return
    console.print(f"[red]error[/]: {flag} {escape(str(path))} was not written: {escape(reason)}", highlight=False)
    console.print(f"  what to do: {escape(hint)}", highlight=False)


def print_push_failed(console: Console, url: str, error: Exception) -> None:
    """A Pushgateway that could not take the metrics: a warning, the exit code stays the run's."""
    reason = str(getattr(error, "reason", None) or error)
    if json_logs():
        events.metrics_not_pushed(url, reason)
        return
    console.print(
        f"[yellow]warning[/]: metrics not pushed to {escape(url)}: {escape(reason)} (the exit code is the run's)",
        highlight=False,
    )


def print_no_preflight(console: Console) -> None:
    if json_logs():
        events.no_preflight()
        return
    console.print(
        "[yellow]warning[/]: --no-preflight: no read-only plan pass. A file edited since some schools applied it is "
        "not refused before writing: other schools get its new bytes until the first one found holding the old "
        "ones halts the rollout (a split fleet)"
    )


def print_preflight(console: Console, job: Job, planned: RunReport) -> None:
    """What a rollout is about to do, from a read-only plan pass: histogram, then who gets what, and how many
    schools stand otherwise (each school's own line comes with the rollout's results, once)."""
    if json_logs():
        events.preflight(planned)
        return
    if quiet_asked(job):
        return
    print_histogram(console, planned)
    by_steps: dict[tuple[int, ...], int] = {}
    for o in planned.outcomes:
        if o.result.status is Status.PLANNED:
            key = tuple(s.version for s in o.result.steps)
            by_steps[key] = by_steps.get(key, 0) + 1
    verb = "would revert" if planned.command == "revert" else "would get"
    for versions, n in sorted(by_steps.items(), key=lambda kv: -kv[1]):
        console.print(f"  {n} school(s) {verb} {len(versions)} migration(s): {', '.join(map(str, versions))}")
    counts = planned.counts()
    others = {k: v for k, v in counts.items() if k not in (Status.PLANNED.value,)}
    if others:
        console.print("  " + ", ".join(f"{n} {status}" for status, n in sorted(others.items())))
    for server, why in events.servers_found_down(planned).items():
        console.print(f"  [red]server down[/]: {escape(server)}: {escape(why)}", highlight=False)


def print_summary(console: Console, report: RunReport) -> None:
    counts = report.counts()
    parts = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    console.print(f"[bold]summary[/]: {schools(len(report.outcomes))}: {parts} ({report.run.duration_s:.2f}s)")
    if report.command == "resolve" and not any(o.result.status is Status.APPLIED for o in report.outcomes):
        console.print("nothing was written: no selected school had this to resolve (each school's note says why)")
    for server, why in report.run.servers_down.items():
        skipped = sum(1 for o in report.outcomes if o.result.server == server and o.result.attempts == 0)
        console.print(
            f"[red]server down[/]: {escape(server)}: {escape(why)}; {schools(skipped)} not attempted", highlight=False
        )
    if report.run.halted:
        console.print(f"[red]halted[/]: {escape(report.run.halted)}")
    if report.run.interrupted:
        running = "were aborted" if report.run.aborted else "finished"
        console.print(f"[yellow]interrupted[/]: running schools {running}; the rest were skipped")


def print_next_steps(console: Console, job: Job, report: Report, *, report_written: bool = True) -> None:
    """What to do after a run that did not end ok; --resume named only when the report was written."""
    if not isinstance(report, RunReport) or report.ok or report.command in ("status", "plan") or quiet_asked(job):
        return
    report_path = job.request.outputs.report if report_written else None
    if json_logs():
        events.next_steps(report.command, report_path)
        return
    if report_path:
        again = f"`orchestrator {report.command} --resume {report_path}` redoes only the schools that did not end ok"
    else:
        again = (
            f"run `orchestrator {report.command}` again (with --report PATH, a later --resume PATH redoes only "
            "the schools that did not end ok)"
        )
    console.print(f"next: fix what the results above say; then {again}")


def print_wrote(console: Console, job: Job, path: Path) -> None:
    if json_logs():
        events.wrote(path)
    elif not quiet_asked(job):
        console.print(f"wrote {path}")


def print_pushed(console: Console, job: Job, url: str) -> None:
    if json_logs():
        events.metrics_pushed(url)
    elif not quiet_asked(job):
        console.print(f"pushed metrics to {url}")


def print_aborted(console: Console) -> None:
    if json_logs():
        events.aborted()
    else:
        console.print("aborted: nothing was written")


def make_console(*, stderr: bool) -> Console:
    """Rich wraps at 80 columns when not on a terminal; CI logs and pipes read better unwrapped. With
    --log-format json, stderr carries JSON lines only and stdout the --json report only: human text is dropped
    (what it says is an event: cli/events.py)."""
    stream = sys.stderr if stderr else sys.stdout
    if json_logs():
        return Console(file=stream, quiet=True)
    return Console(file=stream, width=None if stream.isatty() else 200, soft_wrap=not stream.isatty())


def print_audit(console: Console, report: AuditReport, *, quiet: bool = False) -> None:
    if json_logs():
        events.audit(report)
        return
    counts = report.counts()
    groups = report.fingerprint_groups()
    if groups and not quiet:
        # Two separate questions, answered apart so the lines never seem to disagree: are the live schemas alike,
        # and are they what the migrations produce?
        identical = len(groups[0][1])
        differ = sum(len(ids) for _, ids in groups[1:])
        compared = [s for s in report.schools if s.fingerprint and s.expected_fingerprint]
        matching = sum(1 for s in compared if s.schema_matches)
        console.print(
            f"live schemas: {identical} alike" + (f", {differ} differ from those" if differ else "")
            + (f"; {matching} of {len(compared)} as their migrations produce" if compared else "")
        )  # fmt: skip
    if (partial := sum(1 for s in report.schools if s.fileless)) and not quiet:
        console.print(
            f"{schools(partial)} hold versions with no file in the given directories (--ignore-missing): their "
            "schemas were compared only with what the files create"
        )
    from rich.table import Table

    drifting = [s for s in report.schools if s.drift]
    if drifting:
        table = Table(title=f"drift in {len(drifting)} of {len(report.schools)} schools")
        for column in ("school", "server", "status", "version", "findings"):
            table.add_column(column, overflow="fold")
        for s in drifting:
            table.add_row(
                escape(s.tenant.id), s.result.server, "drift", version(s.result.version_after),
                escape("\n".join([f.text for f in s.findings] + s.why_not_audited())),
            )  # fmt: skip
        console.print(table)
    # Apart from drift: a school that could not be read or compared is a problem of access, not of its schema.
    unaudited = [s for s in report.schools if s.not_audited is not None and not s.drift]
    if unaudited:
        table = Table(title=f"not audited: {len(unaudited)} of {len(report.schools)} schools")
        for column in ("school", "server", "status", "why"):
            table.add_column(column, overflow="fold")
        for s in unaudited:
            said = s.why_not_audited() or s.result.notes
            table.add_row(escape(s.tenant.id), s.result.server, s.status.value, escape("\n".join(said)))
        console.print(table)
    verdict = {
        "clean": "[green]clean[/]",
        "drift": "[red]drift found[/]",
        "not_audited": "[yellow]not every school could be audited[/]",
    }[report.verdict]
    why = ", ".join(f"{n} {status}" for status, n in report.not_audited_by_status().items())
    not_audited = f"{counts['not_audited']} not audited" + (f" ({why})" if why else "")
    console.print(
        f"[bold]summary[/]: {counts['schools']} schools: {counts['clean']} clean, {counts['drift']} drift "
        f"({counts['schema_drift']} schema, {counts['pending']} pending), {not_audited}: "
        f"{verdict} ({report.duration_s:.2f}s)"
    )


def print_template_plan(console: Console, job: Job, groups: list[TemplateGroup]) -> None:
    if json_logs():
        events.template_plan(job, groups)
        return
    if quiet_asked(job):
        print_warnings(console, job)
        return
    templates = ", ".join(sorted({g.template for g in groups}))
    servers = len({g.server for g in groups})
    where = f"{escape(templates)} on {servers} server(s), keeping {job.request.spares} spare(s) each"
    print_plan_head(console, job, f"{where}; {migrations_text(job.source)}")


def template_state(s: ServerTemplate) -> str:
    """What the run did to the template itself, from its notes: built, refreshed, rebuilt, or current as it was."""
    for note in s.notes:
        for verb in ("built", "refreshed", "rebuilt"):
            if note.startswith(f"{verb} template"):
                return verb
    return "current"


def print_templates(console: Console, report: TemplateReport, *, quiet: bool = False) -> None:
    """One line per server and template: its version and spares, or why it is not ready (--quiet: those only)."""
    if json_logs():
        events.templates(report, [template_state(s) for s in report.servers])
        return
    for s in report.servers:
        where = f"{escape(s.server)}: {escape(s.template)}"
        if s.error is not None:
            console.print(f"{where}: [red]not ready[/]: {escape(s.error)}", highlight=False)
            continue
        if quiet:
            continue
        console.print(
            f"{where} at {version(s.version)}, {template_state(s)}; {s.spares} spare(s) ready "
            f"({s.made} made, {s.dropped} dropped)",
            highlight=False,
        )
        for note in s.notes:
            console.print(f"  - {escape(note)}", highlight=False)
    counts = report.counts()
    verdict = "[green]ok[/]" if report.ok else f"[red]{counts['not_ok']} not ready[/]"
    console.print(f"[bold]summary[/]: {len(report.servers)} template(s) on their servers: {verdict} "
                  f"({report.duration_s:.2f}s)")  # fmt: skip
    if report.interrupted:
        console.print("[yellow]interrupted[/]: running work was stopped and what it half-made dropped (or left to the "
                      "next run, which drops it at once); nothing new was started")  # fmt: skip
