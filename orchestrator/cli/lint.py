"""The `lint` and `new` commands. Flags and rendering only: the work is in orchestrator.lint and .newfile.

Exit codes of `lint`: 0 clean (warnings allowed), 1 an unsuppressed error, 2 invalid input: a missing path, or a
directory the loader refuses (the same message `migrate` gives, since both read it with `source.load_migrations`).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import NoReturn

import typer

from ..errors import InvalidInput
from ..lint import default_released_file, lint_paths
from ..lint.render import render_editor, render_json, render_text
from ..newfile import new_migration


class LintFormat(StrEnum):
    text = "text"
    json = "json"
    editor = "editor"


_RENDERERS = {LintFormat.text: render_text, LintFormat.json: render_json, LintFormat.editor: render_editor}


def _fail(err: InvalidInput) -> NoReturn:
    """Report invalid input as every other command does (exit code 2)."""
    # Imported here: the package imports this module after defining fail_usage.
    from . import fail_usage

    fail_usage(err)
    raise typer.Exit(2)  # fail_usage has already exited; this only tells the type checker


def register(app: typer.Typer) -> None:
    """Add `lint` and `new` to the main CLI."""

    @app.command("lint")
    def lint_command(
        paths: list[Path] | None = typer.Argument(
            None, help="Migration directories or files to lint [default: migrations]", show_default=False
        ),
        output_format: LintFormat = typer.Option(LintFormat.text, "--format", help="text, json, or editor"),
        released: Path | None = typer.Option(
            None, "--released", help="Record of released files [default: <dir>/released.sum]", show_default=False
        ),
        release: bool = typer.Option(
            False, "--release", help="Record every current file as released (only when the lint is clean)"
        ),
        no_squawk: bool = typer.Option(False, "--no-squawk", help="Run only the orchestrator's own rules"),
    ) -> None:
        """Check migrations for changes that are unsafe on a fleet of school databases."""
        targets = paths or [Path("migrations")]
        try:
            report = lint_paths(
                targets,
                released_file=released or default_released_file(targets),
                use_squawk=not no_squawk,
                release=release,
            )
        except InvalidInput as err:
            _fail(err)
        typer.echo(_RENDERERS[output_format](report), nl=False)
        raise typer.Exit(0 if report.ok else 1)

    @app.command("new")
    def new_command(
        description: list[str] = typer.Argument(..., help="What the migration does, e.g. add library books"),
        migrations: Path = typer.Option(Path("migrations"), "--migrations", help="Migrations directory"),
    ) -> None:
        """Create a new reversible migration (an .up.sql and .down.sql pair), as `sqlx migrate add -r` does."""
        try:
            up, down = new_migration(migrations, " ".join(description))
        except InvalidInput as err:
            _fail(err)
        typer.echo(up)
        typer.echo(down)
