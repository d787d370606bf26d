"""A request (one command with its option groups, from the command line or the Python API) and the job it
becomes once every input is loaded and checked: migrations, registry, selection, the safety gate's findings.

`prepare()` raises InvalidInput (exit code 2) before any connection is made. The job then answers, for each
school, which settings it runs with: `settings.resolve()` applied to the request's flags, the tenant's entry and
the registry's `defaults:`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .command import Command
from .connection import SessionSettings
from .engine import EngineOptions, check_target_version
from .errors import UsageError, some
from .fleet import FleetOptions, plan_waves
from .outcome import Status
from .registry import Tenant, check_template_name, load_registry, select, single_tenant
from .report import PreviousRun, read_previous_run
from .settings import (
    DEFAULT_MIGRATIONS,
    DEFAULT_REGISTRY,
    DEFAULT_SPARES,
    EMPTY,
    Budgets,
    Gate,
    Outputs,
    Resolved,
    SchoolSettings,
    Selection,
    configured,
    resolve,
)
from .source import MigrationSource, load_migrations
from .target import DatabaseTarget

if TYPE_CHECKING:
    from .lint import LintReport


@dataclass(frozen=True)
class Request:
    """One command and every option it was given. Each group's defaults are the settings module's."""

    command: Command
    # One directory, or several forming one source over one ledger (a Path or str is taken as one directory).
    migrations: tuple[Path, ...] = (DEFAULT_MIGRATIONS,)
    database_url: str | None = None  # one database (-D); otherwise the registry's schools
    registry: Path = DEFAULT_REGISTRY
    selection: Selection = field(default_factory=Selection)
    budgets: Budgets = field(default_factory=Budgets)
    school: SchoolSettings = EMPTY  # the flags' layer of per-school settings
    outputs: Outputs = field(default_factory=Outputs)
    gate: Gate = field(default_factory=Gate)
    target_version: int | None = None  # migrate/plan: up to and including this version
    revert_to: int | None = None  # revert: down to this version (0 = everything)
    dry_run: bool = False  # revert: only show which down files would run where (read-only)
    ignore_missing: bool = False  # accept applied versions whose files are gone (sqlx --ignore-missing)
    create_missing: bool = False  # migrate: create and bootstrap a school's database when it does not exist
    audit_schema: bool = True  # audit: compare live schemas with what the migrations produce
    resolve: tuple[str, int] | None = None  # resolve: ("applied" | "not_applied" | "restamp", version)
    # resolve --applied: also record the version on schools with no row for it whose live schema is what their
    # applied files and it produce (its SQL was run by hand)
    schema_evidence: bool = False
    # resolve --restamp, on schools named with --tenant (or -D): even when the file holds statements whose effect
    # the schema comparison cannot see (audit/coverage.py)
    allow_unverified: bool = False
    spares: int = DEFAULT_SPARES  # template: ready copies of the template to keep on each server
    handle_signals: bool = False  # the CLI: Ctrl-C / SIGTERM stop the run cleanly (an embedding host keeps its own)

    def __post_init__(self) -> None:
        given: Any = self.migrations  # the Python API may pass one directory as a Path or str, or a list
        directories = (given,) if isinstance(given, (str, Path)) else given
        object.__setattr__(self, "migrations", tuple(Path(d) for d in directories))

    @property
    def single(self) -> bool:
        return self.database_url is not None


@dataclass(frozen=True)
class Job:
    request: Request
    source: MigrationSource
    tenants: list[Tenant]
    defaults: SchoolSettings = EMPTY  # the registry's `defaults:` (none for -D)
    lint: LintReport | None = None  # the safety gate's findings, for commands that apply migrations
    # Over a registry: the selection left none of its schools out, whichever flags made it (a write then asks first).
    every_school: bool = False
    registry_source: DatabaseTarget | None = None  # the admin database of a `source:` registry (serve refuses it)

    @property
    def command(self) -> Command:
        return self.request.command

    @property
    def servers(self) -> list[str]:
        return sorted({t.server for t in self.tenants})

    def settings_for(self, tenant: Tenant) -> Resolved:
        return resolve(self.request.school, tenant.settings, self.defaults)

    def configured_extensions(self, tenant: Tenant) -> tuple[str, ...] | None:
        """The extensions a flag, the tenant or the registry asks for; None when only the built-in default would
        (the audit then expects no extension the fleet may never have used)."""
        extensions: tuple[str, ...] | None = configured(
            "extensions", self.request.school, tenant.settings, self.defaults
        )
        return extensions

    def extensions_origin(self, tenant: Tenant) -> str | None:
        """Where the school's extensions are configured, in words for the audit's findings (None: nowhere)."""
        layers = (
            (self.request.school, "--extension / --no-extensions"),
            (tenant.settings, f"school {tenant.id}'s extensions in the registry"),
            (self.defaults, "the registry's defaults.extensions"),
        )
        return next((f"configured by {where}" for layer, where in layers if layer.extensions is not None), None)

    def engine_options(self, tenant: Tenant) -> EngineOptions:
        return self._engine_options(self.settings_for(tenant))

    def _engine_options(self, settings: Resolved) -> EngineOptions:
        # One EngineOptions per distinct settings, not per school (a fleet has few).
        cached = self._engine_cache.get(settings)
        if cached is None:
            cached = self._engine_cache[settings] = EngineOptions(
                session=SessionSettings.of(settings),
                lock_wait=settings.lock_wait,
                extensions=settings.extensions,
                target_version=self.request.target_version,
                ignore_missing=self.request.ignore_missing,
            )
        return cached

    @property
    def scratch_options(self) -> EngineOptions:
        """For scratch databases (rehearsal, audit references): the flags over the registry's defaults."""
        return self._engine_options(resolve(self.request.school, EMPTY, self.defaults))

    def as_command(self, command: Command, **changes: object) -> Job:
        """The same schools and options for another command (e.g. the read-only plan pass before a rollout)."""
        return replace(self, request=replace(self.request, command=command, **changes), lint=None)  # type: ignore[arg-type]

    @property
    def writes(self) -> bool:
        return self.command.writes and not self.request.dry_run

    @cached_property
    def _engine_cache(self) -> dict[Resolved, EngineOptions]:
        return {}

    @cached_property
    def per_server(self) -> Mapping[str, int]:
        """Each server's session budget: the smallest `per_server` among its selected schools (a flag sets all)."""
        budgets: dict[str, int] = {}
        for tenant in self.tenants:
            n = self.settings_for(tenant).per_server
            budgets[tenant.server] = min(n, budgets.get(tenant.server, n))
        return budgets

    @cached_property
    def fleet_options(self) -> FleetOptions:
        """Read-only commands run in one wave and never halt."""
        budgets = self.request.budgets
        if not self.writes:
            budgets = replace(budgets, canary=0, max_failures=None)
        return FleetOptions(
            budgets=budgets,
            per_server=self.per_server,
            waves=self.writes,
            # A school holding other bytes of a file about to be applied: going on would split the fleet.
            halt_on=frozenset({Status.MODIFIED}) if self.command.applies_migrations else frozenset(),
            handle_signals=self.request.handle_signals,
        )

    @property
    def waves(self) -> list[tuple[str, list[Tenant]]]:
        return plan_waves(self.tenants, self.fleet_options)


def prepare(request: Request) -> Job:
    """Validate everything; raises InvalidInput (exit code 2) before any connection is made."""
    source = load_migrations(*request.migrations)
    check_target_version(source, request.target_version)
    if request.command is Command.REVERT:
        if request.revert_to is None:
            raise UsageError("revert needs --target VERSION", hint="e.g. --target 20250115000000, or 0 for all")
        check_target_version(source, request.revert_to, allow_zero=True)
    check_resolve(request, source)
    for url in request.gate.reference_url:
        DatabaseTarget.parse(url)
    if request.database_url is not None:
        if request.selection.narrows:
            raise UsageError(
                "--tenant/--tag/--exclude/--exclude-tag/--shard/--resume select schools from a registry; they do "
                "not go with -D",
                hint="drop -D to work on the registry, or drop the selection flags",
            )
        tenants, defaults, registry_source = [single_tenant(request.database_url)], EMPTY, None
        schools: Sequence[Tenant] = tenants
        every_school = False
    else:
        registry = load_registry(request.registry)
        selection = request.selection
        if selection.resume is not None:
            previous = read_previous_run(selection.resume)
            if request.command.applies_migrations:
                refuse_split(previous, source)
            selection = replace(selection, only=previous.not_ok)
        tenants, defaults, schools = select(registry, selection), registry.defaults, registry.tenants
        registry_source = registry.source
        every_school = {t.id for t in tenants} == {t.id for t in schools}
        if request.command.writes:
            tenants = direct(tenants)
    check_templates(request.school, tenants, defaults, schools)
    lint = None
    if request.command.applies_migrations:
        from . import gate  # the lint rules load only for commands that apply migrations

        lint = gate.lint_up_to(source, request.target_version)
        if not request.gate.allow_unsafe:
            gate.refuse_edits(lint)  # the rest is judged where each file would run, after a plan pass (runner)
    return Job(request, source, tenants, defaults, lint, every_school, registry_source)


def direct(tenants: Sequence[Tenant]) -> list[Tenant]:
    """Writes and SQLx's lock go to `direct_url` where one is given (not a pooler)."""
    return [replace(t, target=t.direct) if t.direct else t for t in tenants]


def for_schools(job: Job, tenants: Sequence[Tenant], schools: Sequence[Tenant], command: Command | None = None) -> Job:
    """The job's loaded source, lint and settings over other schools, for `command` (default: the job's). The
    service prepares once and makes one of these per request: the files are not read and linted again. `schools`:
    schools besides `tenants` whose database --template must not be (prepare() checked the registry's already)."""
    request = job.request if command is None else replace(job.request, command=command)
    chosen = direct(tenants) if request.command.writes else list(tenants)
    check_templates(request.school, chosen, job.defaults, schools)
    lint = job.lint if request.command.applies_migrations else None
    return Job(request, job.source, chosen, job.defaults, lint, every_school=False)


def check_resolve(request: Request, source: MigrationSource) -> None:
    """`resolve`'s action, version and the flags that go with one action only (also under --dry-run)."""
    how = request.resolve[0] if request.resolve else None
    if request.command is Command.RESOLVE and request.resolve is None:
        raise UsageError(
            "resolve needs --applied, --not-applied or --restamp VERSION",
            hint="after checking what an interrupted file left behind (the `dirty` hint says what to check)",
        )
    if request.resolve is not None:
        check_target_version(source, request.resolve[1])
    if request.schema_evidence and how != "applied":
        raise UsageError("--schema-evidence goes with --applied VERSION only")
    if request.allow_unverified:
        if how != "restamp":
            raise UsageError("--allow-unverified goes with --restamp VERSION only")
        if not request.single and not request.selection.ids:
            raise UsageError(
                "--allow-unverified re-stamps only schools named one by one: add --tenant ID for each school you "
                "checked yourself",
                hint="the schema comparison cannot see what the file's rows, privileges or comments did; check each "
                "school first, then name it with --tenant (or use -D URL for one database)",
            )


def check_templates(
    flags: SchoolSettings, tenants: list[Tenant], defaults: SchoolSettings, schools: Sequence[Tenant]
) -> None:
    """The template named by a flag or the API is a database name and no school's database, among all `schools` (the
    registry's templates are checked as it loads), and no school is its own template."""
    if flags.template is not None:
        check_template_name(flags.template, "template")
        selected = {t.id for t in tenants}  # a selected school whose database it is: "its own template", below
        for school in schools:
            if school.target.database == flags.template and school.id not in selected:
                raise UsageError(
                    f"template {flags.template} is the database of school {school.id}",
                    hint="a template is a database of the tool's own, which it builds and replaces: name another, "
                    "e.g. school_template",
                )
    for tenant in tenants:
        name = resolve(flags, tenant.settings, defaults).template_name
        if name == tenant.target.database:
            raise UsageError(
                f"school {tenant.id}: its database {name} is its own template",
                hint="a template is a database of its own (e.g. school_template), never a school's",
            )


def refuse_split(previous: PreviousRun, source: MigrationSource) -> None:
    """One file, one checksum across the fleet: never apply bytes other than the ones other schools hold."""
    risks = previous.split_risks(source)
    if not risks:
        return
    lines = []
    for m, holders in risks:
        lines.append(
            f"{m.filename}: edited since {len(holders)} school(s) of that run applied it ({some(holders, 10)})"
        )
    raise UsageError(
        f"--resume {previous.path}: applying these files to the rest would split the fleet (two versions of one "
        "migration, and SQLx workers refusing to start on the schools that hold the other):\n  " + "\n  ".join(lines),
        hint="restore each file as it was applied (`git log -p -- FILE`) and put the change in a new migration "
        "(`orchestrator new ...`); or revert those schools first (`orchestrator revert --target ...`)",
    )
