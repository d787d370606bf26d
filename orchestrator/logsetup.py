"""structlog set-up: console or JSON lines on stderr, each event bound to its school, secrets scrubbed.

Passwords are kept out of messages where they are made (DatabaseTarget.scrub); the scrubbing processor here is the
second line of defence: any known password that still reaches an event is replaced by ***.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from contextvars import ContextVar
from typing import Any

from .target import REDACTED

_secrets: set[str] = set()
_json_lines = False  # --log-format json: stderr carries JSON lines only


def json_logs() -> bool:
    return _json_lines


_LEVELS = {"debug": 10, "info": 20, "warning": 30, "warn": 30, "error": 40, "exception": 40, "critical": 50}
_min_level: int | None = None  # set by configure_logging (the CLI); None: the host decides, if it configured structlog
_pending: tuple[str, str] | None = None  # (format, level) not yet handed to structlog


def _ignore(*_: Any, **__: Any) -> None:
    return None


class _Logger:
    """A module's logger. structlog is imported only when an event is actually emitted (it costs ~0.1 s to import:
    a `status` run at the default level never pays it). Unless the CLI or the embedding host configured structlog,
    events go nowhere: the library logs nowhere unless its host asks (structlog's unconfigured default would print
    to the host's stdout)."""

    def __init__(self, name: str, context: dict[str, Any] | None = None) -> None:
        self.name = name
        self.context = context or {}

    def bind(self, **values: Any) -> _Logger:
        return _Logger(self.name, {**self.context, **values})

    def __getattr__(self, method: str) -> Any:
        level = _LEVELS.get(method)
        if level is None:
            raise AttributeError(method)
        if _min_level is not None and level < _min_level:
            return _ignore
        if _min_level is None and "structlog" not in sys.modules:
            return _ignore  # never imported: nobody configured it
        import structlog

        _apply_pending(structlog)
        if not structlog.is_configured():
            return _ignore
        logger = structlog.get_logger(self.name)
        return getattr(logger.bind(**self.context) if self.context else logger, method)


def get_logger(name: str) -> Any:
    return _Logger(name)


# The school a task is working on. One plain ContextVar, set once per school by the fleet (structlog's
# bound_contextvars costs four context operations per school, which shows on fleets of 100,000).
current_school: ContextVar[str | None] = ContextVar("orchestrator_school", default=None)


def add_school(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    school = current_school.get()
    if school is not None:
        event_dict.setdefault("school", school)
    return event_dict


def register_secrets(secrets: Iterable[str | None]) -> None:
    _secrets.update(s for s in secrets if s)


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        for secret in _secrets:
            value = value.replace(secret, REDACTED)
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_scrub(v) for v in value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    return value


def scrub_processor(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    for key, value in event_dict.items():
        event_dict[key] = _scrub(value)
    return event_dict


def _stderr_logger(*_: Any) -> Any:
    import structlog

    # Resolved at every use, not once: tests (and embedding hosts) swap sys.stderr between runs.
    return structlog.PrintLogger(file=sys.stderr)


LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(fmt: str = "console", level: str = "warning") -> None:
    """Remember the CLI's choice; structlog is set up when the first event at that level is emitted."""
    global _json_lines, _min_level, _pending
    _json_lines = fmt == "json"
    _min_level = _LEVELS[level]
    _pending = (fmt, level)


def _apply_pending(structlog: Any) -> None:
    global _pending
    if _pending is None:
        return
    fmt, level = _pending
    _pending = None
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            add_school,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            # JSON: a traceback becomes the event's `exception` string (the console renderer prints it itself).
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
