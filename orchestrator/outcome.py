"""What happened to one database: a value, never an exception.

`Status` is the fixed, documented set (docs/statuses.md); `DatabaseResult` is what every command returns per
database and what the reports serialise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .errors import DatabaseError, MigrationFailed


class Status(StrEnum):
    APPLIED = "applied"  # migrations (or a bootstrap step) were applied; the database is at its target
    UP_TO_DATE = "up_to_date"  # nothing to do
    PENDING = "pending"  # status/audit only: migrations are waiting to be applied
    PLANNED = "planned"  # dry run: these migrations would be applied / reverted
    REVERTED = "reverted"  # down files ran
    FAILED = "failed"  # a migration or bootstrap step failed; its transaction rolled back
    LOCKED = "locked"  # another migrator held the SQLx lock longer than --lock-wait
    UNREACHABLE = "unreachable"  # no connection (server down, no answer, no free slot)
    NO_DATABASE = "no_database"  # the server is up, the school's database does not exist (new, or lost)
    DENIED = "denied"  # the login was refused (28P01, 28000) or the role lacks a privilege (42501); not retried
    POOLED = "pooled"  # refused: the URL leads through a transaction-mode pooler; SQLx's lock is meaningless there
    DIRTY = "dirty"  # a history row says success = false
    MODIFIED = "modified"  # an applied file's checksum changed
    MISSING = "missing"  # an applied version has no file
    SKIPPED = "skipped"  # fleet: not attempted (failure budget, interrupted, canary failed); resolve: left alone
    DRIFT = "drift"  # audit only: findings (history, extensions, a live schema unlike what the migrations make)
    UNREADABLE = "unreadable"  # audit only: connected, but the school could not be read (lock, grant, timeout)
    # audit only: read, but its expected schema could not be built (no CREATEDB where references are built, no server
    # of its version, its files failing in a scratch database), so its schema was not compared: not drift, not clean
    NO_REFERENCE = "no_reference"

    @property
    def ok(self) -> bool:
        return self in _OK


_OK = frozenset({Status.APPLIED, Status.UP_TO_DATE, Status.PLANNED, Status.REVERTED, Status.PENDING})

_ERROR_STATUS: dict[str, Status] = {
    "locked": Status.LOCKED,
    "unreachable": Status.UNREACHABLE,
    "database_missing": Status.NO_DATABASE,
    "transaction_pooler": Status.POOLED,
    "dirty": Status.DIRTY,
    "modified": Status.MODIFIED,
    "missing": Status.MISSING,
    "permission_denied": Status.DENIED,
    "auth_failed": Status.DENIED,
}
_INSUFFICIENT_PRIVILEGE = "42501"


def status_for(error: DatabaseError) -> Status:
    if isinstance(error, MigrationFailed) and error.sqlstate == _INSUFFICIENT_PRIVILEGE:
        return Status.DENIED  # a file (or its history row) needed a privilege the role lacks: not the SQL's fault
    return _ERROR_STATUS.get(error.code, Status.FAILED)


@dataclass(frozen=True, slots=True)
class MigrationStep:
    """One migration applied, reverted or planned on one database."""

    version: int
    description: str
    direction: str  # "up" | "down"
    duration_s: float | None = None  # None for a planned step

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "description": self.description,
            "direction": self.direction,
            "duration_s": None if self.duration_s is None else round(self.duration_s, 6),
        }


@dataclass(slots=True)
class DatabaseResult:
    """The outcome for one database."""

    database: str  # the database name
    server: str  # host:port (never a password)
    status: Status
    version_before: int | None = None
    version_after: int | None = None
    steps: list[MigrationStep] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    error: DatabaseError | None = None
    duration_s: float = 0.0
    notes: list[str] = field(default_factory=list)
    created_database: bool = False
    attempts: int = 1
    # plan: no ledger rows and no tables of its own, a new school (the safety gate's busy-table rules do not apply)
    new_school: bool = False

    @property
    def ok(self) -> bool:
        # `skipped` without an attempt (failure budget, canary, interrupt) is not ok: --resume picks the school up.
        # `skipped` after the school was read (resolve: nothing to resolve there, no write) is: nothing is wrong.
        return self.status.ok or (self.status is Status.SKIPPED and self.attempts > 0)

    @property
    def applied_versions(self) -> list[int]:
        return [s.version for s in self.steps if s.direction == "up" and s.duration_s is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "server": self.server,
            "status": self.status.value,
            "ok": self.ok,
            "version_before": self.version_before,
            "version_after": self.version_after,
            "applied": self.applied_versions,
            "steps": [s.to_dict() for s in self.steps],
            "pending": self.pending,
            "error": self.error.to_dict() if self.error else None,
            "duration_s": round(self.duration_s, 6),
            "notes": self.notes,
            "created_database": self.created_database,
            "attempts": self.attempts,
        }
