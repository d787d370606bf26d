"""The database commands: migrate, plan, status, bootstrap, provision, revert, audit, template (one database or a
fleet).

Each names its option groups (declared once, in options.py) and adds only the options that are its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..command import Command
from ..settings import DEFAULT_SPARES
from . import app
from .options import (
    CONFIRM,
    EXTENSIONS,
    FLEET,
    GATE,
    LEDGER,
    METRICS,
    ONBOARDING,
    PLAN_FIRST,
    PREFLIGHT_AND_YES,
    REFERENCE_URL,
    ROLLOUT,
    Flags,
    Group,
    Spares,
    command,
)

TargetVersion = Annotated[int | None, typer.Option("--target", help="Apply up to and including this version.")]

AUDIT_REFERENCE = Group("Scratch databases", (REFERENCE_URL,))


def execute(flags: Flags, command: Command, **specific: Any) -> None:
    from .run import execute as run  # the machinery of a run: imported when a command runs, not at start-up

    run(flags, command, **specific)


@command(app, *FLEET, LEDGER, ROLLOUT, GATE, ONBOARDING, EXTENSIONS, PLAN_FIRST, METRICS)
def migrate(
    flags: Flags,
    target: TargetVersion = None,
    create_missing: Annotated[
        bool,
        typer.Option(
            "--create-missing",
            help="Create a school's database when it does not exist (new schools), "
            "with its extensions and history table, and migrate it in the same pass. Without it a missing "
            "database is `no_database`: a lost database is never quietly re-created.",
        ),
    ] = False,
) -> None:
    """Apply pending migrations: canary wave first, then the rest, within the budgets."""
    command = Command.PLAN if flags.values["dry_run"] else Command.MIGRATE
    execute(flags, command, target_version=target, create_missing=create_missing)


@command(app, *FLEET, LEDGER)
def plan(flags: Flags, target: TargetVersion = None) -> None:
    """Show what migrate would apply where. Read-only: writes nothing, takes no lock."""
    execute(flags, Command.PLAN, target_version=target)


@command(app, *FLEET, LEDGER)
def status(flags: Flags) -> None:
    """Where each school stands: a version histogram, then per school up to date, N pending, dirty, modified,
    missing or unreachable. Read-only."""
    execute(flags, Command.STATUS)


@command(app, *FLEET, ROLLOUT, EXTENSIONS, CONFIRM)
def bootstrap(flags: Flags) -> None:
    """Create what is missing (database, extensions, history table) without applying migrations."""
    execute(flags, Command.BOOTSTRAP)


@command(app, *FLEET, LEDGER, ROLLOUT, GATE, ONBOARDING, EXTENSIONS, PREFLIGHT_AND_YES, METRICS)
def provision(flags: Flags) -> None:
    """Onboard schools in one idempotent call: create the database if missing (a copy of --template, when given),
    its extensions and history table, then apply every migration not in it yet. -D URL for one school, or the
    registry's schools (e.g. --tenant ID)."""
    execute(flags, Command.PROVISION)


@command(app, *FLEET, LEDGER, ROLLOUT, PLAN_FIRST, METRICS)
def revert(
    flags: Flags,
    target: Annotated[int, typer.Option("--target", help="Revert down to this version (0 = everything).")],
) -> None:
    """Run down files, newest first, until each school's newest applied version is --target."""
    execute(flags, Command.REVERT, revert_to=target, dry_run=flags.values["dry_run"])


@command(app, *FLEET, LEDGER, ROLLOUT, PLAN_FIRST, METRICS)
def resolve(
    flags: Flags,
    applied: Annotated[
        int | None,
        typer.Option(
            "--applied",
            help="VERSION took effect: on schools whose row for it is unfinished (success = false, `dirty`), "
            "record it applied with the current file's checksum. Other schools are left alone (`skipped`).",
        ),
    ] = None,
    not_applied: Annotated[
        int | None,
        typer.Option(
            "--not-applied",
            help="VERSION did not take effect (undo any half-done part first): on schools whose row for it is "
            "unfinished, delete the row, so it runs again. Other schools are left alone (`skipped`).",
        ),
    ] = None,
    restamp: Annotated[
        int | None,
        typer.Option(
            "--restamp",
            help="VERSION's applied file was edited without changing what it does: record the current file's "
            "checksum, only on schools whose schema matches what the current files produce (an audit pass "
            "decides; the others stay `modified`), and only if the file holds nothing the schema comparison "
            "cannot see (rows, privileges, comments, what a query, CALL or DO ran).",
        ),
    ] = None,
    schema_evidence: Annotated[
        bool,
        typer.Option(
            "--schema-evidence",
            help="With --applied: also record VERSION on a school that has no row for it, when its live schema "
            "equals what its applied files and VERSION produce (an audit pass compares): VERSION's SQL was run "
            "by hand. The note says so.",
        ),
    ] = False,
    allow_unverified: Annotated[
        bool,
        typer.Option(
            "--allow-unverified",
            help="With --restamp and --tenant: re-stamp the named schools although the file holds statements "
            "whose effect the schema comparison cannot see (you checked those schools yourself). Recorded in "
            "the report.",
        ),
    ] = False,
) -> None:
    """The way out of `dirty` and of a harmless `modified`: record in each selected school's ledger what is true,
    after checking what an interrupted `-- no-transaction` file left behind (the hint says what to check). Only
    schools with something to resolve are written; the others are `skipped`, with a note saying why."""
    actions = (("applied", applied), ("not_applied", not_applied), ("restamp", restamp))
    given = [(how, version) for how, version in actions if version is not None]
    if len(given) != 1:
        from ..errors import UsageError
        from .options import fail_usage

        fail_usage(UsageError("give exactly one of --applied, --not-applied or --restamp VERSION"))
    command = Command.STATUS if flags.values["dry_run"] else Command.RESOLVE
    execute(flags, command, resolve=given[0], schema_evidence=schema_evidence, allow_unverified=allow_unverified)


@command(app, *FLEET, LEDGER, AUDIT_REFERENCE, EXTENSIONS, METRICS)
def audit(
    flags: Flags,
    no_schema: Annotated[
        bool, typer.Option("--no-schema", help="Check history drift only.", rich_help_panel="Audit")
    ] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="One self-contained HTML page.", rich_help_panel="Audit")
    ] = None,
) -> None:
    """Nightly drift audit, read-only on schools: pending, edited, missing or half-applied migrations, and live
    schemas that differ from what their migrations produce (built in scratch databases on the first school's server
    unless --reference-url is given). Exit 0 clean; 1 drift found (even if some schools could not be audited); 3
    some school could not be audited (unreachable, denied, unreadable, no_reference) and none drifted; 2 invalid
    input; 130 interrupted."""
    from ..audit.html import render_html

    extra = [("--html", html, render_html)] if html else []
    execute(flags, Command.AUDIT, audit_schema=not no_schema, extra_files=extra)


# The shared groups too, so one script's flags work on every command: --concurrency and --per-server bound the
# builds and --retries retries a server's transient failure (template_fleet.py); --no-progress and
# --server-down-after have nothing to act on (one line per server, at the end; each server is tried once).
@command(app, *FLEET, ONBOARDING, EXTENSIONS, CONFIRM, METRICS)
def template(
    flags: Flags,
    spares: Spares = DEFAULT_SPARES,
) -> None:
    """Build or refresh the template on each server of the selected schools and keep --spares ready copies of it:
    onboarding a school then renames a spare (milliseconds) instead of copying the template. Run it after a
    release and nightly."""
    from .run import execute_template

    execute_template(flags, spares)
