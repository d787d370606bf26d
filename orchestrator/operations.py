"""The per-school work of each fleet command: which engine call, with which options for that school.

Option precedence, lowest first: built-in defaults < registry `defaults:` < the tenant's own entry < command-line
flags (flags left unset are None in `Overrides`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum

from . import engine
from .connection import SessionSettings
from .engine import EngineOptions
from .fleet import Work
from .outcome import DatabaseResult
from .registry import Tenant
from .source import MigrationSource


class Command(StrEnum):
    MIGRATE = "migrate"
    PLAN = "plan"
    STATUS = "status"
    BOOTSTRAP = "bootstrap"
    PROVISION = "provision"
    REVERT = "revert"

    @property
    def writes(self) -> bool:
        return self not in (Command.PLAN, Command.STATUS)


@dataclass(frozen=True)
class Overrides:
    """Command-line values; None = not given, use the registry's or the default."""

    lock_timeout: float | None = None
    statement_timeout: float | None = None
    lock_wait: float | None = None
    connect_timeout: float | None = None
    extensions: tuple[str, ...] | None = None


def options_for(tenant: Tenant, base: EngineOptions, overrides: Overrides) -> EngineOptions:
    def pick(name: str, default: float) -> float:
        flag = getattr(overrides, name)
        if flag is not None:
            return float(flag)
        own = getattr(tenant.settings, name)
        return float(own) if own is not None else default

    session = SessionSettings(
        connect_timeout=pick("connect_timeout", base.session.connect_timeout),
        lock_timeout=pick("lock_timeout", base.session.lock_timeout),
        statement_timeout=pick("statement_timeout", base.session.statement_timeout),
    )
    extensions = overrides.extensions or tenant.settings.extensions or base.extensions
    return replace(base, session=session, lock_wait=pick("lock_wait", base.lock_wait), extensions=extensions)


def make_work(
    command: Command,
    source: MigrationSource,
    base: EngineOptions,
    overrides: Overrides,
    *,
    revert_to: int | None = None,
) -> Work:
    async def work(tenant: Tenant) -> DatabaseResult:
        options = options_for(tenant, base, overrides)
        match command:
            case Command.MIGRATE:
                return await engine.migrate(tenant.target, source, options)
            case Command.PLAN:
                return await engine.plan(tenant.target, source, options)
            case Command.STATUS:
                return await engine.status(tenant.target, source, options)
            case Command.BOOTSTRAP:
                return await engine.bootstrap(tenant.target, source, options)
            case Command.PROVISION:
                return await engine.provision(tenant.target, source, options)
            case Command.REVERT:
                assert revert_to is not None
                return await engine.revert(tenant.target, source, revert_to, options)

    return work
