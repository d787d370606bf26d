"""Fleet migration orchestrator for per-school PostgreSQL databases, byte-compatible with SQLx.

The Python API for in-process hooks (the admin service's provisioning hook):

    import orchestrator
    result = orchestrator.provision("postgresql://app:pw@db1:5432/school_new", migrations="migrations")
    if not result.ok:
        raise RuntimeError(result.error)

`provision` is idempotent: calling it again on a provisioned school returns status `up_to_date`. Its keyword
arguments are the per-school settings of `orchestrator.settings.SchoolSettings` (`lock_timeout=5.0`, seconds;
`extensions=()`, ...), with the command line's precedence: what you pass wins, the built-in default otherwise.

Any command over a registry or one database: build a `Request` (the same value the command line builds) and
`run` it; the result is the report the CLI renders (`orchestrator.report.RunReport`, or the audit's report).

    report = orchestrator.run(orchestrator.Request(orchestrator.Command.STATUS, registry=Path("tenants.yaml")))

The Request's option groups are exported too: `orchestrator.Selection`, `Budgets`, `SchoolSettings`, `Outputs`,
`Gate` (what the command line's panels build).

`migrations` (of `provision` and of a `Request`) is one directory or several sharing one ledger (an application's
main directory and its deferred one): `migrations=("migrations", "deferred")`; with `Request(...,
ignore_missing=True)` applied versions with no file in them are not an error, as with `sqlx --ignore-missing`.

A call is its own confirmation: nothing is asked (the command line asks, or wants --yes). A rollout over a registry
(migrate, revert, resolve, provision) still makes its read-only plan pass first and raises `UsageError` before any
write when a file differs from the bytes some schools applied (a split fleet; `Gate(preflight=False)` skips the pass),
and so does an onboarding whose files differ from what its template holds.

With a template, `orchestrator template --spares N` keeps ready copies of it (spares) that an onboarding takes by
a rename. A hook can top them up itself after an onboarding, off its request path (e.g. in a background task):

    orchestrator.run(orchestrator.Request(orchestrator.Command.TEMPLATE, database_url=url,
                                          school=orchestrator.SchoolSettings(template="school_template"), spares=4))

Inside an event loop, await `provision_async` / `run_async` instead. Bad input (a malformed URL or registry, a bad
migration file) raises `orchestrator.errors.InvalidInput` before any connection, and the refusals above raise it
before any write; everything that happens on a database is reported in the result, never raised.
"""

from __future__ import annotations

__version__ = "0.1.0"

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .command import Command
from .outcome import DatabaseResult, Status
from .settings import Budgets, Gate, Outputs, SchoolSettings, Selection

if TYPE_CHECKING:
    from .job import Request
    from .runner import Report

__all__ = [
    "Budgets",
    "Command",
    "DatabaseResult",
    "Gate",
    "Outputs",
    "Request",
    "SchoolSettings",
    "Selection",
    "Status",
    "__version__",
    "provision",
    "provision_async",
    "run",
    "run_async",
]


def __getattr__(name: str) -> Any:
    # `Request` pulls in the job machinery: loaded on first use, so `orchestrator --version` stays quick.
    if name == "Request":
        from .job import Request

        return Request
    raise AttributeError(f"module 'orchestrator' has no attribute {name!r}")


async def run_async(request: Request) -> Report:
    """Validate the request (InvalidInput on bad input), then run it over its schools."""
    from .job import prepare
    from .runner import run_any

    return await run_any(prepare(request))


def run(request: Request) -> Report:
    """Blocking form of `run_async`."""
    from . import eventloop

    return eventloop.run(run_async, request)


async def provision_async(
    url: str,
    *,
    migrations: str | Path | Sequence[str | Path] = "migrations",
    allow_unsafe: bool = False,
    **settings: Any,
) -> DatabaseResult:
    """Create the school's database if missing, its extensions and history table, and apply every migration (of
    one directory, or of several sharing one ledger)."""
    from .job import Request
    from .settings import Gate, SchoolSettings

    directories = (migrations,) if isinstance(migrations, (str, Path)) else tuple(migrations)
    request = Request(
        Command.PROVISION,
        migrations=tuple(Path(d) for d in directories),
        database_url=url,
        school=SchoolSettings(**settings),
        gate=Gate(allow_unsafe=allow_unsafe),
    )
    report = await run_async(request)
    return report.outcomes[0].result  # type: ignore[union-attr]


def provision(url: str, **kwargs: Any) -> DatabaseResult:
    """Blocking form of `provision_async` (same arguments), for synchronous hooks."""
    from . import eventloop

    async def call() -> DatabaseResult:
        return await provision_async(url, **kwargs)

    return eventloop.run(call)
