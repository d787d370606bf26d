"""The options every database command shares (typer `Annotated` types), defined once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

DatabaseUrl = Annotated[
    str | None,
    typer.Option(
        "-D",
        "--database-url",
        help="One database. Default: $DATABASE_URL when --registry is not given.",
        show_default=False,
    ),
]
RegistryPath = Annotated[
    Path | None, typer.Option("--registry", help="Tenant registry. [default: tenants.yaml]", show_default=False)
]
MigrationsDir = Annotated[Path, typer.Option("--migrations", help="Directory of SQLx migration files.")]
Tenants = Annotated[list[str] | None, typer.Option("--tenant", help="Only this school (repeatable).")]
Tags = Annotated[list[str] | None, typer.Option("--tag", help="Only schools with this tag (repeatable).")]
Excludes = Annotated[list[str] | None, typer.Option("--exclude", help="Leave this school out (repeatable).")]
Shard = Annotated[str | None, typer.Option("--shard", help="I/N: this process's share of the fleet (0 <= I < N).")]
Resume = Annotated[
    Path | None, typer.Option("--resume", help="Only the schools that did not end ok in this earlier --report.")
]
Concurrency = Annotated[int, typer.Option("--concurrency", "-j", help="Schools worked on at once, in total.")]
PerServer = Annotated[
    int | None,
    typer.Option(
        "--per-server", help="Sessions at once per database server. [default: registry's, else 4]", show_default=False
    ),
]
Canary = Annotated[
    int, typer.Option("--canary", help="Without schools tagged `canary`: the first N schools go first, alone.")
]
MaxFailures = Annotated[
    str | None,
    typer.Option("--max-failures", help="Stop starting schools after N failures (or P%); the rest are skipped."),
]
Retries = Annotated[int, typer.Option("--retries", help="Extra attempts for transient failures, with backoff.")]
LockTimeout = Annotated[
    str | None,
    typer.Option("--lock-timeout", help="Per-session lock_timeout, e.g. 5s. [default: 5s]", show_default=False),
]
StatementTimeout = Annotated[
    str | None,
    typer.Option(
        "--statement-timeout", help="Per-session statement_timeout, e.g. 10m. [default: 10m]", show_default=False
    ),
]
LockWait = Annotated[
    str | None,
    typer.Option(
        "--lock-wait",
        help="How long to wait for SQLx's migration lock before `locked`. [default: 30s]",
        show_default=False,
    ),
]
ConnectTimeout = Annotated[str | None, typer.Option("--connect-timeout", help="[default: 10s]", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print the JSON report on stdout (human output to stderr).")]
ReportPath = Annotated[Path | None, typer.Option("--report", help="Write the JSON report here.")]
JunitPath = Annotated[Path | None, typer.Option("--junit", help="Write a JUnit XML report here (one case per school).")]
NoProgress = Annotated[bool, typer.Option("--no-progress", help="No progress bar or per-school lines.")]
