"""Fleet migration orchestrator for per-school PostgreSQL databases, byte-compatible with SQLx.

The Python API for in-process hooks (the admin service's provisioning hook):

    import orchestrator
    result = orchestrator.provision("postgresql://app:pw@db1:5432/school_new", migrations="migrations")
    if not result.ok:
        raise RuntimeError(result.error)

`provision` is idempotent: calling it again on a provisioned school returns status `up_to_date`.
Inside an event loop, await `provision_async` instead.
"""

from __future__ import annotations

__version__ = "0.1.0"

from pathlib import Path

from .bootstrap import DEFAULT_EXTENSIONS
from .outcome import DatabaseResult, Status

__all__ = ["DatabaseResult", "Status", "__version__", "provision", "provision_async"]


async def provision_async(
    url: str,
    *,
    migrations: str | Path = "migrations",
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS,
    lock_wait: float = 30.0,
    lock_timeout: float = 5.0,
    statement_timeout: float = 600.0,
) -> DatabaseResult:
    """Create the school's database if missing, its extensions and history table, and apply every migration.

    Bad input (a malformed URL, a bad migration file) raises `orchestrator.errors.InvalidInput` before any
    connection; everything that happens on the database is reported in the returned result, never raised.
    """
    from . import engine
    from .connection import SessionSettings
    from .source import load_migrations
    from .target import DatabaseTarget

    target = DatabaseTarget.parse(url)
    source = load_migrations(migrations)
    options = engine.EngineOptions(
        session=SessionSettings(lock_timeout=lock_timeout, statement_timeout=statement_timeout),
        lock_wait=lock_wait,
        extensions=tuple(extensions),
    )
    return await engine.provision(target, source, options)


def provision(url: str, **kwargs: object) -> DatabaseResult:
    """Blocking form of `provision_async` (same arguments), for synchronous hooks."""
    import anyio

    async def call() -> DatabaseResult:
        return await provision_async(url, **kwargs)  # type: ignore[arg-type]

    return anyio.run(call)
