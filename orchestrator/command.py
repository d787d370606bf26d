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
    def asks_first(self) -> bool:
        """Over a registry on a terminal (or with --preflight): a read-only plan pass, then a question."""
        return self in (Command.MIGRATE, Command.REVERT, Command.RESOLVE)

    @property
    def applies_migrations(self) -> bool:
        """Runs migration files on schools: the safety gate and --rehearse apply."""
        return self in (Command.MIGRATE, Command.PROVISION)
