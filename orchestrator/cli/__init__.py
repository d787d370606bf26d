"""The `orchestrator` command: flags in, rendering out. Logic lives in job, runner, fleet and engine; running a
command is cli/run.py, imported only when a command runs.

Exit codes: 0 every selected database ended ok (audit: no drift); 1 any did not, the run halted, or an output file
could not be written after the run; 2 invalid input (nothing was touched); 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from .. import __version__, tracing
from ..errors import UsageError
from ..logsetup import configure_logging, get_logger, json_logs
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
    apply_flags_logging(flags)
    if version:
        if json_logs():
            get_logger("orchestrator.cli").info("version", version=__version__)
        else:
            typer.echo(f"orchestrator {__version__}")
        raise typer.Exit(0)


app.callback(invoke_without_command=True)(with_flags(_main, (LOGGING,)))


def main() -> None:
    try:
        if json_asked(sys.argv[1:]):
            sys.exit(run_with_json_errors())
        app()
    finally:
        tracing.shutdown()  # export the buffered spans, of an interrupted run too (SIGTERM ends the run, not us)


def json_asked(args: list[str]) -> bool:
    """--log-format json anywhere on the command line (before or after the command). Read from argv itself: click
    refuses a mistyped flag before any of our code has seen the others."""
    pairs = zip(args, [*args[1:], ""], strict=True)
    return any(a == "--log-format=json" or (a == "--log-format" and b == "json") for a, b in pairs)


def run_with_json_errors() -> int:
    """The app, with what click and typer would render for a human (a usage error's box, a traceback) as one JSON
    line each: with --log-format json, stderr holds JSON lines only."""
    log = get_logger("orchestrator.cli")
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as error:  # click's usage errors: a mistyped flag, a missing argument, a bad value
        if not json_logs():
            configure_logging("json", "info")  # refused before our callback applied the flags
        context = getattr(error, "ctx", None)
        where = f"`{context.command_path} --help`" if context is not None else "`orchestrator --help`"
        log.error("invalid_input", code=UsageError.code, message=error.format_message(), hint=f"see {where}")
        return error.exit_code
    except typer.Abort:
        return 1
    except Exception:
        if not json_logs():
            configure_logging("json", "info")
        log.exception("internal_error", message="unexpected error; please report it with this event")
        return 1
    return code if isinstance(code, int) else 0


# Registered last: the command modules add their commands to `app`.
from . import commands, serve  # noqa: E402, F401
from .lint import register as _register_lint  # noqa: E402

_register_lint(app)
