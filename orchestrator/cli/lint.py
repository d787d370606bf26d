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
        reversible: bool = typer.Option(
            False, "--reversible", "-r", help="An .up.sql and .down.sql pair (refused where the first is simple)."
        ),
        simple: bool = typer.Option(
            False,
            "--simple",
            help="One <version>_<description>.sql, without a down file (refused where the first migration is a pair).",
        ),
    ) -> None:
        """Create a new migration, as `sqlx migrate add` does: the kind of the directory's first migration, and a
        reversible pair (.up.sql and .down.sql) in an empty one."""
        from ..newfile import new_migration

        try:
            if reversible and simple:
                raise UsageError("-r and --simple contradict each other", hint="give one or the other")
            kind = True if reversible else (False if simple else None)
            paths = new_migration(flags.values["migrations"], " ".join(description), reversible=kind)
        except InvalidInput as err:
            fail_usage(err)
        if json_logs():
            from .events import wrote

            for path in paths:
                wrote(path)
            return
        for path in paths:
            typer.echo(path)
