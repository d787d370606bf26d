"""A run's outcome as Prometheus metrics (`--metrics PATH`, `--pushgateway URL`), from the report's values alone.

The textfile is for node_exporter's textfile collector (written atomically: output_files.py); the push is for Jobs,
which end before anything could scrape them: the same registry goes to a Pushgateway under job `orchestrator` and
grouping key `command`, so each command's latest run replaces its own group only. Every series carries a `command`
label, so the textfiles of several commands in one directory never collide. Names: docs/metrics.md.

Labels carry statuses, `host:port` and template names only: never a URL, user or password.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.exposition import push_to_gateway

from .errors import UsageError
from .outcome import Status
from .settings import PUSH_TIMEOUT_S

if TYPE_CHECKING:
    from .report import RunReport
    from .runner import Report
    from .template_fleet import TemplateReport

PREFIX = "orchestrator_"
JOB = "orchestrator"  # the Pushgateway's `job` label
# A school takes from milliseconds (nothing to do) to an hour (a big table rewritten).
SCHOOL_DURATION_BUCKETS = (0.05, 0.25, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0)
_UNKNOWN_VERSION = (Status.UNREACHABLE, Status.NO_DATABASE)


def new_registry() -> CollectorRegistry:
    # A private registry: the process-wide default one would add python_* / process_* metrics and collide across
    # calls.
    return CollectorRegistry(auto_describe=True)


def gauge(registry: CollectorRegistry, name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
    return Gauge(name, doc, labelnames=labels, registry=registry)


def render(registry: CollectorRegistry) -> str:
    """The Prometheus text exposition format (version 0.0.4)."""
    return generate_latest(registry).decode("utf-8")


def command_of(report: Report) -> str:
    from .audit.model import AuditReport

    return "audit" if isinstance(report, AuditReport) else report.command  # the audit's report names no command


def registry_for(report: Report) -> CollectorRegistry:
    """The metrics of any command's report: the audit's own (audit/metrics.py), a template run's, a rollout's."""
    from .audit.model import AuditReport  # loaded with the command that made one
    from .template_fleet import TemplateReport

    if isinstance(report, AuditReport):
        from .audit.metrics import audit_registry

        return audit_registry(report)
    if isinstance(report, TemplateReport):
        return template_registry(report)
    return rollout_registry(report)


def rollout_registry(report: RunReport) -> CollectorRegistry:
    """migrate, revert, resolve, provision (and any other command's RunReport): schools per status, durations, the
    versions the fleet stands at after the run."""
    registry = new_registry()
    command = report.command
    schools = gauge(registry, PREFIX + "schools", "Schools per status at the end of the run.", ("command", "status"))
    counts = report.counts()
    for status in Status:  # every status, 0 included: an alert on a status that has not happened yet still has data
        schools.labels(command=command, status=status.value).set(counts[status.value])
    durations = Histogram(
        PREFIX + "school_duration_seconds",
        "Time spent on each school that was attempted (retries included).",
        labelnames=("command",),
        buckets=SCHOOL_DURATION_BUCKETS,
        registry=registry,
    )
    attempted = durations.labels(command=command)
    for outcome in report.outcomes:
        if outcome.result.attempts > 0:
            attempted.observe(outcome.result.duration_s)
    versions = [
        o.result.version_after
        for o in report.outcomes
        if o.result.status not in _UNKNOWN_VERSION and o.result.version_after is not None
    ]
    if report.latest_version is not None:
        _one(registry, "latest_migration_version", "The newest version among the migration files.", command,
             report.latest_version)  # fmt: skip
        _one(registry, "schools_at_latest", "Schools at the newest version after the run.", command,
             sum(1 for v in versions if v == report.latest_version))  # fmt: skip
    # Absent rather than a false 0 when no school's version is known (none reached, or none has a history yet).
    if versions:
        _one(registry, "schools_min_version", "The oldest version a school stands at after the run.", command,
             min(versions))  # fmt: skip
        _one(registry, "schools_max_version", "The newest version a school stands at after the run.", command,
             max(versions))  # fmt: skip
    _run_gauges(registry, command, report.run.finished_at.timestamp(), report.run.duration_s, report.ok,
                report.interrupted)  # fmt: skip
    _one(registry, "run_halted", "1 if the run stopped starting schools (failure budget, canary).", command,
         1 if report.run.halted else 0)  # fmt: skip
    return registry


def template_registry(report: TemplateReport) -> CollectorRegistry:
    """`orchestrator template`: each server's template version, its ready spares, whether it could be made ready."""
    registry = new_registry()
    command = report.command
    labels = ("command", "server", "template")
    ready = gauge(
        registry, PREFIX + "template_ready", "1 if the server's template is current (or was made so).", labels
    )
    version = gauge(registry, PREFIX + "template_version", "The migration version the template stands at.", labels)
    spares = gauge(registry, PREFIX + "template_spares", "Ready copies of the template on the server.", labels)
    for server in report.servers:
        key = {"command": command, "server": server.server, "template": server.template}
        ready.labels(**key).set(1 if server.ok else 0)
        spares.labels(**key).set(server.spares)
        if server.version is not None:
            version.labels(**key).set(server.version)
    _run_gauges(registry, command, report.finished_at.timestamp(), report.duration_s, report.ok, report.interrupted)
    return registry


def _run_gauges(
    registry: CollectorRegistry, command: str, finished_at: float, duration_s: float, ok: bool, interrupted: bool
) -> None:
    _one(registry, "run_timestamp_seconds", "When the run finished, as a Unix time.", command, finished_at)
    _one(registry, "run_duration_seconds", "How long the run took.", command, duration_s)
    _one(registry, "run_ok", "1 if the run ended ok (exit code 0), else 0.", command, int(ok))
    _one(
        registry, "run_interrupted", "1 if the run was interrupted (Ctrl-C, SIGTERM).", command, 1 if interrupted else 0
    )


def _one(registry: CollectorRegistry, name: str, doc: str, command: str, value: float) -> None:
    """A gauge with one series, labelled with the command."""
    gauge(registry, PREFIX + name, doc, ("command",)).labels(command=command).set(value)


def check_pushgateway(url: str) -> None:
    """Before any connection: an http(s) URL with a host and no credentials (they would show in a warning).
    Raises UsageError (exit 2)."""
    parts = urlsplit(url if "://" in url else f"http://{url}")  # host:port, as prometheus_client takes it
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = f"scheme {parts.scheme!r} is not http or https"
    elif not parts.hostname:
        problem = "it names no host"
    elif parts.username is not None or parts.password is not None:
        problem = "it holds credentials"
    elif parts.query or parts.fragment:
        problem = "it has a query or fragment"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number in range
        except ValueError:
            problem = "its port is not a number from 1 to 65535"
    if problem:
        raise UsageError(
            f"--pushgateway {url.replace(parts.password, '***') if parts.password else url}: {problem}",
            hint="give the Pushgateway's address, e.g. --pushgateway http://pushgateway.monitoring:9091",
        )


def grouping_key(command: str, shard: tuple[int, int] | None = None) -> dict[str, str]:
    """The Pushgateway group a run replaces: its command's, and with --shard its shard's (the shards of one
    rollout push at once; each must not wipe out the others' metrics)."""
    return {"command": command, **({"shard": f"{shard[0]}/{shard[1]}"} if shard else {})}


def push(registry: CollectorRegistry, url: str, group: dict[str, str], timeout: float = PUSH_TIMEOUT_S) -> None:
    """PUT the registry to the Pushgateway: it replaces the metrics of its group (job `orchestrator`, `group`).
    Raises OSError when the gateway cannot be reached or refuses the push."""
    push_to_gateway(url, job=JOB, registry=registry, grouping_key=group, timeout=timeout)
