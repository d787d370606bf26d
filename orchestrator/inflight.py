"""A migration step whose outcome the client never saw: the connection was lost, or the run aborted, after its SQL
may have reached the server.

The engine records how far each step got (`Stage`). Afterwards the ledger, read again on a fresh session, says
what really happened (`judge`). When it cannot be read, the result says what is unknown and exactly what to check,
and is never retried automatically: a retry would report `up_to_date` for work it did not see, or run a
`-- no-transaction` file twice.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

import anyio
import asyncpg

from . import sqlx
from .connection import (
    SessionSettings,
    close_quietly,
    connection_lost,
    drop_if_unresponsive,
    is_connection_lost,
    is_no_answer,
    open_session,
)
from .errors import DatabaseError, Dirty, Interrupted
from .history import dirty_hint, effect_check, read_history
from .lock import migration_lock
from .outcome import DatabaseResult, MigrationStep, status_for
from .source import Migration
from .target import DatabaseTarget


class Stage(StrEnum):
    MARKING = "marking"  # no-transaction up: our success = false row was sent, the file was not
    RUNNING = "running"  # the file was sent (in a transaction: its COMMIT was not)
    COMMITTING = "committing"  # in a transaction: COMMIT was sent
    FINISHING = "finishing"  # no-transaction: the file completed; marking it done (down: deleting its row) was sent


Direction = Literal["up", "down"]


@dataclass
class Step:
    migration: Migration
    direction: Direction
    stage: Stage
    started_ns: int = field(default_factory=time.perf_counter_ns)

    @property
    def elapsed_s(self) -> float:
        return (time.perf_counter_ns() - self.started_ns) / 1e9

    @property
    def file(self) -> str:
        m = self.migration
        return m.filename if self.direction == "up" else (m.down_filename or m.filename)

    @property
    def sql(self) -> str:
        return self.migration.up_sql if self.direction == "up" else (self.migration.down_sql or "")

    @property
    def no_transaction(self) -> bool:
        m = self.migration
        return m.no_transaction if self.direction == "up" else m.down_no_transaction


@dataclass
class Progress:
    """Where the engine is: the step in flight, if any (set before its SQL is sent, cleared once it is recorded)."""

    step: Step | None = None

    def at(self, migration: Migration, direction: Direction, stage: Stage) -> None:
        self.step = Step(migration, direction, stage)

    def advance(self, stage: Stage) -> None:
        assert self.step is not None
        self.step.stage = stage


@dataclass(frozen=True)
class Verdict:
    recorded: bool  # the ledger shows the step done (up: a success row; down: no row)
    error: DatabaseError | None = None  # set when something is in doubt: the school's result must say it


# --- the verdict --------------------------------------------------------------------------------------------------


def judge(step: Step, ledger: dict[int, bool] | None, happened: str) -> Verdict:
    """What the ledger (version -> success, or None when it could not be read) says about `step`. `happened` says
    why the outcome was not seen, e.g. "lost the connection to x on h:5432"."""
    version = step.migration.version
    row = ledger.get(version) if ledger is not None else None
    if step.direction == "up":
        if row is True:
            return Verdict(recorded=True)
        if step.no_transaction:
            return Verdict(recorded=False, error=_unfinished_up(step, ledger, happened))
    else:
        if ledger is not None and version not in ledger:
            return Verdict(recorded=True)
        if step.no_transaction:
            return Verdict(recorded=False, error=_unfinished_down(step, happened))
    # In a transaction: before COMMIT the server rolls it back; after, only the ledger can tell.
    if step.stage is Stage.RUNNING or ledger is not None:
        return Verdict(recorded=False)
    return Verdict(recorded=False, error=_commit_unknown(step, happened))


def _unfinished_up(step: Step, ledger: dict[int, bool] | None, happened: str) -> DatabaseError | None:
    m, version = step.migration, step.migration.version
    if step.stage is Stage.MARKING:
        if ledger is not None and version not in ledger:
            return None  # the mark never committed and the file was not sent: nothing happened
        message = f"{happened} while recording {m.filename} as in progress; the file itself was not sent"
        hint = (
            f"if `SELECT success FROM _sqlx_migrations WHERE version = {version}` shows false, that row is ours and "
            f"the file never ran: `{sqlx.forget_sql(version)}`, then migrate again"
        )
        return Dirty(message, version=version, hint=hint) if ledger is not None else _unknown(message, hint)
    if step.stage is Stage.FINISHING:
        return Dirty(
            f"{happened} after {m.filename} completed outside a transaction, while marking it done: version {version} "
            "is still marked partially applied (success = false)",
            version=version,
            hint=f"it took effect (its reply arrived): `{sqlx.mark_applied_sql(version)}`, then migrate again",
        )
    return Dirty(
        f"{happened} while {m.filename} ran outside a transaction: whether it took effect is unknown, so version "
        f"{version} stays marked partially applied (success = false) instead of being run again",
        version=version,
        hint=dirty_hint(version, m),
    )


def _unfinished_down(step: Step, happened: str) -> DatabaseError:
    version, file = step.migration.version, step.file
    if step.stage is Stage.FINISHING:
        message = f"{happened} after {file} completed outside a transaction, while deleting its history row"
        hint = f"it took effect (its reply arrived): `{sqlx.forget_sql(version)}`"
    else:
        message = f"{happened} while {file} ran outside a transaction: whether it took effect is unknown"
        hint = (
            f"check {effect_check(step.sql)}. If it took effect: `{sqlx.forget_sql(version)}`; if not, revert "
            f"again. Until then version {version} is still recorded as applied"
        )
    return _unknown(message, hint)


def _commit_unknown(step: Step, happened: str) -> DatabaseError:
    version = step.migration.version
    done = "applied" if step.direction == "up" else "reverted"
    return _unknown(
        f"{happened} while committing {step.file}; whether it committed is unknown (the ledger was not read again)",
        f"`orchestrator status` shows whether version {version} is {done}; if it is not, run the command again",
    )


def _unknown(message: str, hint: str) -> DatabaseError:
    error = Interrupted(message, hint=hint)
    error.retryable = False  # a retry would run a file whose outcome is unknown, or report what it did not see
    return error


# --- settling the result -----------------------------------------------------------------------------------------


def is_interruption(exc: BaseException) -> bool:
    """The connection was lost (or stopped answering), or the run is being aborted: what the step in flight did
    is known only to the server."""
    return isinstance(exc, (Interrupted, anyio.get_cancelled_exc_class())) or is_connection_lost(exc)


async def settle(
    exc: BaseException,
    result: DatabaseResult,
    target: DatabaseTarget,
    settings: SessionSettings,
    lock_wait: float,
    progress: Progress,
    direction: Direction,
    still_to_do: Callable[[dict[int, bool]], list[int]],
) -> None:
    """After a lost connection or an abort (`exc`), make `result` say what the database holds, not what the last
    reply said: the ledger, read again on a fresh session, judges the step in flight. `still_to_do` names the
    versions the ledger shows left to apply (or revert). Raises the error the school ends with (an abort's
    cancellation is re-raised, the result filled in); returns only when nothing is left to do, e.g. when just the
    reply to the last COMMIT was lost."""
    was_aborted = isinstance(exc, anyio.get_cancelled_exc_class())
    # An abort is no time for new sessions: what was in flight is then judged without the ledger.
    ledger = None if was_aborted else await reread_ledger(target, settings, lock_wait)
    happened = (
        "aborted by an interrupt" if was_aborted else f"lost the connection to {target.database} on {target.server}"
    )
    step = progress.step
    verdict = judge(step, ledger, happened) if step is not None else Verdict(recorded=False)
    if step is not None and verdict.recorded:
        m, done = step.migration, "applied" if step.direction == "up" else "reverted"
        result.steps.append(MigrationStep(m.version, m.description, step.direction, step.elapsed_s))
        result.notes.append(f"{happened} while {step.stage.value} {step.file}; the ledger, read again, shows it {done}")
    left = None
    if ledger is not None:
        result.version_after = max((v for v, success in ledger.items() if success), default=None)
        left = still_to_do(ledger)
        if direction == "up":
            result.pending = left
    error = verdict.error
    if error is None and left != []:
        error = aborted(target, step.file if step else None) if was_aborted else lost(target, exc, left)
    if was_aborted:
        assert error is not None  # without the ledger, `left` is unknown
        result.status, result.error = status_for(error), error
        raise exc
    if error is not None:
        # For the fleet's breaker: whether the server stopped answering. Reading the ledger again is an answer.
        error.no_answer = ledger is None and is_no_answer(exc)
        raise error from None
    if not verdict.recorded:
        result.notes.append(f"{happened} after the last step; the ledger, read again, shows nothing left to do")


async def reread_ledger(target: DatabaseTarget, settings: SessionSettings, lock_wait: float) -> dict[int, bool] | None:
    """version -> success, read on a fresh read-only session once SQLx's lock is free (the lost session holds it
    until the server has ended it, committing or rolling back); None when that cannot be done in time."""
    quick = settings.bookkeeping_timeout
    try:
        conn = await open_session(target, settings, read_only=True)
    except DatabaseError:
        return None
    try:
        async with migration_lock(conn, target.database, lock_wait, timeout=quick):
            history = await read_history(conn, timeout=quick)
        return {version: row.success for version, row in (history or {}).items()}
    except (DatabaseError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        drop_if_unresponsive(conn, exc)  # no polite goodbye to a session that stopped answering: it waits too
        return None
    finally:
        with anyio.CancelScope(shield=True):
            await close_quietly(conn)


def lost(target: DatabaseTarget, exc: BaseException, left: list[int] | None) -> DatabaseError:
    """The error of a lost connection, saying what the ledger shows left to do."""
    error = exc if isinstance(exc, DatabaseError) else connection_lost(target, exc, "working")
    if left:
        error.message += f"; the ledger, read again, shows {len(left)} still to do ({', '.join(map(str, left))})"
    return error


def aborted(target: DatabaseTarget, file: str | None = None) -> Interrupted:
    """The error of a school whose work an interrupt aborted (nothing in doubt: see judge for what is)."""
    return Interrupted(
        f"aborted by an interrupt while {f'running {file}' if file else 'working'} on {target.database}",
        hint="an open transaction rolls back as its session ends; run the command again (or --resume the report)",
    )
