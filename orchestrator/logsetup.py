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

import structlog

from .target import REDACTED

_secrets: set[str] = set()
_json_lines = False  # --log-format json: stderr carries JSON lines only


def json_logs() -> bool:
    return _json_lines


class _Silent:
    """What a logger is when nobody configured logging: the library logs nowhere unless its host asks."""

    def bind(self, **_: Any) -> _Silent:
        return self

    def __getattr__(self, _: str) -> Any:
        return lambda *args, **kwargs: None


_SILENT = _Silent()


class _Logger:
    """A module's logger: structlog's, once the CLI or the embedding host has configured structlog; else silent
    (structlog's unconfigured default would print to the host's stdout)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __getattr__(self, method: str) -> Any:
        target = structlog.get_logger(self.name) if structlog.is_configured() else _SILENT
        return getattr(target, method)


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


def _stderr_logger(*_: Any) -> structlog.PrintLogger:
    # Resolved at every use, not once: tests (and embedding hosts) swap sys.stderr between runs.
    return structlog.PrintLogger(file=sys.stderr)


LOG_FORMATS = ("console", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


def configure_logging(fmt: str = "console", level: str = "warning") -> None:
    global _json_lines
    _json_lines = fmt == "json"
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
            scrub_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=_stderr_logger,
        cache_logger_on_first_use=False,
    )
