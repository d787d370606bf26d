"""From a validated request to a report: load and check every input first (nothing touched on bad input), then
run the fleet. The CLI and the Python API both go through here; neither holds logic of its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from . import gate
from .engine import EngineOptions, check_target_version
from .errors import UsageError
from .fleet import FleetOptions, Observer, plan_waves, run_fleet, skipped_run
from .lint import LintReport
from .lint.render import editor_line
from .operations import Command, Overrides, make_work
from .registry import Registry, Selection, Tenant, load_registry, select, single_tenant
from .rehearsal import rehearse
from .report import RunReport, not_ok_ids
from .source import MigrationSource, load_migrations
from .target import DatabaseTarget


@dataclass(frozen=True)
class JobSpec:
    command: Command
    migrations_dir: Path = Path("migrations")
    database_url: str | None = None  # one database (-D); otherwise the registry
    registry_path: Path = Path("tenants.yaml")
    selection: Selection = field(default_factory=Selection)
    resume_from: Path | None = None
    engine: EngineOptions = field(default_factory=EngineOptions)
    overrides: Overrides = field(default_factory=Overrides)
    fleet: FleetOptions = field(default_factory=FleetOptions)
    per_server: int | None = None  # --per-server; None = the registry's `defaults.per_server`, else 4
    revert_to: int | None = None
    allow_unsafe: bool = False  # let the safety gate's errors through (recorded in the report)
    rehearse: bool = False  # try the rollout on a scratch database first
    reference_url: str | None = None  # server for scratch databases (rehearsal)


@dataclass(frozen=True)
class Job:
    spec: JobSpec
    source: MigrationSource
    tenants: list[Tenant]
    registry: Registry | None
    lint: LintReport | None = None  # the safety gate's findings, for commands that apply migrations

    @property
    def servers(self) -> list[str]:
        return sorted({t.server for t in self.tenants})

    @property
    def waves(self) -> list[tuple[str, list[Tenant]]]:
        return plan_waves(self.tenants, fleet_options(self))


def prepare(spec: JobSpec) -> Job:
    """Validate everything; raises InvalidInput (exit code 2) before any connection is made."""
    source = load_migrations(spec.migrations_dir)
    check_target_version(source, spec.engine.target_version)
    if spec.command is Command.REVERT:
        if spec.revert_to is None:
            raise UsageError("revert needs --target VERSION", hint="e.g. --target 20250115000000, or 0 for all")
        check_target_version(source, spec.revert_to, allow_zero=True)
    registry = None
    if spec.database_url is not None:
        if spec.selection != Selection() or spec.resume_from:
            raise UsageError(
                "--tenant/--tag/--exclude/--shard/--resume select schools from a registry; they do not go with -D",
                hint="drop -D to work on the registry, or drop the selection flags",
            )
        tenants = [single_tenant(spec.database_url)]
    else:
        registry = load_registry(spec.registry_path)
        selection = spec.selection
        if spec.resume_from is not None:
            selection = Selection(
                selection.ids, selection.tags, selection.exclude, selection.shard, not_ok_ids(spec.resume_from)
            )
        tenants = select(registry, selection)
    if spec.reference_url is not None:
        DatabaseTarget.parse(spec.reference_url)
    lint = None
    if spec.command in (Command.MIGRATE, Command.PROVISION):
        lint = gate.check(source, spec.engine.target_version, allow_unsafe=spec.allow_unsafe)
    return Job(spec, source, tenants, registry, lint)


def fleet_options(job: Job) -> FleetOptions:
    """The spec's fleet options, with the registry's per_server when no flag gave one; read-only commands run in
    one wave and never halt."""
    options = job.spec.fleet
    if job.spec.per_server is None and job.registry is not None and job.registry.per_server:
        options = replace(options, per_server=job.registry.per_server)
    elif job.spec.per_server is not None:
        options = replace(options, per_server=job.spec.per_server)
    if not job.spec.command.writes:
        options = replace(options, waves=False, max_failures=None)
    return options


async def run(job: Job, observer: Observer | None = None) -> RunReport:
    spec = job.spec
    rehearsal = None
    if spec.rehearse and spec.command is Command.MIGRATE:
        rehearsal = await rehearse(
            job.tenants, job.source, spec.engine, spec.overrides, fleet_options(job), spec.reference_url
        )
    if rehearsal is not None and not rehearsal.ok:
        fleet_run = skipped_run(job.tenants, f"rehearsal failed, no school was touched: {rehearsal.error}", observer)
    else:
        work = make_work(spec.command, job.source, spec.engine, spec.overrides, revert_to=spec.revert_to)
        fleet_run = await run_fleet(job.tenants, work, fleet_options(job), observer)
    return RunReport(
        command=spec.command.value,
        run=fleet_run,
        migrations_dir=str(spec.migrations_dir),
        latest_version=job.source.latest,
        options={
            "concurrency": spec.fleet.concurrency,
            "per_server": fleet_options(job).per_server,
            "max_failures": str(spec.fleet.max_failures) if spec.fleet.max_failures else None,
            "target_version": spec.engine.target_version,
            "revert_to": spec.revert_to,
            "resume_from": str(spec.resume_from) if spec.resume_from else None,
            "allow_unsafe": spec.allow_unsafe,
            "unsafe_findings": [editor_line(f) for f in job.lint.errors] if job.lint else [],
            "rehearsed": rehearsal is not None,
        },
        rehearsal=rehearsal.lines + ([rehearsal.error] if rehearsal.error else []) if rehearsal else None,
    )


async def plan_first(job: Job, observer: Observer | None = None) -> RunReport:
    """The read-only plan pass a `migrate` job makes before writing (--preflight): same schools, same options."""
    return await run(replace(job, spec=replace(job.spec, command=Command.PLAN), lint=None), observer)
