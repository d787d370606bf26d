"""The `orchestrator` command: flags in, rendering out. Logic lives in job, runner, fleet and engine; running a
command is cli/run.py, imported only when a command runs.

Exit codes: 0 every selected database ended ok (audit: no drift); 1 any did not, the run halted, or an output file
could not be written after the run; 2 invalid input (nothing was touched); 130 interrupted.
"""

from __future__ import annotations

from typing import Annotated

import typer

from .. import __version__, tracing
from .options import LOGGING, Flags, apply_flags_logging, with_flags

app = typer.Typer(
    name="orchestrator",
    help="Fleet migration orchestrator for per-school PostgreSQL databases (SQLx-compatible).\n\n"
    "Work on one database with -D URL (-D - for $DATABASE_URL), or on the schools of a registry (tenants.yaml).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)


def _main(
    flags: Flags,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.")] = False,
) -> None:
    if version:
        typer.echo(f"orchestrator {__version__}")
        raise typer.Exit(0)
    apply_flags_logging(flags)


app.callback(invoke_without_command=True)(with_flags(_main, (LOGGING,)))


def main() -> None:
    try:
        app()
    finally:
        tracing.shutdown()  # export the buffered spans, of an interrupted run too (SIGTERM ends the run, not us)


# Registered last: the command modules add their commands to `app`.
from . import commands, serve  # noqa: E402, F401
from .lint import register as _register_lint  # noqa: E402

_register_lint(app)
