"""OpenTelemetry traces: one span for the run, one per school (child), one per migration file (grandchild).

Off, and free, unless asked for: nothing of OpenTelemetry is imported until a run starts with tracing configured,
so `orchestrator --version` and an untraced run cost what they did. Tracing is on for a run when
- a provider was handed in with `use()` (tests: the SDK's in-memory exporter), or
- the host process already set a global OpenTelemetry tracer provider (the Python API inside an instrumented
  service): our spans join its traces, or
- the standard `OTEL_*` variables ask for it: `OTEL_EXPORTER_OTLP_ENDPOINT` (or `..._TRACES_ENDPOINT`), or
  `OTEL_TRACES_EXPORTER=otlp|console`. `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none` turn it off.
  The exporter reads the rest itself (headers, compression, `OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf`, the
  default, or `grpc` when its package is installed), and `OTEL_SERVICE_NAME` / `OTEL_RESOURCE_ATTRIBUTES` name the
  service (default `orchestrator`).

Delivery is bounded: spans go out in the background while the run goes on, and at exit the command waits at most
`EXPORT_BUDGET` for the rest (also each export request's timeout; `OTEL_EXPORTER_OTLP_TIMEOUT` may shorten it, never
lengthen it). A collector that is down or slow is said once, as one `tracing.export` warning; the SDK's own retry
messages are debug events.

Attributes follow the database semantic conventions (`db.system.name`, `db.namespace` as `<database>|public`,
`server.address`, `server.port`, `db.operation.name`, `db.response.status_code` = SQLSTATE, `error.type`) plus our
own under `orchestrator.*`. No attribute holds a URL; free text (error messages) is scrubbed of the target's
secrets before it is put on a span.
"""

from __future__ import annotations

import atexit
import logging
import math
import os
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .errors import MigrationFailed, OrchestratorError
from .logsetup import current_school, get_logger

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .audit.model import AuditReport
    from .fleet import Work
    from .job import Job
    from .outcome import DatabaseResult
    from .registry import Tenant
    from .report import RunReport
    from .source import Migration
    from .target import DatabaseTarget
    from .template_fleet import TemplateReport

log = get_logger("orchestrator.tracing")

SERVICE_NAME = "orchestrator"
DB_SYSTEM = "postgresql"
SCHEMA = "public"  # where unqualified names in the files go with the default search_path: db.namespace's schema

# The tracer of the run in progress (None: tracing off). Set by `run_span`; tasks the fleet starts inherit it.
_active: ContextVar[Tracer | None] = ContextVar("orchestrator_tracer", default=None)
_NOTHING = nullcontext()

# The most a traced command waits, as it exits, for its last spans to reach the collector, in seconds; also the
# timeout of each export request. The SDK's own default (10 s per request, retried with backoff) made a 0.2 s
# `status` take 7 s when the collector was down.
EXPORT_BUDGET = 1.0

_handed_in: TracerProvider | None = None  # use()
_from_environment: TracerProvider | None = None  # built from OTEL_* on the first traced run
_environment_read = False


def use(provider: TracerProvider | None) -> None:
    """Send the spans of the runs that start from now on to `provider` (None: back to what the environment says).
    The hook for tests (the SDK's InMemorySpanExporter) and for hosts that keep their provider private."""
    global _handed_in
    _handed_in = provider


def shutdown() -> None:
    """Export what is buffered and stop the provider built from OTEL_*, waiting at most the export budget (the CLI
    calls this as it exits, also after an interrupted run; at exit too, for the Python API). A no-op when none was
    built. Past the budget the export is abandoned (its thread is a daemon) and said once."""
    global _from_environment
    provider, _from_environment = _from_environment, None
    if provider is None:
        return
    # The SDK's shutdown waits up to 30 s for its worker, whatever the exporter's timeout: wait for it ourselves.
    stop: Callable[[], None] = provider.shutdown  # type: ignore[attr-defined]  # the SDK's (the API's has none)
    flush = threading.Thread(target=stop, name="orchestrator-trace-flush", daemon=True)
    flush.start()
    flush.join(_delivery.budget)
    if flush.is_alive():
        _delivery.problem(f"the last spans were not delivered within {_delivery.budget:g}s")
    _delivery.close()


def export_budget(environ: Mapping[str, str] = os.environ) -> float:
    """Seconds a traced command may spend delivering its spans at exit: `EXPORT_BUDGET`, or less when
    OTEL_EXPORTER_OTLP_(TRACES_)TIMEOUT says so (seconds, as the Python SDK reads it)."""
    raw = environ.get("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT") or environ.get("OTEL_EXPORTER_OTLP_TIMEOUT")
    try:
        asked = float(raw) if raw else EXPORT_BUDGET
    except ValueError:
        asked = EXPORT_BUDGET
    return min(asked, EXPORT_BUDGET) if math.isfinite(asked) and asked > 0 else EXPORT_BUDGET


def requested_exporters(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the OTEL_* variables ask for; empty: tracing off. Unlike the SDK's own auto-configuration,
    an environment that names no endpoint and no exporter means off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = [e.strip().lower() for e in environ.get("OTEL_TRACES_EXPORTER", "").split(",") if e.strip()]
    if named:
        return [] if "none" in named else named
    if environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return ["otlp"]
    return []


# --- the three spans --------------------------------------------------------------------------------------------


class RunSpan:
    """The run's span, to be finished with the report (a no-op when tracing is off)."""

    def __init__(self, span: Span | None = None, job: Job | None = None) -> None:
        self.span, self.job = span, job

    def finish(self, report: RunReport | AuditReport | TemplateReport) -> None:
        """The report's counts on the run's span (a command's statuses; the audit's clean, drift, ...; the template
        command's servers ok and not ok)."""
        if self.span is None:
            return
        from .report import RunReport
        from .template_fleet import TemplateReport

        unit = "servers" if isinstance(report, TemplateReport) else "schools"
        attributes: dict[str, Any] = {f"orchestrator.{unit}.{s}": n for s, n in report.counts().items()}
        attributes["orchestrator.interrupted"] = report.interrupted
        if isinstance(report, RunReport):
            if report.run.halted:
                attributes["orchestrator.halted"] = self._scrub(report.run.halted)
            failed, what = sum(1 for o in report.outcomes if not o.result.ok), "school(s) not ok"
        elif isinstance(report, TemplateReport):
            failed, what = report.counts()["not_ok"], "server(s) without a ready template"
        else:
            drift, not_audited = report.counts()["drift"], report.counts()["not_audited"]
            failed, what = (drift, "school(s) with drift") if drift else (not_audited, "school(s) not audited")
        self.span.set_attributes(attributes)
        if not report.ok:
            from opentelemetry.trace import StatusCode

            why = "interrupted" if report.interrupted else f"{failed} {what}"
            self.span.set_status(StatusCode.ERROR, why)

    def _scrub(self, text: str) -> str:
        assert self.job is not None
        return _scrub_all(self.job, text)


_NO_RUN_SPAN = RunSpan()


@contextmanager
def run_span(job: Job) -> Iterator[RunSpan]:
    """The span of one run (`orchestrator <command>`), current while the run goes on, so school spans are its
    children. Off: yields a RunSpan that does nothing, at the cost of one look at the environment."""
    tracer = _tracer()
    if tracer is None:
        yield _NO_RUN_SPAN
        return
    request = job.request
    attributes = _without_none(
        {
            "orchestrator.command": job.command.value,
            "orchestrator.schools": len(job.tenants),
            "orchestrator.migrations.latest": job.source.latest,
            "orchestrator.target_version": request.target_version,
            "orchestrator.revert_to": request.revert_to,
            "orchestrator.dry_run": request.dry_run,
        }
    )
    with _span(tracer, f"orchestrator {job.command.value}", attributes, lambda text: _scrub_all(job, text)) as span:
        token = _active.set(tracer)
        try:
            yield RunSpan(span, job)
        finally:
            _active.reset(token)


def school_spans(work: Work, command: str) -> Work:
    """`work` with a span around each school's attempt (`<command> school`, a child of the run's span), or `work`
    itself when tracing is off. A retried school has one span per attempt (`orchestrator.attempt`)."""
    tracer = _active.get()
    if tracer is None:
        return work
    attempts: Counter[str] = Counter()

    async def traced(tenant: Tenant) -> DatabaseResult:
        attempts[tenant.id] += 1
        attributes = {
            **database_attributes(tenant.target),
            "orchestrator.command": command,
            "orchestrator.school.id": tenant.id,
            "orchestrator.attempt": attempts[tenant.id],
        }
        # An exception here is a cancellation (a second Ctrl-C / SIGTERM): engine failures are values.
        with _span(tracer, f"{command} school", attributes, tenant.target.scrub) as span:
            result = await work(tenant)
            _school_outcome(span, result, tenant.target)
            return result

    return traced


def migration_span(target: DatabaseTarget, m: Migration, direction: str) -> AbstractContextManager[object]:
    """Around one file applied (`up`) or reverted (`down`) on one database: a CLIENT span named as the database
    semantic conventions say (`migrate <database>`, `revert <database>`); SQLSTATE and error type on failure."""
    tracer = _active.get()
    if tracer is None:
        return _NOTHING
    operation = "migrate" if direction == "up" else "revert"
    attributes: dict[str, Any] = {
        **database_attributes(target),
        "db.operation.name": operation,
        "orchestrator.migration.version": m.version,
        "orchestrator.migration.description": m.description,
        "orchestrator.migration.file": (m.filename if direction == "up" else m.down_filename) or m.filename,
    }
    school = current_school.get()
    if school is not None:
        attributes["orchestrator.school.id"] = school
    return _span(tracer, f"{operation} {target.database}", attributes, target.scrub, client=True)


def database_attributes(target: DatabaseTarget) -> dict[str, Any]:
    """The semantic conventions' attributes of one database: no user, no password, no URL."""
    return {
        "db.system.name": DB_SYSTEM,
        "db.namespace": f"{target.database}|{SCHEMA}",
        "server.address": target.host.split(",")[0],  # several hosts: the first (which one answered is unknown)
        "server.port": target.port,
    }


# --- the machinery ------------------------------------------------------------------------------------------------


@contextmanager
def _span(
    tracer: Tracer, name: str, attributes: dict[str, Any], scrub: Callable[[str], str], *, client: bool = False
) -> Iterator[Span]:
    """A current span; an exception leaving it marks it failed (with scrubbed text, and no traceback)."""
    from opentelemetry.trace import SpanKind

    kind = SpanKind.CLIENT if client else SpanKind.INTERNAL
    with tracer.start_as_current_span(
        name, kind=kind, attributes=attributes, record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield span
        except BaseException as exc:
            _failed(span, exc, scrub)
            raise


def _school_outcome(span: Span, result: DatabaseResult, target: DatabaseTarget) -> None:
    attributes = _without_none(
        {
            "orchestrator.status": result.status.value,
            "orchestrator.version.before": result.version_before,
            "orchestrator.version.after": result.version_after,
        }
    )
    applied = result.applied_versions
    if applied:
        attributes["orchestrator.migrations.applied"] = applied
    span.set_attributes(attributes)
    if result.ok:
        return
    from opentelemetry.trace import StatusCode

    error = result.error
    sqlstate = getattr(error, "sqlstate", None)
    if sqlstate:
        span.set_attribute("db.response.status_code", sqlstate)
    span.set_attribute("error.type", error.code if error is not None else result.status.value)
    message = f"{result.status.value}: {error.message}" if error is not None else result.status.value
    span.set_status(StatusCode.ERROR, target.scrub(message))


def _failed(span: Span, exc: BaseException, scrub: Callable[[str], str]) -> None:
    """An exception leaves the span: SQLSTATE when the server gave one, else our stable code, else the class."""
    from opentelemetry.trace import StatusCode

    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate:
        span.set_attribute("db.response.status_code", sqlstate)
    code = exc.code if isinstance(exc, OrchestratorError) else None
    if isinstance(exc, MigrationFailed) and exc.line is not None:
        span.set_attribute("orchestrator.migration.line", exc.line)
    span.set_attribute("error.type", sqlstate or code or type(exc).__qualname__)
    # Only our own messages go on the span (scrubbed again); any other exception is named by its class.
    message = exc.message if isinstance(exc, OrchestratorError) else type(exc).__qualname__
    span.set_status(StatusCode.ERROR, scrub(message))


def _scrub_all(job: Job, text: str) -> str:
    """`text` without any secret of the run's schools (only ever called on the rare texts a run span carries)."""
    for tenant in job.tenants:
        text = tenant.target.scrub(text)
    return text


def _without_none(attributes: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}


def _tracer() -> Tracer | None:
    """Where this run's spans go, decided as it starts; None: tracing off."""
    from . import __version__

    provider = _handed_in
    if provider is None and os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() != "true":
        provider = _host_provider() or _environment_provider()
    return provider.get_tracer(SERVICE_NAME, __version__) if provider is not None else None


def _host_provider() -> TracerProvider | None:
    """The global provider of a host that configured OpenTelemetry itself (looked at only if it imported it)."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return None
    provider: TracerProvider = api.get_tracer_provider()
    return None if isinstance(provider, api.ProxyTracerProvider | api.NoOpTracerProvider) else provider


def _environment_provider() -> TracerProvider | None:
    """The SDK provider the OTEL_* variables ask for, built once per process (kept private: never the global)."""
    global _environment_read, _from_environment
    if not _environment_read:
        _environment_read = True
        exporters = requested_exporters()
        if exporters:
            _from_environment = _build_provider(exporters)
    return _from_environment


def _build_provider(names: list[str]) -> TracerProvider | None:
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning(
            "tracing.off",
            reason=f"OTEL_* asks for traces but the OpenTelemetry SDK is not installed ({exc})",
            hint="pip install opentelemetry-sdk opentelemetry-exporter-otlp-proto-http",
        )
        return None
    global _delivery
    _delivery = _Delivery(export_budget(), _collector_address())
    exporters = [e for e in (_exporter(name, _delivery.budget) for name in names) if e is not None]
    if not exporters:
        return None
    from . import __version__

    ours = Resource({"service.name": SERVICE_NAME, "service.version": __version__})
    environment = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    named = not str(environment.attributes.get("service.name", "")).startswith("unknown_service")
    # shutdown_on_exit=False: the SDK's own exit hook would wait up to 30 s; ours waits the budget.
    provider = SdkTracerProvider(
        resource=ours.merge(environment) if named else environment.merge(ours), shutdown_on_exit=False
    )
    atexit.register(shutdown)
    _route_sdk_logs()
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(_watched(exporter, _delivery)))
    return provider


class _Delivery:
    """How the spans of this process fare on their way to the collector. The first problem (a batch the collector
    did not take, the exit's budget run out, the SDK complaining) is said once, as a `tracing.export` warning; the
    rest are debug events. After `close()` nothing more is said (an abandoned export may still be retrying)."""

    def __init__(self, budget: float, collector: str = "") -> None:
        self.budget, self.collector = budget, collector
        self.said = self.closed = False
        self.cause: str | None = None  # the SDK's first complaint: the root cause (e.g. connection refused)
        self._lock = threading.Lock()

    def sdk_said(self, record: logging.LogRecord) -> None:
        """A log record of the SDK: the exporter's retry messages are kept as the cause; anything else at warning
        level (a full queue dropping spans) is a problem of its own."""
        message = record.getMessage()
        if self.cause is None and record.levelno >= logging.WARNING:
            self.cause = message
        if record.levelno >= logging.WARNING and not record.name.startswith("opentelemetry.exporter"):
            self.problem(message)
        elif not self.closed:
            log.debug("tracing.export", message=message)

    def problem(self, reason: str) -> None:
        with self._lock:
            if self.closed:
                return
            first, self.said = not self.said, True
        if not first:
            log.debug("tracing.export", reason=reason)
            return
        details = {"cause": self.cause} if self.cause and self.cause != reason else {}
        log.warning(
            "tracing.export",
            reason=reason,
            **details,
            hint="is the collector at OTEL_EXPORTER_OTLP_ENDPOINT up and reachable? The run is not affected; "
            "later trace export problems of this run are logged at debug level",
        )

    def close(self) -> None:
        with self._lock:
            self.closed = True


_delivery = _Delivery(EXPORT_BUDGET)


def _collector_address(environ: Mapping[str, str] = os.environ) -> str:
    """The configured endpoint as ` at http://host:port`, for messages (no user, password, path or query)."""
    from urllib.parse import urlsplit

    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
    try:
        parts = urlsplit(endpoint.strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return ""
    if not host:
        return ""
    host = f"[{host}]" if ":" in host else host
    return f" at {parts.scheme}://{host}" + (f":{port}" if port else "")


def _watched(exporter: SpanExporter, delivery: _Delivery) -> SpanExporter:
    """`exporter`, telling `delivery` of each batch the collector did not take."""
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class Watched(SpanExporter):
        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            result = exporter.export(spans)
            if result is not SpanExportResult.SUCCESS:
                delivery.problem(f"the trace collector{delivery.collector} did not take {len(spans)} span(s)")
            return result

        def shutdown(self) -> None:
            exporter.shutdown()

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return exporter.force_flush(timeout_millis)

    return Watched()


class _ToOurLog(logging.Handler):
    """The SDK's own log records (a collector that does not answer) go to `_delivery`, which turns them into our
    log events: with --log-format json, stderr stays JSON lines only, and the log scrubber sees them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            _delivery.sdk_said(record)
        except Exception:  # pragma: no cover - logging must never break the run
            self.handleError(record)


def _route_sdk_logs() -> None:
    sdk_log = logging.getLogger("opentelemetry")
    if not any(isinstance(h, _ToOurLog) for h in sdk_log.handlers):
        sdk_log.addHandler(_ToOurLog(logging.WARNING))
        sdk_log.propagate = False


def _exporter(name: str, timeout: float) -> SpanExporter | None:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout may carry --json
    if name != "otlp":
        log.warning("tracing.exporter_unknown", exporter=name, hint="OTEL_TRACES_EXPORTER: otlp, console or none")
        return None
    protocol = (
        os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or ""
    ).strip() or "http/protobuf"
    module = {
        "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
        "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    }.get(protocol)
    if module is None:
        log.warning("tracing.off", reason=f"OTLP protocol {protocol!r} is not supported", hint="use http/protobuf")
        return None
    try:
        from importlib import import_module

        # The timeout bounds one export request, retries included (the SDK's default is 10 s).
        exporter: SpanExporter = import_module(module).OTLPSpanExporter(timeout=timeout)
    except ImportError as exc:
        package = "opentelemetry-exporter-otlp-proto-" + ("grpc" if protocol == "grpc" else "http")
        log.warning(
            "tracing.off",
            reason=f"the OTLP {protocol} exporter is not installed ({exc})",
            hint=f"pip install {package}",
        )
        return None
    return exporter
