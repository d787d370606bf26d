"""The database commands: migrate, plan, status, bootstrap, provision, revert (one database or a fleet)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..operations import Command
from . import (
    app,
    build_spec,
    execute,
)
from .options import (
    Canary,
    Concurrency,
    ConnectTimeout,
    DatabaseUrl,
    Excludes,
    JsonOut,
    JunitPath,
    LockTimeout,
    LockWait,
    MaxFailures,
    MigrationsDir,
    NoProgress,
    PerServer,
    RegistryPath,
    ReportPath,
    Resume,
    Retries,
    Shard,
    StatementTimeout,
    Tags,
    Tenants,
)

TargetVersion = Annotated[int | None, typer.Option("--target", help="Apply up to and including this version.")]
AllowUnsafe = Annotated[
    bool,
    typer.Option("--allow-unsafe", help="Let the safety gate's lint errors through (the report records it)."),
]
Rehearse = Annotated[
    bool,
    typer.Option("--rehearse", help="First apply, revert and re-apply the pending files on a scratch database at "
                 "the fleet's current version(s); stop before any school if that fails."),
]  # fmt: skip
Preflight = Annotated[
    bool,
    typer.Option("--preflight", help="First a read-only plan pass: the fleet's version histogram and what would run "
                 "where, before anything is written. On a terminal, then ask. [default: on when interactive]"),
]  # fmt: skip
AssumeYes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before applying (after --preflight).")]
IgnoreMissing = Annotated[
    bool,
    typer.Option("--ignore-missing", help="Accept applied versions whose files are gone (as sqlx --ignore-missing)."),
]
ReferenceUrl = Annotated[
    str | None,
    typer.Option("--reference-url", help="Server for scratch databases (needs CREATEDB). "
                 "[default: the first reachable school's server]", show_default=False),
]  # fmt: skip


@app.command()
def migrate(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    target: TargetVersion = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would be applied (same as plan).")] = False,
    allow_unsafe: AllowUnsafe = False,
    rehearse: Rehearse = False,
    reference_url: ReferenceUrl = None,
    ignore_missing: IgnoreMissing = False,
    preflight: Preflight = False,
    yes: AssumeYes = False,
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    resume: Resume = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    canary: Canary = 0,
    max_failures: MaxFailures = None,
    retries: Retries = 2,
    lock_timeout: LockTimeout = None,
    statement_timeout: StatementTimeout = None,
    lock_wait: LockWait = None,
    connect_timeout: ConnectTimeout = None,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
    no_progress: NoProgress = False,
) -> None:
    """Apply pending migrations: canary wave first, then the rest, within the budgets."""
    execute(
        lambda: build_spec(
            Command.PLAN if dry_run else Command.MIGRATE,
            database_url=database_url, registry=registry, migrations=migrations, tenant=tenant, tag=tag,
            exclude=exclude, shard=shard, resume=resume, concurrency=concurrency, per_server=per_server,
            canary=canary, max_failures=max_failures, retries=retries, lock_timeout=lock_timeout,
            statement_timeout=statement_timeout, lock_wait=lock_wait, connect_timeout=connect_timeout,
            target_version=target, allow_unsafe=allow_unsafe, rehearse=rehearse, reference_url=reference_url,
            ignore_missing=ignore_missing,
        ),
        json_out=json_out, report_path=report, junit_path=junit, no_progress=no_progress,
        preflight=preflight, assume_yes=yes,
    )  # fmt: skip


@app.command()
def plan(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    target: TargetVersion = None,
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    retries: Retries = 2,
    connect_timeout: ConnectTimeout = None,
    json_out: JsonOut = False,
    report: ReportPath = None,
    no_progress: NoProgress = False,
) -> None:
    """Show what migrate would apply where. Read-only: writes nothing, takes no lock."""
    execute(
        lambda: build_spec(
            Command.PLAN, database_url=database_url, registry=registry, migrations=migrations, tenant=tenant,
            tag=tag, exclude=exclude, shard=shard, concurrency=concurrency, per_server=per_server,
            retries=retries, connect_timeout=connect_timeout, target_version=target,
        ),
        json_out=json_out, report_path=report, junit_path=None, no_progress=no_progress,
    )  # fmt: skip


@app.command()
def status(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    retries: Retries = 2,
    connect_timeout: ConnectTimeout = None,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
    no_progress: NoProgress = False,
) -> None:
    """Where each school stands: a version histogram, then up to date / N pending / dirty / modified / missing /
    unreachable per school. Read-only."""
    execute(
        lambda: build_spec(
            Command.STATUS, database_url=database_url, registry=registry, migrations=migrations, tenant=tenant,
            tag=tag, exclude=exclude, shard=shard, concurrency=concurrency, per_server=per_server,
            retries=retries, connect_timeout=connect_timeout,
        ),
        json_out=json_out, report_path=report, junit_path=junit, no_progress=no_progress,
    )  # fmt: skip


@app.command()
def bootstrap(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    retries: Retries = 2,
    lock_wait: LockWait = None,
    connect_timeout: ConnectTimeout = None,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
    no_progress: NoProgress = False,
) -> None:
    """Create what is missing (database, extensions, history table) without applying migrations."""
    execute(
        lambda: build_spec(
            Command.BOOTSTRAP, database_url=database_url, registry=registry, migrations=migrations,
            tenant=tenant, tag=tag, exclude=exclude, shard=shard, concurrency=concurrency, per_server=per_server,
            retries=retries, lock_wait=lock_wait, connect_timeout=connect_timeout,
        ),
        json_out=json_out, report_path=report, junit_path=junit, no_progress=no_progress,
    )  # fmt: skip


@app.command()
def provision(
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    tenant: Tenants = None,
    allow_unsafe: AllowUnsafe = False,
    lock_timeout: LockTimeout = None,
    statement_timeout: StatementTimeout = None,
    lock_wait: LockWait = None,
    connect_timeout: ConnectTimeout = None,
    retries: Retries = 2,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
) -> None:
    """Onboard a school in one idempotent call: create its database if missing, extensions, history table, then
    apply every migration. -D URL, or --tenant ID from the registry."""
    execute(
        lambda: build_spec(
            Command.PROVISION, database_url=database_url, registry=registry, migrations=migrations,
            tenant=tenant, lock_timeout=lock_timeout, statement_timeout=statement_timeout, lock_wait=lock_wait,
            connect_timeout=connect_timeout, retries=retries, allow_unsafe=allow_unsafe,
        ),
        json_out=json_out, report_path=report, junit_path=junit, no_progress=True,
    )  # fmt: skip


@app.command()
def revert(
    target: Annotated[int, typer.Option("--target", help="Revert down to this version (0 = everything).")],
    database_url: DatabaseUrl = None,
    registry: RegistryPath = None,
    migrations: MigrationsDir = Path("migrations"),
    tenant: Tenants = None,
    tag: Tags = None,
    exclude: Excludes = None,
    shard: Shard = None,
    resume: Resume = None,
    concurrency: Concurrency = 8,
    per_server: PerServer = None,
    canary: Canary = 0,
    max_failures: MaxFailures = None,
    retries: Retries = 2,
    lock_timeout: LockTimeout = None,
    statement_timeout: StatementTimeout = None,
    lock_wait: LockWait = None,
    connect_timeout: ConnectTimeout = None,
    json_out: JsonOut = False,
    report: ReportPath = None,
    junit: JunitPath = None,
    no_progress: NoProgress = False,
) -> None:
    """Run down files, newest first, until each school's newest applied version is --target."""
    execute(
        lambda: build_spec(
            Command.REVERT, database_url=database_url, registry=registry, migrations=migrations, tenant=tenant,
            tag=tag, exclude=exclude, shard=shard, resume=resume, concurrency=concurrency, per_server=per_server,
            canary=canary, max_failures=max_failures, retries=retries, lock_timeout=lock_timeout,
            statement_timeout=statement_timeout, lock_wait=lock_wait, connect_timeout=connect_timeout,
            revert_to=target,
        ),
        json_out=json_out, report_path=report, junit_path=junit, no_progress=no_progress,
    )  # fmt: skip
