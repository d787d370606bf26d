"""The audit as Prometheus metrics, for node_exporter's textfile collector.

The nightly audit writes e.g. `/var/lib/node_exporter/textfile/orchestrator_audit.prom`; node_exporter serves it
and alerts fire on `orchestrator_audit_school_drift == 1` (drift found), `orchestrator_audit_school_not_audited == 1`
(the audit could not read or compare the school: a down server, a refused login, no CREATEDB where references are
built; a different page from drift), or a stale `orchestrator_audit_last_run_timestamp_seconds`.
The file is replaced atomically, because the collector may read it at any moment and a half-written file is dropped
(with an error metric) rather than partly read.

Labels carry the school id and `host:port` only: never a URL, user or password.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge

from .. import metrics
from ..output_files import write_atomically
from .model import AuditReport

_PREFIX = "orchestrator_audit_"
_SCHOOL_LABELS = ("school", "server")

#: the `state` label values of orchestrator_audit_schools, in AuditReport.counts() terms
STATES = ("clean", "drift", "schema_drift", "pending", "not_audited", "unreachable", "unreadable", "no_reference")


def _gauge(registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return metrics.gauge(registry, _PREFIX + name, doc, labels)


def render_prometheus(report: AuditReport) -> str:
    """The report in the Prometheus text exposition format (version 0.0.4)."""
    return metrics.render(audit_registry(report))


def audit_registry(report: AuditReport) -> CollectorRegistry:
    """The audit's metrics (the textfile's and what `--pushgateway` pushes)."""
    registry = metrics.new_registry()

    drift = _gauge(
        registry,
        "school_drift",
        "1 if the audit found drift on the school, 0 if it audited the school and found none; absent when it could "
        "not audit it (see school_not_audited).",
        _SCHOOL_LABELS,
    )
    not_audited = _gauge(
        registry,
        "school_not_audited",
        "1 for a school the audit could not read or compare; reason: its status (unreachable, no_database, denied, "
        "unreadable, no_reference, skipped). Absent for an audited school.",
        (*_SCHOOL_LABELS, "reason"),
    )
    pending = _gauge(registry, "school_pending_migrations", "Migrations not yet applied on the school.", _SCHOOL_LABELS)
    reachable = _gauge(registry, "school_reachable", "1 if the audit could connect to the school.", _SCHOOL_LABELS)
    readable = _gauge(
        registry, "school_readable", "1 if the audit could read the school (history and schema).", _SCHOOL_LABELS
    )
    version = _gauge(
        registry, "school_version", "The school's latest applied migration version (when known).", _SCHOOL_LABELS
    )
    for school in report.schools:
        labels = {"school": school.tenant.id, "server": school.result.server}
        # Not audited is unknown, not a false 0 (nor a drift page): its own series says why.
        if school.drift or school.not_audited is None:
            drift.labels(**labels).set(1 if school.drift else 0)
        if school.not_audited is not None:
            not_audited.labels(**labels, reason=school.not_audited.value).set(1)
        reachable.labels(**labels).set(1 if school.reachable else 0)
        readable.labels(**labels).set(1 if school.readable else 0)
        # An unread school's pending list is unknown, not empty: leave the series absent instead of a false 0.
        if school.readable:
            pending.labels(**labels).set(school.pending_count)
        if school.result.version_after is not None:
            version.labels(**labels).set(school.result.version_after)

    _gauge(registry, "last_run_timestamp_seconds", "When the audit finished, as a Unix time.").set(
        report.finished_at.timestamp()
    )
    _gauge(registry, "duration_seconds", "How long the audit took.").set(report.duration_s)
    _gauge(registry, "interrupted", "1 if the audit was interrupted before it saw every school.").set(
        1 if report.interrupted else 0
    )
    if report.latest_version is not None:
        # Lets PromQL compare: orchestrator_audit_school_version < on() group_left orchestrator_audit_latest_...
        _gauge(registry, "latest_migration_version", "The newest migration version in the migrations directory.").set(
            report.latest_version
        )
    schools = _gauge(registry, "schools", "Schools per audit state (a school may be in several).", ("state",))
    counts = report.counts()
    for state in STATES:
        schools.labels(state=state).set(counts[state])
    _gauge(registry, "schema_fingerprints", "Distinct live-schema fingerprints across the fleet.").set(
        len(report.fingerprint_groups())
    )
    return registry


def write_prometheus(report: AuditReport, path: Path | str) -> None:
    """Write the metrics file atomically (temp file beside it, then rename), as the textfile collector needs."""
    write_atomically(Path(path), render_prometheus(report))
