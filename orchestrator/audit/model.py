"""What the nightly audit found, per school and for the fleet: plain values that the JSON, JUnit, Prometheus and
HTML outputs all render from.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from ..junit import JunitCase, render_junit
from ..outcome import DatabaseResult, Status
from ..registry import Tenant

# 2: `drift` is findings only; a school the audit could not read or compare is `audited: false`, its status says why
AUDIT_SCHEMA_VERSION = 2


@dataclass(frozen=True)
class Finding:
    """One drift finding, in words a DBA reads at a glance."""

    kind: str  # history: pending | ahead | modified | dirty | no_history | extension_missing; schema: schema
    text: str  # e.g. "students: index idx_students_email not in migrations"

    def to_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "text": self.text}


@dataclass
class SchoolAudit:
    tenant: Tenant
    result: DatabaseResult  # the read-only status of the school (versions, pending, error)
    findings: list[Finding] = field(default_factory=list)
    fingerprint: str | None = None  # of the live schema; None when it could not be read
    expected_fingerprint: str | None = None  # of what the migrations produce at the school's version
    server_major: int | None = None  # the school's PostgreSQL major version (None: not reached)
    # Applied versions with no file in the source (--ignore-missing): the schema was compared with what the files
    # create only.
    fileless: tuple[int, ...] = ()
    # Why the live schema was not compared: its expected schema could not be built (no CREATEDB where references
    # are built, no server of the school's version, its migrations failing in a scratch database). Not drift.
    reference_error: str | None = None

    @property
    def schema_matches(self) -> bool:
        """The live schema is what the files produce; with versions that have no file (`fileless`): everything the
        files create is there as they create it."""
        if not self.fingerprint or not self.expected_fingerprint:
            return False
        return self.fingerprint == self.expected_fingerprint or (bool(self.fileless) and not self.schema_drift)

    @property
    def reachable(self) -> bool:
        return self.result.status not in (Status.UNREACHABLE, Status.NO_DATABASE)

    @property
    def readable(self) -> bool:
        """Reached and read: a school whose read failed (no connection, a missing privilege, a lock, ...) was not
        audited, so it is never counted clean."""
        return self.result.error is None

    @property
    def drift(self) -> bool:
        """Drift found: findings (history, extensions, schema). A school the audit could not read or compare is
        not drift (see `not_audited`); it is never counted clean either."""
        return bool(self.findings)

    @property
    def not_audited(self) -> Status | None:
        """Why the school was not (fully) audited: not reached, not read or not attempted (its status), or its
        schema not compared (`no_reference`); None when it was."""
        if not self.readable or self.result.status is Status.SKIPPED:  # skipped: an interrupt came first
            return self.result.status
        return Status.NO_REFERENCE if self.reference_error is not None else None

    @property
    def clean(self) -> bool:
        return not self.drift and self.not_audited is None

    @property
    def status(self) -> Status:
        """One status: drift wins (what was found is there, whatever could not be compared), then why the school
        was not audited, else `up_to_date`."""
        if self.drift:
            return Status.DRIFT
        return self.not_audited or self.result.status

    @property
    def schema_drift(self) -> bool:
        return any(f.kind == "schema" for f in self.findings)

    def why_not_audited(self) -> list[str]:
        """What kept the audit from reading or comparing the school, with what to do (empty when audited)."""
        error = self.result.error
        said = [error.message + (f" -> {error.hint}" if error.hint else "")] if error else []
        if self.reference_error is not None:
            said.append(f"schema not compared: its expected schema could not be built: {self.reference_error}")
        return said

    @property
    def pending_count(self) -> int:
        return len(self.result.pending)

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.tenant.id,
            "tags": list(self.tenant.tags),
            "database": self.result.database,
            "server": self.result.server,
            "postgres_major": self.server_major,
            "status": self.status.value,
            "drift": self.drift,
            "audited": self.not_audited is None,
            "reference_error": self.reference_error,
            "version": self.result.version_after,
            "pending": self.result.pending,
            "findings": [f.to_dict() for f in self.findings],
            "fingerprint": self.fingerprint,
            "expected_fingerprint": self.expected_fingerprint,
            "notes": self.result.notes,
            "error": self.result.error.to_dict() if self.result.error else None,
            "duration_s": round(self.result.duration_s, 6),
        }


@dataclass
class AuditReport:
    schools: list[SchoolAudit]
    started_at: datetime
    finished_at: datetime
    migrations_dirs: list[str]  # as given: one, or several forming one source
    latest_version: int | None
    interrupted: bool = False

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    @property
    def clean(self) -> bool:
        return not self.interrupted and all(s.clean for s in self.schools)

    @property
    def ok(self) -> bool:
        return self.clean

    @property
    def drift_found(self) -> bool:
        return any(s.drift for s in self.schools)

    @property
    def verdict(self) -> str:
        """`clean`; `drift` when some school drifted (it wins over schools not audited: drift is what pages);
        `not_audited` when some school could not be audited (or the audit was interrupted) and none drifted."""
        if self.clean:
            return "clean"
        return "drift" if self.drift_found else "not_audited"

    def json_chunks(self) -> Iterator[str]:
        yield self._json

    @cached_property
    def _json(self) -> str:
        # Built once for both --report and --json (the audit's report is small: findings, not per-step rows).
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def junit_xml(self) -> str:
        cases = [
            JunitCase(
                name=s.tenant.id,
                classname=f"audit.{s.result.server}",
                time_s=s.result.duration_s,
                failure=(f"{len(s.findings)} finding(s)" if s.drift else s.status.value) if not s.clean else None,
                failure_type=s.status.value,
                details="\n".join([f.text for f in s.findings] + s.why_not_audited()),
            )
            for s in self.schools
        ]
        return render_junit("orchestrator audit", cases, duration_s=self.duration_s, timestamp=self.started_at)

    def version_histogram(self) -> list[tuple[int | None, int]]:
        counts = Counter(s.result.version_after for s in self.schools if s.reachable)
        return sorted(counts.items(), key=lambda kv: (kv[0] is None, -(kv[0] or 0)))

    def fingerprint_groups(self) -> list[tuple[str, list[str]]]:
        """Schools grouped by live-schema fingerprint, largest group first: "998 identical, 2 differ"."""
        groups: dict[str, list[str]] = {}
        for s in self.schools:
            if s.fingerprint:
                groups.setdefault(s.fingerprint, []).append(s.tenant.id)
        return sorted(groups.items(), key=lambda kv: -len(kv[1]))

    def counts(self) -> dict[str, int]:
        """Schools per state; a school may be in several (drift and no_reference: its history drifted, its schema
        could not be compared). `not_audited` covers unreachable, unreadable (denied included), no_reference and
        schools an interrupt left unread."""
        return {
            "schools": len(self.schools),
            "clean": sum(1 for s in self.schools if s.clean),
            "drift": sum(1 for s in self.schools if s.drift),
            "schema_drift": sum(1 for s in self.schools if s.schema_drift),
            "pending": sum(1 for s in self.schools if s.pending_count),
            "not_audited": sum(1 for s in self.schools if s.not_audited is not None),
            "unreachable": sum(1 for s in self.schools if not s.reachable),
            "unreadable": sum(1 for s in self.schools if s.reachable and not s.readable),
            "no_reference": sum(1 for s in self.schools if s.readable and s.reference_error is not None),
        }

    def not_audited_by_status(self) -> dict[str, int]:
        """Why schools were not audited, by status (e.g. {"no_reference": 2, "denied": 1}), most first."""
        counts = Counter(s.not_audited.value for s in self.schools if s.not_audited is not None)
        return dict(counts.most_common())

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": AUDIT_SCHEMA_VERSION,
            "command": "audit",
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_s": round(self.duration_s, 3),
            "clean": self.clean,
            "verdict": self.verdict,
            "interrupted": self.interrupted,
            "migrations": {
                "directory": self.migrations_dirs[0],  # the first (schema 1's field); all of them below
                "directories": self.migrations_dirs,
                "latest_version": self.latest_version,
            },
            "summary": self.counts(),
            "not_audited": self.not_audited_by_status(),
            "version_histogram": [{"version": v, "schools": n} for v, n in self.version_histogram()],
            "fingerprint_groups": [{"fingerprint": f, "schools": ids} for f, ids in self.fingerprint_groups()],
            "schools": [s.to_dict() for s in self.schools],
        }
