"""One error hierarchy with stable codes.

Every error carries a `code` (stable, documented in docs/errors.md, safe to match on in scripts), a message that says
what went wrong, and a `hint` that says what to do next. Errors are either *invalid input* (exit code 2, raised before
any connection is made) or *database* errors (they become a per-database outcome, never a crash of the whole run).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class OrchestratorError(Exception):
    """Base of every error this tool raises on purpose."""

    code: str = "error"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "hint": self.hint}


def excerpt(text: str, limit: int = 60) -> str:
    """`text` quoted for a message (control characters escaped), cut to `limit` characters: a 50 MB name is not
    echoed whole."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}... ({len(text):,} characters)"


def some(names: Sequence[str], limit: int = 20) -> str:
    """A list for a message: the first `limit`, then how many more."""
    listed = list(names)
    shown = ", ".join(listed[:limit]) or "none"
    return shown + (f" and {len(listed) - limit:,} more" if len(listed) > limit else "")


# --- invalid input: exit code 2, nothing touched ------------------------------------------------------------------


@dataclass(frozen=True)
class Location:
    """Where in an input file a problem is."""

    path: Path
    line: int | None = None
    label: str | None = None  # where inside the input, when not a line: e.g. "source row id=school-a"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {self.label}" if self.label else where


class InvalidInput(OrchestratorError):
    """Bad input (files, flags, registry). Raised before any database is touched."""

    code = "invalid_input"

    def __init__(self, message: str, *, location: Location | None = None, hint: str | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message, hint=hint)
        self.location = location


class MigrationSourceError(InvalidInput):
    """A migration file or directory breaks SQLx's rules (or ours, which are stricter)."""

    code = "bad_migration_source"


class RegistryError(InvalidInput):
    """The tenant registry (tenants.yaml) is malformed."""

    code = "bad_registry"


class UsageError(InvalidInput):
    """A flag or argument is wrong."""

    code = "bad_usage"


class UnwritableOutput(InvalidInput):
    """An output file (--report, --junit, --metrics, --html) could not be written where it is named: found before
    the first connection, so a run never ends without the record of what it did."""

    code = "unwritable_output"


class UnsafeMigrations(InvalidInput):
    """The safety gate refused the pending migrations (lint errors) and --allow-unsafe was not given."""

    code = "unsafe_migrations"


class RequestRefused(InvalidInput):
    """An HTTP request to `orchestrator serve` that cannot be served as sent (a body that is not the JSON object
    asked for, an id or URL the registry would refuse): answered with a 4xx, nothing done."""

    code = "bad_request"


class BodyTooLarge(RequestRefused):
    code = "body_too_large"


class UnknownSchool(RequestRefused):
    """The id is in no registry entry (read again to be sure) and the request gave no URL for it."""

    code = "unknown_school"


class SchoolConflict(RequestRefused):
    """The URL given for a school names another database than the registry's entry for that id, or the database of
    another school."""

    code = "school_conflict"


class Unauthorized(RequestRefused):
    """No `Authorization: Bearer <token>`, or not the service's token."""

    code = "unauthorized"


# --- database errors: become a per-database outcome ---------------------------------------------------------------


class DatabaseError(OrchestratorError):
    """Something about one database stopped the run on it."""

    code = "database_error"
    #: worth retrying later on its own (a dropped connection, a lock not available)
    retryable: bool = False
    #: the server gave no answer at all: the connection failed at the network level, or a client-side reply
    #: deadline passed (it accepted the login, then stopped answering). The fleet's per-server breaker counts these;
    #: whatever the server says (a refused login, a statement cancelled by its statement_timeout) is an answer.
    no_answer: bool = False


class Unreachable(DatabaseError):
    code = "unreachable"
    retryable = True


class TransactionPooler(DatabaseError):
    """The URL leads through a pooler in transaction mode: SQLx's session advisory lock means nothing there."""

    code = "transaction_pooler"


class ConnectFailed(Unreachable):
    """No answer at the network level (refused, timed out, reset): the server itself may be down (a refused login
    or a full server is not a server down)."""

    no_answer = True


class AuthFailed(DatabaseError):
    """The server refused the login (SQLSTATE 28P01 wrong password, 28000 no such role or a pg_hba.conf rule): an
    answer, so never counted as a server down; not retried, since the same credentials fail again and repeated
    failures can lock the account."""

    code = "auth_failed"


class DatabaseMissing(DatabaseError):
    """The database does not exist and we were not asked to create it."""

    code = "database_missing"


class PermissionDenied(DatabaseError):
    """The URL's role lacks a privilege (SQLSTATE 42501). Not retried: it fails the same way until granted."""

    code = "permission_denied"


class NotASchool(DatabaseError):
    """The database is a template (pg_database.datistemplate): whatever is put in it lands in every database
    created from it afterwards."""

    code = "template_database"


class Locked(DatabaseError):
    """Another migrator held SQLx's advisory lock for longer than we were willing to wait."""

    code = "locked"
    retryable = True


class Dirty(DatabaseError):
    """A history row says success = false: SQLx refuses to run, so do we."""

    code = "dirty"

    def __init__(self, message: str, *, version: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.version = version


class MissingMigration(DatabaseError):
    """A version was applied but its file is gone."""

    code = "missing"

    def __init__(self, message: str, *, versions: list[int], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.versions = versions


class ModifiedMigration(DatabaseError):
    """A file was edited after it was applied (its checksum differs from the history row)."""

    code = "modified"

    def __init__(self, message: str, *, versions: list[int], hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.versions = versions


class SplitOnboarding(ModifiedMigration):
    """Onboarding refused, the school left uncreated: a version's file differs from what the school's template holds
    (built from the files as they were applied); a school made from these files would split the fleet. `lines`: one
    per version, in the plan pass's words."""

    def __init__(self, lines: list[str], *, versions: list[int], hint: str | None = None) -> None:
        message = "; ".join(lines) + ": a school made from these files would split the fleet"
        super().__init__(message, versions=versions, hint=hint)
        self.lines = lines


class NotReversible(DatabaseError):
    code = "not_reversible"


class MigrationFailed(DatabaseError):
    """A statement in a migration file failed on the server."""

    code = "migration_failed"

    def __init__(
        self,
        message: str,
        *,
        version: int,
        file: str,
        line: int | None,
        sqlstate: str | None,
        hint: str | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message, hint=hint)
        self.version = version
        self.file = file
        self.line = line
        self.sqlstate = sqlstate
        self.retryable = retryable

    def to_dict(self) -> dict[str, Any]:
        return {
            **super().to_dict(),
            "version": self.version,
            "file": self.file,
            "line": self.line,
            "sqlstate": self.sqlstate,
        }


class Interrupted(DatabaseError):
    """The connection was lost or the run was interrupted while working on this database."""

    code = "interrupted"
    retryable = True
