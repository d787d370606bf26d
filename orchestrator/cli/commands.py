"""The database commands: migrate, plan, status, bootstrap, provision, revert, audit (one database or a fleet).

Each names its option groups (declared once, in options.py) and adds only the options that are its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..job import Command
from . import app, execute
from .options import FLEET, GATE, REFERENCE_URL, ROLLOUT, Flags, Group, command

TargetVersion = Annotated[int | None, typer.Option("--target", help="Apply up to and including this version.")]

AUDIT_REFERENCE = Group("Scratch databases", (REFERENCE_URL,))


@command(app, *FLEET, ROLLOUT, GATE)
def migrate(
    flags: Flags,
    target: TargetVersion = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be applied (same as plan).")] = False,
    ignore_missing: Annotated[
        bool,
        typer.Option(
            "--ignore-missing",
            help="Accept applied versions whose files are gone (as sqlx --ignore-missing).",
        ),
    ] = False,
    preflight: Annotated[
        bool,
        typer.Option(
            "--preflight",
            help="First a read-only plan pass: the fleet's version histogram "
            "and what would run where, before anything is written (always on a terminal, then it asks).",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before applying (after the plan pass).")] = False,
) -> None:
    """Apply pending migrations: canary wave first, then the rest, within the budgets."""
    execute(
        flags, Command.PLAN if dry_run else Command.MIGRATE, target_version=target, ignore_missing=ignore_missing,
        preflight=preflight, assume_yes=yes,
    )  # fmt: skip


@command(app, *FLEET)
def plan(flags: Flags, target: TargetVersion = None) -> None:
    """Show what migrate would apply where. Read-only: writes nothing, takes no lock."""
    execute(flags, Command.PLAN, target_version=target)


@command(app, *FLEET)
def status(flags: Flags) -> None:
    """Where each school stands: a version histogram, then per school up to date, N pending, dirty, modified,
    missing or unreachable. Read-only."""
    execute(flags, Command.STATUS)


@command(app, *FLEET, ROLLOUT)
def bootstrap(flags: Flags) -> None:
    """Create what is missing (database, extensions, history table) without applying migrations."""
    execute(flags, Command.BOOTSTRAP)


@command(app, *FLEET, ROLLOUT, GATE)
def provision(flags: Flags) -> None:
    """Onboard schools in one idempotent call: create the database if missing, its extensions and history table,
    then apply every migration. -D URL for one school, or the registry's schools (e.g. --tenant ID)."""
    execute(flags, Command.PROVISION)


@command(app, *FLEET, ROLLOUT)
def revert(
    flags: Flags,
    target: Annotated[int, typer.Option("--target", help="Revert down to this version (0 = everything).")],
) -> None:
    """Run down files, newest first, until each school's newest applied version is --target."""
    execute(flags, Command.REVERT, revert_to=target)


@command(app, *FLEET, AUDIT_REFERENCE)
def audit(
    flags: Flags,
    no_schema: Annotated[
        bool, typer.Option("--no-schema", help="Check history drift only.", rich_help_panel="Audit")
    ] = False,
    metrics: Annotated[
        Path | None,
        typer.Option(
            "--metrics", help="Prometheus text file for node_exporter's textfile collector.", rich_help_panel="Audit"
        ),
    ] = None,
    html: Annotated[
        Path | None, typer.Option("--html", help="One self-contained HTML page.", rich_help_panel="Audit")
    ] = None,
) -> None:
    """Nightly drift audit, read-only: pending, edited, missing or half-applied migrations, and live schemas that
    differ from what their migrations produce. Exit 1 when anything drifts."""
    from ..audit.html import render_html
    from ..audit.metrics import render_prometheus

    extra = [(path, render) for path, render in ((metrics, render_prometheus), (html, render_html)) if path]
    execute(flags, Command.AUDIT, audit_schema=not no_schema, extra_files=extra)
