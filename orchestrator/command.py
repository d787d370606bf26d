"""The commands the tool runs over databases: a plain value, cheap to import (the CLI's start-up needs it)."""

from __future__ import annotations

from enum import StrEnum


class Command(StrEnum):
    MIGRATE = "migrate"
    PLAN = "plan"
    STATUS = "status"
    BOOTSTRAP = "bootstrap"
    PROVISION = "provision"
    REVERT = "revert"
    AUDIT = "audit"
    RESOLVE = "resolve"
    TEMPLATE = "template"  # build or refresh each server's template and keep its spares (templates, not schools)

    @property
    def writes(self) -> bool:
        return self not in (Command.PLAN, Command.STATUS, Command.AUDIT)

    @property
    def plans_first(self) -> bool:
        """Over a registry: a read-only plan pass before writing, refusing a split fleet (unless --no-preflight); the
        work it finds is then confirmed (a question on a terminal, else --yes)."""
        return self in (Command.MIGRATE, Command.REVERT, Command.RESOLVE, Command.PROVISION)

    @property
    def applies_migrations(self) -> bool:
        """Runs migration files on schools: the safety gate and --rehearse apply."""
        return self in (Command.MIGRATE, Command.PROVISION)
