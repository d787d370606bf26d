"""The command line's option groups, each declared once, and the small typer layer that puts them on a command.

A command names the groups it takes; `command()` adds their flags to its typer signature (each group in its own
help panel), and hands the body a `Flags` value that turns what was typed into the settings module's groups.
Shown defaults are the settings module's own: nothing here writes a default of its own. Whether a per-school
setting was given on the command line (rather than left at its default) comes from click's parameter source, so
an unset flag never hides the registry's value.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from ..command import Command
from ..errors import InvalidInput, UsageError
from ..logsetup import LOG_FORMATS, LOG_LEVELS, configure_logging
from ..settings import (
    BUILTIN,
    DEFAULT_MIGRATIONS,
    DEFAULT_REGISTRY,
    Budgets,
    FailureBudget,
    Gate,
    Outputs,
    SchoolSettings,
    Selection,
    format_duration,
    parse_duration,
    parse_shard,
)

if TYPE_CHECKING:
    from ..job import Request


@dataclass(frozen=True)
class Flag:
    name: str  # the Python parameter name
    type: Any
    decls: tuple[str, ...]
    help: str
    default: Any = None
    show_default: bool | str = True
    metavar: str | None = None  # e.g. <duration>; None: typer's, from the type
    envvar: str | None = None  # read when the flag is not typed (an empty value counts as unset)

    def parameter(self, panel: str) -> inspect.Parameter:
        is_flag = self.type is bool
        option = typer.Option(
            *self.decls,
            help=self.help,
            rich_help_panel=panel,
            show_default=False if is_flag else self.show_default,
            metavar=self.metavar,
            envvar=self.envvar,
        )
        return inspect.Parameter(
            self.name, inspect.Parameter.KEYWORD_ONLY, default=self.default, annotation=Annotated[self.type, option]
        )


@dataclass(frozen=True)
class Group:
    panel: str
    flags: tuple[Flag, ...]


def _duration(name: str, decls: str, help: str, default: float) -> Flag:
    return Flag(name, str, (decls,), help, format_duration(default), metavar="<duration>")


_budgets, _outputs, _gate = Budgets(), Outputs(), Gate()

# `new` writes into one directory; the database commands read one or several (one source over one ledger).
MIGRATIONS = Group(
    "Migrations",
    (Flag("migrations", Path, ("--migrations",), "Directory to write the new files into.", DEFAULT_MIGRATIONS),),
)
DATABASES = Group(
    "Databases",
    (
        Flag("database_url", str | None, ("-D", "--database-url"),
             "One database instead of the registry's schools; `-D -` takes its URL from $DATABASE_URL (an exported "
             "DATABASE_URL is not used otherwise).", show_default=False, metavar="<url>"),
        Flag("registry", Path, ("--registry",), "The tenant registry (YAML).", DEFAULT_REGISTRY),
        Flag("migrations", list[Path], ("--migrations",), "Directory of SQLx migration files; repeatable: "
             "several directories (e.g. a main one and a deferred one) form one source over one ledger.",
             (DEFAULT_MIGRATIONS,), metavar="<path>"),
    ),
)  # fmt: skip
# Commands that check a school's ledger against the files (not bootstrap, which applies nothing, nor template,
# which builds from the files alone).
LEDGER = Group(
    "Ledger",
    (
        Flag("ignore_missing", bool, ("--ignore-missing",), "Applied versions with no file in the --migrations "
             "directories are not an error (not missing, not drift), as with sqlx --ignore-missing: e.g. another "
             "migrator's directory applied them.", False),
    ),
)  # fmt: skip
# `lint --baseline` reads the schools' ledgers: the same -D and --registry as every database command.
LEDGERS = Group("Reading the fleet (--baseline)", DATABASES.flags[:2])
SELECTION = Group(
    "Selecting schools",
    (
        Flag("tenant", list[str] | None, ("--tenant",), "Only this school (repeatable).", show_default=False,
             metavar="<id>"),
        Flag("tag", list[str] | None, ("--tag",), "Only schools with this tag (repeatable).", show_default=False,
             metavar="<tag>"),
        Flag("exclude", list[str] | None, ("--exclude",), "Leave this school out (repeatable).", show_default=False,
             metavar="<id>"),
        Flag("exclude_tag", list[str] | None, ("--exclude-tag",), "Leave out schools with this tag (repeatable; "
             "wins over --tenant and --tag).", show_default=False, metavar="<tag>"),
        Flag("shard", str | None, ("--shard",), "I/N: this process's share of the fleet, 0 <= I < N "
             "(N processes cover every school exactly once).", show_default=False, metavar="<I/N>"),
        Flag("resume", Path | None, ("--resume",), "Only the schools that did not end ok in this earlier --report.",
             show_default=False),
    ),
)  # fmt: skip
BUDGETS = Group(
    "Budgets",
    (
        Flag("concurrency", int, ("--concurrency", "-j"), "Schools worked on at once, in total.",
             _budgets.concurrency),
        Flag("per_server", int, ("--per-server",), "Sessions at once per database server (host:port). "
             "Overrides the registry's per_server.", BUILTIN.per_server),
        Flag("retries", int, ("--retries",), "Extra attempts for transient failures (connection lost, lock not "
             "available), with exponential backoff.", _budgets.retries),
        Flag("server_down_after", int, ("--server-down-after",), "After N attempts in a row get no answer from "
             "one server (connection refused, timed out or reset, or a reply deadline passed), its other schools end "
             "unreachable at once (0 = never).",
             _budgets.server_down_after),
        _duration("grace", "--grace", "After the first Ctrl-C or SIGTERM (nothing new starts), how long running "
                  "work may go on before it is aborted (a second signal aborts at once). Give a pod's "
                  "terminationGracePeriodSeconds (systemd: TimeoutStopSec) this plus a margin.", _budgets.grace),
    ),
)  # fmt: skip
ROLLOUT = Group(
    "Rollout",
    (
        Flag("canary", int, ("--canary",), "Without schools tagged `canary`: the first N schools go first, alone; "
             "the rest start only if all of them end ok.", _budgets.canary),
        Flag("max_failures", str | None, ("--max-failures",), "Stop starting schools after N failures (or P%); "
             "the rest are reported skipped.", show_default="no limit", metavar="<N|P%>"),
    ),
)  # fmt: skip
SESSION = Group(
    "Session limits (override the registry's)",
    (
        _duration("connect_timeout", "--connect-timeout", "How long to wait for a connection.",
                  BUILTIN.connect_timeout),
        _duration("lock_timeout", "--lock-timeout", "Per-session lock_timeout (0 = none).", BUILTIN.lock_timeout),
        _duration("statement_timeout", "--statement-timeout", "Per-session statement_timeout (0 = none).",
                  BUILTIN.statement_timeout),
        _duration("lock_wait", "--lock-wait", "How long to wait for SQLx's migration lock before `locked`.",
                  BUILTIN.lock_wait),
    ),
)  # fmt: skip
REPORT = Flag("report", Path | None, ("--report",), "Write the JSON report here.", show_default=False)
JUNIT = Flag("junit", Path | None, ("--junit",), "Write a JUnit XML report here (one case per school; `template`: "
             "per server).", show_default=False)  # fmt: skip
JSON_OUT = Flag("json_out", bool, ("--json",), "Print the JSON report on stdout (human output goes to stderr).",
                _outputs.json)  # fmt: skip
NO_PROGRESS = Flag("no_progress", bool, ("--no-progress",), "No progress bar or per-school progress lines.",
                   not _outputs.progress)  # fmt: skip
QUIET = Flag("quiet", bool, ("--quiet",), "Only what is not ok (each such school with its hint), the summary "
             "and errors: no plan, no progress, no ok schools. --json's stdout is the same.",
             _outputs.quiet)  # fmt: skip
OUTPUTS = Group("Outputs", (REPORT, JUNIT, JSON_OUT, NO_PROGRESS, QUIET))
# The run's outcome for Prometheus (docs/metrics.md): commands that change the fleet, and the audit.
METRICS = Group(
    "Metrics",
    (
        Flag("metrics", Path | None, ("--metrics",), "Write the run's Prometheus metrics here (a textfile for "
             "node_exporter's textfile collector, replaced atomically).", show_default=False),
        Flag("pushgateway", str | None, ("--pushgateway",), "Push the same metrics to this Prometheus Pushgateway "
             "(job `orchestrator`, grouping key `command`, and `shard` with --shard). A failed push is a warning: "
             "the exit code stays the run's.", show_default=False, metavar="<url>",
             envvar="ORCHESTRATOR_PUSHGATEWAY"),
    ),
)  # fmt: skip
REFERENCE_URL = Flag(
    "reference_url", list[str] | None, ("--reference-url",), "Server for scratch databases (needs CREATEDB); "
    "repeatable: one per PostgreSQL major version in the fleet.",
    show_default="the first reachable school's server of each version", metavar="<url>",
)  # fmt: skip
GATE = Group(
    "Safety gate",
    (
        Flag("allow_unsafe", bool, ("--allow-unsafe",), "Let the safety gate's lint errors through (the report "
             "records it).", _gate.allow_unsafe),
        Flag("rehearse", bool, ("--rehearse",), "First apply, revert and re-apply the pending files on a scratch "
             "database at the fleet's current version(s); stop before any school if that fails.", _gate.rehearse),
        REFERENCE_URL,
    ),
)  # fmt: skip
ONBOARDING = Group(
    "Onboarding new schools",
    (
        Flag("template", str | None, ("--template",), "Create each new school's database (provision, migrate "
             "--create-missing) as a copy of this "
             "template database, which is kept at the latest migration on each server (built or refreshed when "
             "missing or behind); when it cannot be used, the files are applied instead and the report says why. "
             "Overrides the registry's template (\"\" = none).", show_default="the registry's, else none",
             metavar="<name>"),
    ),
)  # fmt: skip
EXTENSIONS = Group(
    "Extensions",
    (
        Flag("extension", list[str] | None, ("--extension",), "Create this extension in each school's database "
             "(bootstrap, provision, new schools of migrate --create-missing, templates) and expect it in the audit; "
             "repeatable. Overrides the registry's extensions.", show_default="the registry's, else none",
             metavar="<name>"),
        Flag("no_extensions", bool, ("--no-extensions",), "Create and expect no extension, whatever the registry "
             "says (a school then is exactly what `sqlx migrate run` builds).", False),
    ),
)  # fmt: skip
# `template` keeps them; `serve` keeps them topped up in the background. One flag, one help.
Spares = Annotated[
    int,
    typer.Option(
        "--spares",
        help="Ready copies of the template to keep on each server (0 drops them all); `serve` tops them up in the "
        "background as onboardings take them.",
        rich_help_panel=ONBOARDING.panel,
    ),
]
DRY_RUN = Flag("dry_run", bool, ("--dry-run",), "Only show what would run where; read-only, takes no lock.", False)
PREFLIGHT = Flag(
    "preflight", bool, ("--preflight/--no-preflight",), "Over a registry, first a read-only plan pass (the "
    "default): the version histogram, who gets what, and a refusal (exit 2, nothing written) of files edited since "
    "some schools applied them. --no-preflight gives that up: an edited file then reaches schools until the first "
    "one found holding its other bytes halts the rollout, and there is no plan to confirm.", _gate.preflight,
)  # fmt: skip
YES = Flag("yes", bool, ("--yes", "-y"), "Answer yes in advance. Over a registry, a write with planned work, or "
           "to every school (no selection), first asks on a terminal, and without one is refused (exit 2, nothing "
           "written): scripts and CI confirm with --yes.", False)  # fmt: skip
PLAN_FIRST = Group("Plan first", (DRY_RUN, PREFLIGHT, YES))
PREFLIGHT_AND_YES = Group(PLAN_FIRST.panel, (PREFLIGHT, YES))  # provision: no dry run of its own
CONFIRM = Group("Confirming", (YES,))  # bootstrap and template: no plan pass
LOGGING = Group(
    "Logging",
    (
        Flag("log_format", str, ("--log-format",), f"{' or '.join(LOG_FORMATS)} (structlog JSON lines on stderr).",
             LOG_FORMATS[0]),
        Flag("log_level", str | None, ("--log-level",), f"{', '.join(LOG_LEVELS)}.",
             show_default="info with json, else warning"),
    ),
)  # fmt: skip

# Every database command takes these (commands that write add ROLLOUT; those that apply migrations, GATE).
FLEET = (DATABASES, SELECTION, BUDGETS, SESSION, OUTPUTS)


@dataclass
class Flags:
    """What was typed for a command's groups; `given` holds the flags set on the command line."""

    values: dict[str, Any]
    given: set[str] = field(default_factory=set)

    def request(self, command: Command, **specific: Any) -> Request:
        """The settings groups from the flags. Raises UsageError (exit 2) on a value that does not parse."""
        from ..job import Request

        v = self.values
        database_url, registry = self._target()
        return Request(
            command=command,
            migrations=tuple(v["migrations"] or (DEFAULT_MIGRATIONS,)),
            database_url=database_url,
            registry=registry,
            selection=Selection(
                ids=tuple(v.get("tenant") or ()),
                tags=tuple(v.get("tag") or ()),
                exclude=tuple(v.get("exclude") or ()),
                exclude_tags=tuple(v.get("exclude_tag") or ()),
                shard=parse_shard(v["shard"]) if v.get("shard") else None,
                resume=v.get("resume"),
            ),
            # A group a command does not take: its settings' defaults (e.g. no rollout group: no waves).
            budgets=Budgets(
                concurrency=v.get("concurrency", _budgets.concurrency),
                retries=v.get("retries", _budgets.retries),
                server_down_after=v.get("server_down_after", _budgets.server_down_after),
                canary=v.get("canary", _budgets.canary),
                max_failures=FailureBudget.parse(v.get("max_failures")),
                grace=parse_duration(v.get("grace", _budgets.grace), "--grace"),
            ),
            school=self.school_settings(),
            outputs=Outputs(
                report=v.get("report", _outputs.report),
                junit=v.get("junit", _outputs.junit),
                json=v.get("json_out", _outputs.json),
                progress=not v.get("no_progress", not _outputs.progress),
                quiet=v.get("quiet", _outputs.quiet),
                metrics=v.get("metrics", _outputs.metrics),
                pushgateway=v.get("pushgateway", _outputs.pushgateway),
            ),
            gate=Gate(
                **{k: v[k] for k in ("allow_unsafe", "rehearse", "preflight") if k in v},
                reference_url=tuple(v.get("reference_url") or ()),
            ),
            ignore_missing=v.get("ignore_missing", False),
            handle_signals=True,
            **specific,
        )

    def school_settings(self) -> SchoolSettings:
        """The flags' layer: only what was given, so the registry's values stand where no flag was typed."""
        layer: dict[str, Any] = {}
        for name in ("connect_timeout", "lock_timeout", "statement_timeout", "lock_wait"):
            if name in self.given:
                layer[name] = parse_duration(self.values[name], "--" + name.replace("_", "-"))
        if "per_server" in self.given:
            if self.values["per_server"] < 1:
                raise UsageError("--per-server must be at least 1")
            layer["per_server"] = self.values["per_server"]
        extensions = self._extensions()
        if extensions is not None:
            layer["extensions"] = extensions
        if "template" in self.given:
            from ..registry import check_template_name  # the registry's machinery: only when the flag is typed

            check_template_name(self.values["template"], "--template")
            layer["template"] = self.values["template"]
        return SchoolSettings(**layer)

    def _extensions(self) -> tuple[str, ...] | None:
        """--extension NAME... or --no-extensions (a value: none), or None when neither was typed."""
        named, none = self.values.get("extension") or [], self.values.get("no_extensions", False)
        if named and none:
            raise UsageError("--extension and --no-extensions contradict each other", hint="give one or the other")
        if any(not name.strip() or not name.isprintable() for name in named):
            raise UsageError("--extension needs an extension's name, e.g. --extension uuid-ossp")
        return tuple(dict.fromkeys(named)) if named else (() if none else None)

    def fleet_target(self) -> tuple[str | None, Path]:
        """One database's URL (or None) and the registry, read as every database command reads them."""
        return self._target()

    def _target(self) -> tuple[str | None, Path]:
        """-D URL, or `-D -` for $DATABASE_URL; else the registry. An exported DATABASE_URL is used only when asked
        for: it is sqlx's habit, and quietly taking it (or quietly not) would pick one database or the whole fleet
        behind the operator's back. So the default registry, taken while it is set, says so once."""
        url, registry = self.values["database_url"], self.values["registry"]
        if url is not None and "registry" in self.given:
            raise UsageError("give either -D URL or --registry PATH, not both")
        exported = os.environ.get("DATABASE_URL")
        if url == "-":
            if not exported:
                raise UsageError(
                    "-D - takes the database's URL from $DATABASE_URL, which is not set",
                    hint="export DATABASE_URL=postgres://user@host/db first, or give the URL itself: -D URL",
                )
            return exported, registry
        if url is None and exported and "registry" not in self.given:
            from ..logsetup import get_logger

            get_logger("orchestrator.cli").warning(
                "database_url.ignored",
                message=f"DATABASE_URL is set but ignored: the registry {registry} is used; pass -D - to use it",
            )
        return url, registry


Body = Callable[..., None]  # body(flags: Flags, **its own options)


def command(app: typer.Typer, *groups: Group, name: str | None = None) -> Callable[[Body], Body]:
    """Register `body(flags, **own_options)` as a command taking its own options, every flag of `groups`, and the
    global logging flags (accepted after the command as well as before it)."""

    def decorate(body: Body) -> Body:
        summary, _, details = inspect.cleandoc(body.__doc__ or "").partition("\n\n")
        help_text = " ".join(summary.split()) + (f"\n\n{details}" if details else "")  # one line in command lists
        app.command(name or body.__name__.replace("_", "-"), help=help_text)(with_flags(body, (*groups, LOGGING)))
        return body

    return decorate


def with_flags(body: Body, groups: tuple[Group, ...]) -> Callable[..., None]:
    """A typer callable whose signature is body's own options plus the groups' flags (logging applied first)."""
    own = list(inspect.signature(body, eval_str=True).parameters.values())[1:]
    own_names = {p.name for p in own}
    added = [f.parameter(g.panel) for g in groups for f in g.flags]
    context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)

    @functools.wraps(body)
    def wrapper(ctx: typer.Context, **kwargs: Any) -> None:
        flag_values = {k: v for k, v in kwargs.items() if k not in own_names}
        flags = Flags(flag_values, {k for k in flag_values if _typed(ctx, k)})
        if ctx.parent is not None and flags.given & {"log_format", "log_level"}:
            apply_flags_logging(flags)  # given after the command: overrides what the main callback set
        body(flags, **{k: v for k, v in kwargs.items() if k in own_names})

    wrapper.__signature__ = inspect.Signature([context, *own, *added])  # type: ignore[attr-defined]
    return wrapper


_UNSET_SOURCES = ("DEFAULT", "DEFAULT_MAP")  # click's ParameterSource names for "not typed"


def _typed(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in _UNSET_SOURCES


def fail_usage(error: InvalidInput) -> NoReturn:
    from .render import fail_usage as render_and_exit  # rich, only when there is something to say

    render_and_exit(error)


def apply_flags_logging(flags: Flags) -> None:
    try:
        apply_logging(flags.values["log_format"], flags.values["log_level"])
    except InvalidInput as error:
        fail_usage(error)


def apply_logging(log_format: str, log_level: str | None) -> None:
    if log_format not in LOG_FORMATS:
        raise UsageError(
            f"--log-format {log_format!r} is not {' or '.join(LOG_FORMATS)}", hint="e.g. --log-format json"
        )
    level = log_level or ("info" if log_format == "json" else "warning")
    if level not in LOG_LEVELS:
        configure_logging(log_format, "info")  # the refusal itself in the format asked for
        raise UsageError(f"--log-level {level!r} is not one of {', '.join(LOG_LEVELS)}", hint="e.g. --log-level debug")
    configure_logging(log_format, level)
