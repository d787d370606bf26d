"""The safety gate in front of `migrate` and `provision`: refuse unsafe changes before they reach the fleet.

Two steps. Before any connection (`job.prepare`), the files up to the target are linted; released files
(`released.sum`) only for edits. Then, only if that found errors, a read-only plan pass tells which files would
actually run somewhere: an error refuses the run (exit 2, nothing written) only in a file pending on at least one
selected school. So a live SQLx fleet adopted mid-life, whose early files break today's rules but are applied
everywhere, migrates new safe files without `--allow-unsafe`, and a new unsafe file is refused by name.
`--allow-unsafe` lets errors through; the report records it.
"""

from __future__ import annotations

from collections.abc import Iterable

from .errors import UnsafeMigrations
from .lint import LintReport, lint_migrations
from .lint.findings import Finding
from .lint.render import editor_line
from .outcome import Status
from .report import RunReport
from .source import MigrationSource

MAX_LISTED = 20
RELEASED_RULES = "released-"  # released-file-edited, released-file-deleted, released-sum-edited


def lint_up_to(source: MigrationSource, target_version: int | None) -> LintReport:
    """Lint the migrations up to `target_version` (released files, in each directory's released.sum: only for
    edits)."""
    return lint_migrations(source.up_to(target_version), directories=source.directories)


def versions_that_would_run(planned: RunReport, source: MigrationSource, target_version: int | None) -> set[int]:
    """From a plan pass: the versions pending on at least one school (every version for a school that has no
    database or no history yet). A school the pass could not read is left out: this run cannot write to it."""
    everything = {m.version for m in source.up_to(target_version)}
    running: set[int] = set()
    for o in planned.outcomes:
        if o.result.status is Status.PLANNED:
            running.update(step.version for step in o.result.steps)
        elif o.result.status is Status.NO_DATABASE:
            running |= everything
    return running


def refuse_edits(report: LintReport) -> None:
    """A released file edited or deleted (or released.sum edited by hand) is refused before any connection,
    wherever it is applied: it is about the files, not about what would run."""
    edits = [f for f in report.errors if f.rule.startswith(RELEASED_RULES)]
    if edits:
        raise _refusal(edits)


def refuse(report: LintReport, source: MigrationSource, running: Iterable[int] | None = None) -> None:
    """Raise UnsafeMigrations for the errors in files whose version would run (None: every file linted)."""
    errors = report.errors
    if running is not None:
        paths = {file.path for m in source if m.version in set(running) for file in m.files}
        errors = [f for f in errors if f.path in paths]
    if errors:
        raise _refusal(errors)


def _refusal(errors: list[Finding]) -> UnsafeMigrations:
    listed = [editor_line(f) for f in errors[:MAX_LISTED]]
    more = len(errors) - len(listed)
    return UnsafeMigrations(
        f"the safety gate refused {len(errors)} unsafe change(s) in files that would run; no school was touched:\n  "
        + "\n  ".join(listed)
        + (f"\n  ... and {more} more" if more > 0 else ""),
        hint="`orchestrator lint` explains each finding and what to do instead. Fix the file if no school has "
        "applied it yet (or suppress one with `-- lint:ignore RULE reason: ...`); never touch a file that is "
        "applied somewhere (its checksum would change): write a new migration instead. Or pass --allow-unsafe "
        "(the report records it)",
    )
