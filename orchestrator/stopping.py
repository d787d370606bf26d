"""Ctrl-C and SIGTERM, for the runs that handle them (the CLI's fleet commands and `orchestrator template`).

The first signal starts nothing new. Running work then gets the run's grace (`Budgets.grace`, --grace): a school to
finish its migrations (a file cut half-way may leave work for a human), or, for work that is only worth something
once finished (a template build, a spare: `cancel_at_once`), the time to drop what it half-made, its work being
stopped at once. When the grace is over, or at a second signal, the run is aborted through its SessionGroup:
statements cancelled and connections closed, even on a frozen server. Either way the report is written and the CLI
exits 130.
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio

from .connection import SessionGroup, session_group
from .logsetup import get_logger

log = get_logger("orchestrator.fleet")


@dataclass
class Stop:
    """Whether and how a run is being stopped."""

    what: str  # what the run starts, for the log lines: "schools", "servers"
    grace: float  # seconds running work may go on after the first signal (settings.Budgets.grace)
    cancel_at_once: bool = False  # the first signal stops running work too (its clean-up then has the grace)
    requested: bool = False  # a signal came: start nothing new
    aborted: bool = False  # the run's sessions were aborted (second signal, or grace over)
    sessions: SessionGroup = field(default_factory=SessionGroup)
    work: anyio.CancelScope | None = None  # the run's work (see stoppable): cancelled as the last step of an abort

    async def abort(self, why: str) -> None:
        """Abort the running work: its sessions first (so each school's result says what was in flight, bounded
        even on a frozen server), then whatever is left of it (e.g. a connection attempt)."""
        if self.aborted:
            return
        self.aborted = True
        log.warning("fleet.aborting", reason=why, message=f"cancelling running {self.what} and closing connections")
        await self.sessions.abort()
        self.cancel_work()

    def cancel_work(self) -> None:
        if self.work is not None:
            self.work.cancel()


@asynccontextmanager
async def stoppable(stop: Stop, *, signals: bool) -> AsyncIterator[Stop]:
    """Run the block as `stop`'s work: its sessions in `stop.sessions`, the block in `stop.work`, and, with
    `signals`, SIGINT/SIGTERM watched for the block's length (an embedding host keeps its own handlers)."""
    async with session_group() as stop.sessions, anyio.create_task_group() as watcher:
        if signals:
            watcher.start_soon(_watch, stop)
        with anyio.CancelScope() as stop.work:
            yield stop
        watcher.cancel_scope.cancel()


async def _watch(stop: Stop) -> None:
    async with anyio.create_task_group() as grace:
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for signum in signals:
                if not stop.requested:
                    _first(stop, signum)
                    grace.start_soon(_abort_after, stop, stop.grace)
                else:
                    await stop.abort("a second interrupt")


def _first(stop: Stop, signum: int) -> None:
    stop.requested = True
    if stop.cancel_at_once:
        stop.cancel_work()
        message = (
            f"no new {stop.what} will start; running work stops now and gets {stop.grace:g}s to drop what it "
            "half-made, then its connections are closed (send again to close them now)"
        )
    else:
        message = (
            f"no new {stop.what} will start; running ones get {stop.grace:g}s to finish, then are aborted (send "
            "again to abort them now)"
        )
    log.warning("fleet.stopping", signal=signal.Signals(signum).name, message=message)


async def _abort_after(stop: Stop, seconds: float) -> None:
    await anyio.sleep(seconds)
    await stop.abort(f"still running {seconds:g}s after the interrupt")
