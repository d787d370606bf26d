"""The `lint` and `new` commands. Flags and rendering only: the work is in orchestrator.lint and .newfile.

Exit codes of `lint`: 0 clean (warnings allowed), 1 an unsuppressed error, 2 invalid input: a missing path, or a
directory the loader refuses (the same message `migrate` gives, since both read it with `source.load_migrations`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer

from ..errors import InvalidInput, UsageError
from ..logsetup import json_logs
from ..settings import DEFAULT_MIGRATIONS
from .options import LEDGER, LEDGERS, MIGRATIONS, Flags, command, fail_usage


class LintFormat(StrEnum):
    text = "text"
    json = "json"
    editor = "editor"


def register(app: typer.Typer) -> None:
    """Add `lint` and `new` to the main CLI."""

    @command(app, LEDGERS, LEDGER, name="lint")
    def lint_command(
        flags: Flags,
        paths: list[Path] | None = typer.Argument(
            None,
            help="Migration directories or files to lint.",
            show_default=str(DEFAULT_MIGRATIONS),
            metavar="<path>...",
        ),
        output_format: LintFormat = typer.Option(
            LintFormat.text, "--format", help="text, json, or editor (file:line:col: severity: \\[rule] message)."
        ),
        released: Path | None = typer.Option(
            None,
            "--released",
            help="Record of released files (one for every path given).",
            show_default="each directory's <dir>/released.sum",
        ),
        release: bool = typer.Option(
            False, "--release", help="Record every current file as released (only when the lint is clean)."
        ),
        baseline: bool = typer.Option(
            False,
            "--baseline",
            help="Record as released, as they are (their findings accepted), the files some school has already "
            "applied: reads the ledgers of the registry's schools (or of -D URL), read-only, the paths' directories "
            "forming one source over one ledger (as several --migrations do). For adopting an "
            "existing SQLx project; a file no school has applied is not recorded. Refused if a released file was "
            "edited.",
        ),
        no_squawk: bool = typer.Option(False, "--no-squawk", help="Run only the orchestrator's own rules."),
    ) -> None:
        """Check migrations for changes that are unsafe on a fleet of school databases."""
        from ..lint import EACH_DIRECTORY, lint_paths
        from ..lint.render import render_editor, render_json, render_text

        renderers = {LintFormat.text: render_text, LintFormat.json: render_json, LintFormat.editor: render_editor}
        targets = paths or [DEFAULT_MIGRATIONS]
        try:
            if baseline:
                from ..adoption import baseline as record_baseline

                database_url, registry = flags.fleet_target()
                report = record_baseline(
                    targets,
                    released_file=released or EACH_DIRECTORY,
                    use_squawk=not no_squawk,
                    database_url=database_url,
                    registry=registry,
                    ignore_missing=flags.values["ignore_missing"],
                )
            elif flags.given & {"database_url", "registry", "ignore_missing"}:
                raise UsageError(
                    "-D, --registry and --ignore-missing go with --baseline (lint alone reads no database)"
                )
            else:
                report = lint_paths(
                    targets, released_file=released or EACH_DIRECTORY, use_squawk=not no_squawk, release=release
                )
        except InvalidInput as err:
            fail_usage(err)
        if json_logs() and output_format is LintFormat.text:  # the text report, as events
            from .events import lint as lint_events

            lint_events(report)
        else:
            typer.echo(renderers[output_format](report), nl=False)
        raise typer.Exit(0 if report.ok else 1)

    @command(app, MIGRATIONS, name="new")
    def new_command(
        flags: Flags,
        description: list[str] = typer.Argument(
            ..., help="What the migration does, e.g. add library books", metavar="<words>..."
        ),
    ) -> None:
        """Create a new reversible migration (an .up.sql and .down.sql pair), as `sqlx migrate add -r` does."""
        from ..newfile import new_migration

        try:
            up, down = new_migration(flags.values["migrations"], " ".join(description))
        except InvalidInput as err:
            fail_usage(err)
        if json_logs():
            from .events import wrote

            wrote(up)
            wrote(down)
            return
        typer.echo(up)
        typer.echo(down)
