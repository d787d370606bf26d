"""Running the service: uvicorn on the CLI's event loop choice, SIGTERM/SIGINT handled so the process exits 0."""

from __future__ import annotations

import logging
import math
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from ..eventloop import USE_UVLOOP
from ..logsetup import get_logger, register_secrets
from .app import make_app
from .state import Service

log = get_logger("orchestrator.serve")


class _ToOurLog(logging.Handler):
    """uvicorn's own log records (started, listening, shutting down, a port in use) as our log events: with
    --log-format json stderr stays JSON lines only, and the scrubber sees them."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = record.levelname.lower() if record.levelname.lower() in _LEVELS else "info"
            getattr(log, level)("serve.uvicorn", message=record.getMessage())
        except Exception:  # logging must never stop the service
            self.handleError(record)


_LEVELS = ("debug", "info", "warning", "error", "critical")


def _route_uvicorn_logs() -> None:
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = [_ToOurLog()]
        logger.propagate = False


class _Server(uvicorn.Server):
    @contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM / SIGINT: stop accepting, let running requests finish within the grace, then exit 0. uvicorn's own
        version raises the signal again once it is done, which would end the process by it (143), not with 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


def serve(service: Service, token: str, host: str, port: int) -> bool:
    """Serve until SIGTERM / SIGINT (running onboardings get the run's --grace). False when it could not start
    (e.g. the port is taken)."""
    grace = service.request.budgets.grace
    register_secrets([token])  # never logged; scrubbed anyway should a message ever carry it
    _route_uvicorn_logs()
    config = uvicorn.Config(
        make_app(service, token),
        host=host,
        port=port,
        loop="uvloop" if USE_UVLOOP else "asyncio",
        lifespan="on",
        log_config=None,  # our logging (logsetup): uvicorn's loggers go through the standard library's defaults
        access_log=False,  # a request line per onboarding is the service's own log event
        timeout_graceful_shutdown=math.ceil(grace),
        server_header=False,
    )
    server = _Server(config)
    try:
        server.run()
    except SystemExit:  # uvicorn's way of saying it could not start (its message is logged): our exit 1, not its 3
        return False
    return server.started
