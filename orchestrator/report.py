"""The run report: what happened to each school, as JSON (documented schema, docs/report.md) and JUnit XML.

Nothing here can see a password: results carry only `host:port` and database names, and error texts were scrubbed
where they were made.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from .errors import UsageError
from .fleet import FleetRun, TenantOutcome
from .junit import JunitCase, render_junit
from .outcome import Status
from .source import Migration, MigrationSource

SCHEMA_VERSION = 1


@dataclass
class RunReport:
    command: str
    run: FleetRun
    migrations_dirs: list[str]  # as given: one, or several forming one source
    latest_version: int | None
    options: dict[str, Any] = field(default_factory=dict)
    rehearsal: list[str] | None = None  # what `--rehearse` tried, when given
    checksums: dict[int, str] = field(default_factory=dict)  # version -> SHA-384 (hex) of each file this run used

    @property
    def outcomes(self) -> list[TenantOutcome]:
        return self.run.outcomes

    @property
    def ok(self) -> bool:
        return self.run.ok

    @property
    def interrupted(self) -> bool:
        return self.run.interrupted

    def junit_xml(self) -> str:
        return to_junit(self)

    def counts(self) -> Counter[str]:
        return Counter(o.result.status.value for o in self.outcomes)

    def version_histogram(self) -> list[tuple[int | None, int]]:
        """How many schools stand at each version (after the run), newest first; None = no history."""
        unknown = (Status.UNREACHABLE, Status.NO_DATABASE)
        counts = Counter(o.result.version_after for o in self.outcomes if o.result.status not in unknown)
        return sorted(counts.items(), key=lambda kv: (kv[0] is None, -(kv[0] or 0)))

    def to_dict(self) -> dict[str, Any]:
        return {**self.header(), "schools": list(self.school_dicts())}

    def school_dicts(self) -> Iterator[dict[str, Any]]:
        for o in self.outcomes:
            yield school_dict(o)

    def json_chunks(self) -> Iterator[str]:
        """The JSON report piece by piece, one school per line: 100,000 schools never sit in memory as one
        document (to_dict() and json.dumps of it would add several hundred MB at that size)."""
        head = json.dumps(self.header(), indent=2)
        yield head[: -len("\n}")] + ',\n  "schools": [\n'
        for i, school in enumerate(self.school_dicts()):
            yield ("    " if i == 0 else ",\n    ") + json.dumps(school)
        yield "\n  ]\n}\n"

    def header(self) -> dict[str, Any]:
        """Everything but the per-school entries."""
        counts = self.counts()
        return {
            "schema_version": SCHEMA_VERSION,
            "tool": f"orchestrator {__version__}",
            "command": self.command,
            "started_at": self.run.started_at.isoformat(),
            "finished_at": self.run.finished_at.isoformat(),
            "duration_s": round(self.run.duration_s, 3),
            "ok": self.ok,
            "halted": self.run.halted,
            "interrupted": self.run.interrupted,
            "aborted": self.run.aborted,
            "servers_down": self.run.servers_down,
            "migrations": {
                "directory": self.migrations_dirs[0],  # the first (schema 1's field); all of them below
                "directories": self.migrations_dirs,
                "latest_version": self.latest_version,
                "checksums": {str(v): h for v, h in self.checksums.items()},
            },
            "options": self.options,
            "rehearsal": self.rehearsal,
            "summary": {
                "total": len(self.outcomes),
                "ok": sum(1 for o in self.outcomes if o.result.ok),
                "not_ok": sum(1 for o in self.outcomes if not o.result.ok),
                "by_status": dict(sorted(counts.items())),
            },
            "version_histogram": [{"version": version, "schools": n} for version, n in self.version_histogram()],
        }


def school_dict(o: TenantOutcome) -> dict[str, Any]:
    """One school's entry in the report (and the service's answer for one school)."""
    return {"id": o.tenant.id, "tags": list(o.tenant.tags), "wave": o.wave, **o.result.to_dict()}


def to_junit(report: RunReport) -> str:
    """One test case per school, so CI dashboards show each school's fate."""
    cases = []
    for o in report.outcomes:
        r = o.result
        summary = f"status={r.status.value} version {r.version_before} -> {r.version_after}"
        applied = ", ".join(f"{s.version} ({s.duration_s:.3f}s)" for s in r.steps if s.duration_s is not None)
        failed = not r.ok and r.status is not Status.SKIPPED
        cases.append(
            JunitCase(
                name=o.tenant.id,
                classname=f"{report.command}.{r.server}",
                time_s=r.duration_s,
                skipped="; ".join(r.notes) or "skipped" if r.status is Status.SKIPPED else None,
                failure=(r.error.message if r.error else r.status.value) if failed else None,
                failure_type=r.error.code if r.error else r.status.value,
                details="\n".join(filter(None, [summary, r.error.hint if r.error else None]))
                if failed
                else summary + (f"; applied {applied}" if applied else ""),
            )
        )
    return render_junit(
        f"orchestrator {report.command}", cases, duration_s=report.run.duration_s, timestamp=report.run.started_at
    )


@dataclass(frozen=True)
class PreviousRun:
    """What --resume needs from an earlier report: who did not end ok, and which bytes the others applied."""

    path: Path
    not_ok: frozenset[str]
    checksums: dict[int, str]  # version -> SHA-384 (hex) of the file that run used
    at_or_past: list[tuple[str, int | None]]  # (school, version after the run) of the schools that ended ok

    def split_risks(self, source: MigrationSource) -> list[tuple[Migration, list[str]]]:
        """Files edited since that run although schools of it hold them: applying them now would split the fleet."""
        risks = []
        for m in source:
            recorded = self.checksums.get(m.version)
            if recorded is None or recorded == m.checksum.hex():
                continue
            holders = [sid for sid, after in self.at_or_past if after is not None and after >= m.version]
            if holders:
                risks.append((m, holders))
        return risks


def read_previous_run(report_path: Path) -> PreviousRun:
    """For --resume: an earlier --report, checked to be one of ours."""
    try:
        data = json.loads(report_path.read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"schema_version {data.get('schema_version')!r}, expected {SCHEMA_VERSION}")
        schools = data["schools"]
        return PreviousRun(
            report_path,
            frozenset(s["id"] for s in schools if not s["ok"]),
            {int(v): str(h) for v, h in data["migrations"].get("checksums", {}).items()},
            [(s["id"], s["version_after"]) for s in schools if s["ok"]],
        )
    except FileNotFoundError:
        raise UsageError(
            f"--resume {report_path}: no such report", hint="pass the --report file of an earlier run"
        ) from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(
            f"--resume {report_path} is not an orchestrator JSON report ({exc})",
            hint="pass the file an earlier run wrote with --report",
        ) from None
