"""What the linter reports: one `Finding` per problem, gathered in a `LintReport`.

A finding says where (file, line, column), what (rule id and message), why it matters when the migration runs on
hundreds of school databases, and what to do instead. Suppressed findings stay in the report, marked with the
reason the author gave, so a reviewer sees what was waved through and why.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Severity = Literal["error", "warning"]
Origin = Literal["orchestrator", "squawk"]

#: bump when a key of `LintReport.to_dict()` changes meaning or disappears (adding keys does not bump it)
SCHEMA_VERSION = 1


@dataclass(frozen=True)
class Finding:
    """One problem in one migration file."""

    rule: str  # e.g. "drop-column", or "squawk:constraint-missing-not-valid"
    severity: Severity
    path: Path
    line: int  # 1-based
    column: int  # 1-based, in characters; 1 for findings about the whole file
    message: str  # what is wrong, naming the table/column where it can
    why: str  # why it is dangerous at fleet scale
    instead: str  # what to do instead
    origin: Origin = "orchestrator"
    suppressed: bool = False
    suppression_reason: str | None = None

    @property
    def location(self) -> str:
        return f"{self.path}:{self.line}:{self.column}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "severity": self.severity,
            "path": str(self.path),
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "why": self.why,
            "instead": self.instead,
            "origin": self.origin,
            "suppressed": self.suppressed,
            "suppression_reason": self.suppression_reason,
        }


@dataclass
class LintReport:
    """Every finding of one lint run, sorted by file and position."""

    findings: list[Finding]
    files_checked: list[Path]
    #: names recorded in released.sum by `--release`; None when no release was asked for
    released_recorded: list[str] | None = field(default=None)
    #: `--release` was asked for (and refused when released_recorded is None)
    release_requested: bool = False
    #: `--baseline`: the linted files still not released (no school has applied them)
    not_recorded: list[str] | None = None
    #: `--baseline`: schools whose ledger could not be read (a file only they applied is not recorded)
    unread: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        """Unsuppressed errors: any of them fails the gate."""
        return [f for f in self.findings if f.severity == "error" and not f.suppressed]

    @property
    def warnings(self) -> list[Finding]:
        """Unsuppressed warnings: shown, but they do not fail the gate."""
        return [f for f in self.findings if f.severity == "warning" and not f.suppressed]

    @property
    def suppressed(self) -> list[Finding]:
        return [f for f in self.findings if f.suppressed]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "ok": self.ok,
            "files_checked": [str(p) for p in self.files_checked],
            "summary": {
                "files": len(self.files_checked),
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "suppressed": len(self.suppressed),
            },
            "findings": [f.to_dict() for f in self.findings],
            "released_recorded": self.released_recorded,
            "not_recorded": self.not_recorded,
            "unread_schools": self.unread,
        }
