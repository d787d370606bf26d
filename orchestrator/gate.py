"""The safety gate in front of `migrate` and `provision`: lint the migrations that would run, refuse on errors.

It runs before any connection, so a refused rollout touches no school. `--allow-unsafe` lets the files through;
the report records that it was given. Released files were linted when they were released (`lint --release`
refuses to record a file with errors), so they pass again here unless someone edited them, which the gate also
refuses.
"""

from __future__ import annotations

from .errors import UnsafeMigrations
from .lint import LintReport, lint_migrations
from .lint.render import editor_line
from .source import MigrationSource

MAX_LISTED = 20


def check(source: MigrationSource, target_version: int | None, *, allow_unsafe: bool) -> LintReport:
    """Lint the migrations up to `target_version`; raise UnsafeMigrations on errors unless allowed."""
    report = lint_migrations(source.up_to(target_version), directory=source.directory)
    if report.errors and not allow_unsafe:
        listed = [editor_line(f) for f in report.errors[:MAX_LISTED]]
        more = len(report.errors) - len(listed)
        raise UnsafeMigrations(
            f"the safety gate refused {len(report.errors)} unsafe change(s); no school was touched:\n  "
            + "\n  ".join(listed)
            + (f"\n  ... and {more} more" if more > 0 else ""),
            hint="`orchestrator lint` explains each finding and what to do instead; fix them, suppress one with "
            "`-- lint:ignore RULE reason: ...`, or pass --allow-unsafe (the report records it)",
        )
    return report
