"""The safety gate in front of `migrate` and `provision`: refuse unsafe changes before they reach the fleet.

Two steps. Before any connection (`job.prepare`), the files up to the target are linted; released files
(`released.sum`, each directory's own) only for edits, and an edited released file is refused at once. Then the
read-only plan pass tells where each file would run (the one every registry rollout makes, `runner.plan_first`; with
-D or --no-preflight, made only when the lint found errors), and `runner.refuse_before_writing` has the gate judge
each file by where it will run:

- on a school with data (any ledger row, or tables of its own), every error counts;
- on a new school (no database yet, or no ledger rows and no tables of its own: created or bootstrapped for this
  run), the busy-table rules (locks, rewrites, rows, running code: `lint.catalog.busy_tables`) do not apply to the
  up files that run there: its tables are new and empty, and nothing reads them yet. The other rules still do;
- a file that would run nowhere (applied everywhere it could run) is not judged: a live SQLx fleet adopted
  mid-life, whose early files break today's rules, migrates new safe files without `--allow-unsafe`.

Down files are judged as a whole wherever their up runs: a down runs later, on `revert`, when the school has had rows
and traffic (and a down file is not checksummed: it can always be fixed in place).

The refusal (exit 2, nothing written) names each finding, where its file would run, and the way out: files some
school already applied are recorded as they are with `lint --baseline` (which reads the fleet and records only
those), files no school has applied are fixed (or a finding suppressed with a reason), and `--allow-unsafe` lets
everything through for one run (the report records it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UnsafeMigrations, some
from .lint import LintReport, lint_migrations
from .lint.catalog import busy_tables
from .lint.findings import Finding
from .lint.render import editor_line
from .outcome import Status
from .report import RunReport
from .source import MigrationSource

if TYPE_CHECKING:
    from .job import Job

MAX_LISTED = 20
RELEASED_RULES = "released-"  # released-file-edited, released-file-deleted, released-sum-edited


def lint_up_to(source: MigrationSource, target_version: int | None) -> LintReport:
    """Lint the migrations up to `target_version` (released files, in each directory's released.sum: only for
    edits)."""
    return lint_migrations(source.up_to(target_version), directories=source.directories)


@dataclass(frozen=True)
class Placement:
    """From a read-only plan pass: where each version would run, and where it is applied already. A school the
    pass could not read is left out: this run cannot write to it."""

    #: version -> the schools with data (ledger rows, or tables of their own) where it is pending
    busy: dict[int, list[str]] = field(default_factory=dict)
    #: versions pending on at least one new school (no database yet, or no ledger rows and no tables)
    new: set[int] = field(default_factory=set)
    #: version -> the schools that applied it (with these bytes: others are `modified`, refused apart)
    applied: dict[int, list[str]] = field(default_factory=dict)

    def runs(self, version: int) -> bool:
        return version in self.busy or version in self.new


def placement(planned: RunReport, source: MigrationSource, target_version: int | None) -> Placement:
    """Where each version up to the target would run, from the plan pass (`runner.plan_first`)."""
    goal = [m.version for m in source.up_to(target_version)]
    where = Placement()
    for o in planned.outcomes:
        result, school = o.result, o.tenant.id
        if result.status is Status.NO_DATABASE:
            where.new.update(goal)  # created by this run (--create-missing, provision), or left alone
            continue
        if result.status not in (Status.PLANNED, Status.UP_TO_DATE):
            continue
        pending = set(result.pending)
        for version in goal:
            if version not in pending:
                where.applied.setdefault(version, []).append(school)
            elif result.new_school:
                where.new.add(version)
            else:
                where.busy.setdefault(version, []).append(school)
    return where


def refuse_edits(report: LintReport) -> None:
    """A released file edited or deleted (or released.sum edited by hand) is refused before any connection,
    wherever it is applied: it is about the files, not about what would run."""
    edits = [f for f in report.errors if f.rule.startswith(RELEASED_RULES)]
    if edits:
        raise _refusal(edits, source=None, where=None, fleet="")


def refuse_where_it_runs(job: Job, planned: RunReport) -> None:
    """Raise UnsafeMigrations for the errors that count where their files would run (see the module's docstring)."""
    assert job.lint is not None
    refuse(job.lint, job.source, placement(planned, job.source, job.request.target_version), fleet=_fleet_flags(job))


def refuse(report: LintReport, source: MigrationSource, where: Placement | None = None, *, fleet: str = "") -> None:
    """Raise UnsafeMigrations for the errors that count where their files would run (None: every error counts)."""
    errors = report.errors
    if where is not None:
        files = _files(source)
        errors = [f for f in errors if f.path in files and _counts(f, *files[f.path], where)]
    if errors:
        raise _refusal(errors, source=source, where=where, fleet=fleet)


def _files(source: MigrationSource) -> dict[Path, tuple[int, bool]]:
    """Each file's path -> (its version, whether it is a down file)."""
    return {file.path: (m.version, file.kind == "down") for m in source for file in m.files}


def _counts(f: Finding, version: int, down: bool, where: Placement) -> bool:
    if version in where.busy:
        return True
    return version in where.new and (down or not busy_tables(f.rule))


def _fleet_flags(job: Job) -> str:
    """How `lint --baseline` reaches the same fleet (never a URL: it may hold a password)."""
    request = job.request
    directories = " ".join(str(d) for d in request.migrations)  # lint reads them as one source, as migrate does
    ignore = " --ignore-missing" if request.ignore_missing else ""
    if request.single:
        return f"{directories} --baseline{ignore} -D <the same URL>"
    return f"{directories} --baseline{ignore} --registry {request.registry}"


def _refusal(
    errors: list[Finding], *, source: MigrationSource | None, where: Placement | None, fleet: str
) -> UnsafeMigrations:
    listed = [editor_line(f) for f in errors[:MAX_LISTED]]
    more = len(errors) - len(listed)
    message = (
        f"the safety gate refused {len(errors)} unsafe change(s) in files that would run; no school was touched:\n  "
        + "\n  ".join(listed)
        + (f"\n  ... and {more} more" if more > 0 else "")
    )
    if source is None or where is None:
        return UnsafeMigrations(
            message,
            hint="`orchestrator lint` explains each finding and what to do instead. Fix the file if no school has "
            "applied it yet (or suppress one with `-- lint:ignore RULE reason: ...`); never touch a file that is "
            "applied somewhere (its checksum would change): write a new migration instead. Or pass --allow-unsafe "
            "(the report records it)",
        )
    files = _files(source)
    lines: list[str] = []
    applied: list[str] = []
    fresh: list[str] = []
    downs: list[str] = []
    for path in dict.fromkeys(f.path for f in errors):
        version, down = files[path]
        busy, holders = where.busy.get(version, []), where.applied.get(version, [])
        runs = f"would run on {len(busy)} school(s) with data ({some(busy, 5)})" if busy else "would run on new schools"
        held = f", applied on {len(holders)} ({some(holders, 5)})" if holders else ", applied on no school yet"
        lines.append(f"{path.name}: {runs}{held}")
        (downs if down else applied if holders else fresh).append(path.name)
    ways = []
    if applied:
        ways.append(
            f"{', '.join(applied)}: applied on some schools already, so never edit them (their checksum would change "
            f"and SQLx workers would refuse to start); record them as released, as they are, with `orchestrator lint "
            f"{fleet}` (it reads the fleet's ledgers and records only files some school applied)"
        )
    if fresh:
        ways.append(
            f"{', '.join(fresh)}: no school has applied them: fix them (`orchestrator lint` says what to do instead) "
            "or suppress a finding with `-- lint:ignore RULE reason: ...`"
        )
    if downs:
        ways.append(f"{', '.join(downs)}: down files are not checksummed: fix them in place, even where applied")
    ways.append(
        "or pass --allow-unsafe: every finding goes through for this run, and on schools with data the statements "
        "take the locks and rewrites lint describes (writes wait while they run; a NOT NULL column without a "
        "default fails where rows exist); the report records it"
    )
    return UnsafeMigrations(
        message + "\nwhere they would run (busy-table rules do not apply on new schools):\n  " + "\n  ".join(lines),
        hint="; ".join(ways),
    )
