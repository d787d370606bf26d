"""Fan one operation out over many schools: global and per-server budgets, canary waves, a failure budget,
retries, and a clean stop on Ctrl-C / SIGTERM. Sends no SQL: the work per school is a callable handed in.

Stopping (stopping.py): the first SIGINT/SIGTERM starts no new school and gives running ones the grace (--grace) to
finish; then (or at a second signal) they are aborted through the run's SessionGroup: their statements cancelled and
their connections closed, even on a frozen server. Either way the report is written and the process exits 130.

Scheduling: each server gets `per_server` workers pulling from that server's queue, and every worker needs one of
the `concurrency` global slots to run. So a server never sees more than `per_server` of our sessions, a busy
server never blocks the others (no head-of-line blocking), and the number of tasks is bounded by
servers x per_server, not by the size of the fleet.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import anyio

from .errors import Interrupted, Unreachable
from .logsetup import current_school, get_logger
from .outcome import DatabaseResult, Status
from .registry import Tenant
from .settings import BUILTIN, Budgets
from .stopping import Stop, stoppable

if TYPE_CHECKING:
    from tenacity import RetryCallState  # tenacity itself is imported only for a school that needs a retry

log = get_logger("orchestrator.fleet")

Work = Callable[[Tenant], Awaitable[DatabaseResult]]


@dataclass(frozen=True)
class FleetOptions:
    budgets: Budgets = field(default_factory=Budgets)
    per_server: Mapping[str, int] = field(default_factory=dict)  # server -> sessions at once (resolved per server)
    canary_tag: str = "canary"
    waves: bool = True  # read-only commands run in one wave
    halt_on: frozenset[Status] = frozenset()  # a school ending so stops new schools at once (whatever the budget)
    handle_signals: bool = False
    # Servers known down before the run starts (the plan pass's breaker): their schools are not attempted again.
    servers_down: Mapping[str, str] = field(default_factory=dict)

    def sessions_on(self, server: str) -> int:
        return self.per_server.get(server, BUILTIN.per_server)


@dataclass(slots=True)
class TenantOutcome:
    tenant: Tenant
    result: DatabaseResult
    wave: str


@dataclass
class FleetRun:
    outcomes: list[TenantOutcome]
    started_at: datetime
    finished_at: datetime
    halted: str | None = None  # why scheduling stopped early (failure budget, canary)
    interrupted: bool = False  # Ctrl-C / SIGTERM
    servers_down: dict[str, str] = field(default_factory=dict)  # server -> why its breaker opened (still open)
    aborted: bool = False  # schools still running after the interrupt were aborted (second signal, or grace over)

    @property
    def ok(self) -> bool:
        return not self.halted and not self.interrupted and all(o.result.ok for o in self.outcomes)

    @property
    def duration_s(self) -> float:
        return (self.finished_at - self.started_at).total_seconds()

    def __repr__(self) -> str:
        # Short on purpose: asyncio and anyio repr finished tasks (their result included) in cancel messages and
        # debug output, and a full repr of 100,000 outcomes costs seconds.
        return f"FleetRun(schools={len(self.outcomes)}, halted={self.halted!r}, interrupted={self.interrupted})"


Observer = Callable[[TenantOutcome], None]


@dataclass
class _State:
    total: int
    options: FleetOptions
    failures: int = 0
    halted: str | None = None
    stop: Stop = field(init=False)  # Ctrl-C / SIGTERM, with the run's grace
    results: dict[str, TenantOutcome] = field(default_factory=dict)
    failed_connects: dict[str, int] = field(default_factory=dict)  # server -> attempts in a row with no answer
    servers_down: dict[str, str] = field(default_factory=dict)  # server -> why its breaker is open

    def __post_init__(self) -> None:
        self.stop = Stop("schools", self.options.budgets.grace)

    def observe(self, server: str, result: DatabaseResult) -> None:
        """The per-server breaker: N attempts in a row that got no answer (connection refused or timed out, or a
        reply deadline passed: DatabaseError.no_answer) open it; any answer from the server closes it."""
        if result.error is None or not result.error.no_answer:
            self.failed_connects.pop(server, None)
            if self.servers_down.pop(server, None) is not None:
                log.info("fleet.server_up", server=server)
            return
        count = self.failed_connects[server] = self.failed_connects.get(server, 0) + 1
        threshold = self.options.budgets.server_down_after
        if threshold and count >= threshold and server not in self.servers_down:
            self.servers_down[server] = f"server down: {count} connection attempts in a row failed"
            log.info("fleet.server_down", server=server, failed_attempts=count)  # the summary says it (once)

    @property
    def accepting(self) -> bool:
        return not (self.halted or self.stop.requested)


def plan_waves(tenants: Sequence[Tenant], options: FleetOptions) -> list[tuple[str, list[Tenant]]]:
    if not options.waves:
        return [("all", list(tenants))]
    canaries = [t for t in tenants if options.canary_tag in t.tags]
    if not canaries and options.budgets.canary:
        canaries = list(tenants[: options.budgets.canary])
    chosen = {t.id for t in canaries}
    rest = [t for t in tenants if t.id not in chosen]
    return [(name, group) for name, group in (("canary", canaries), ("main", rest)) if group]


async def run_fleet(
    tenants: Sequence[Tenant], work: Work, options: FleetOptions, observer: Observer | None = None
) -> FleetRun:
    started = datetime.now(UTC)
    state = _State(total=len(tenants), options=options, servers_down=dict(options.servers_down))
    waves = plan_waves(tenants, options)
    async with stoppable(state.stop, signals=options.handle_signals):
        for name, group in waves:
            if not state.accepting:
                break
            await _run_wave(name, group, work, state, observer)
            failed = [o.tenant.id for o in state.results.values() if o.wave == name and not o.result.ok]
            if name == "canary" and failed and not state.halted:
                state.halted = f"canary wave failed ({', '.join(failed)}): the rest was not started"
                log.info("fleet.halted", reason=state.halted)
    outcomes = []
    wave_of = {t.id: name for name, group in waves for t in group}
    for t in tenants:
        outcome = state.results.get(t.id)
        if outcome is None:
            reason = "interrupted before it was started" if state.stop.requested else f"not started: {state.halted}"
            outcome = TenantOutcome(t, _skipped(t, reason), wave_of.get(t.id, "all"))
            if observer:
                observer(outcome)
        outcomes.append(outcome)
    return FleetRun(
        outcomes,
        started,
        datetime.now(UTC),
        halted=state.halted,
        interrupted=state.stop.requested,
        aborted=state.stop.aborted,
        servers_down=dict(state.servers_down),
    )


async def _run_wave(name: str, tenants: Sequence[Tenant], work: Work, state: _State, observer: Observer | None) -> None:
    queues: dict[str, deque[Tenant]] = {}
    for t in tenants:
        queues.setdefault(t.server, deque()).append(t)
    global_slots = anyio.CapacityLimiter(state.options.budgets.concurrency)
    log.info("fleet.wave", wave=name, schools=len(tenants), servers=len(queues))
    async with anyio.create_task_group() as tg:
        for server, queue in queues.items():
            for _ in range(min(state.options.sessions_on(server), len(queue))):
                tg.start_soon(_worker, name, queue, global_slots, work, state, observer)


async def _worker(
    wave: str,
    queue: deque[Tenant],
    global_slots: anyio.CapacityLimiter,
    work: Work,
    state: _State,
    observer: Observer | None,
) -> None:
    while queue and state.accepting:
        tenant = queue.popleft()
        async with global_slots:
            if not state.accepting:
                queue.appendleft(tenant)
                return
            try:
                result = await _with_retries(tenant, work, state)
            except anyio.get_cancelled_exc_class():
                outcome = TenantOutcome(tenant, _cancelled(tenant), wave)
                state.results[tenant.id] = outcome
                if observer:
                    observer(outcome)
                raise
        outcome = TenantOutcome(tenant, result, wave)
        state.results[tenant.id] = outcome
        if result.status in state.options.halt_on and not state.halted:
            why = result.error.message if result.error else result.status.value
            state.halted = f"{tenant.id} is {result.status.value} ({why}): no new school was started"
            log.info("fleet.halted", reason=state.halted)
        if not result.ok:
            state.failures += 1
            budget = state.options.budgets.max_failures
            if budget and state.failures >= budget.limit(state.total) and not state.halted:
                state.halted = f"{state.failures} schools failed, reaching --max-failures {budget}"
                log.info("fleet.halted", reason=state.halted)
        if observer:
            observer(outcome)


async def _with_retries(tenant: Tenant, work: Work, state: _State) -> DatabaseResult:
    attempts = 0
    earlier: DatabaseResult | None = None  # what the attempts so far did: the report tells the whole story

    async def attempt() -> DatabaseResult:
        nonlocal attempts, earlier
        down = state.servers_down.get(tenant.server)
        if down is not None:  # no connection attempt: the server is known to be down
            if earlier is not None:  # the breaker opened while this school waited to retry: it keeps its own story
                earlier.notes.append(f"not retried: {down} on {tenant.server}")
                return earlier
            return _server_down(tenant, down)
        attempts += 1
        if attempts > 1:
            log.info("school.retry", school=tenant.id, attempt=attempts)
        current_school.set(tenant.id)  # each worker is its own task: no reset needed between schools
        result = await work(tenant)
        state.observe(tenant.server, result)
        if earlier is not None:
            _carry_over(earlier, result)
        earlier = result
        return result

    def should_retry(result: DatabaseResult) -> bool:
        retryable = bool(result.error and result.error.retryable)
        return retryable and not state.stop.requested and tenant.server not in state.servers_down

    # Most schools succeed at once: build the retry machinery only for those that need it (it costs far more per
    # school than the scheduling itself, on fleets of 100,000).
    result = await attempt()
    if should_retry(result) and state.options.budgets.retries > 0:
        from tenacity import AsyncRetrying, retry_if_result, stop_after_attempt, wait_exponential_jitter

        retrying = AsyncRetrying(
            stop=stop_after_attempt(state.options.budgets.retries),
            wait=wait_exponential_jitter(
                multiplier=state.options.budgets.retry_backoff, max=30, jitter=state.options.budgets.retry_backoff
            ),
            retry=retry_if_result(should_retry),
            retry_error_callback=_last_result,
            sleep=anyio.sleep,
            before=_backoff_first,
        )
        result = await retrying(attempt)
    result.attempts = attempts
    return result


def _carry_over(earlier: DatabaseResult, result: DatabaseResult) -> None:
    """A retry's result also holds what the earlier attempts did (a file applied before the connection was lost
    stays applied): their steps and notes, and the version the school started at."""
    result.steps[:0] = earlier.steps
    result.notes[:0] = [note for note in earlier.notes if note not in result.notes]
    result.version_before = earlier.version_before
    result.created_database = result.created_database or earlier.created_database


async def _backoff_first(retry_state: RetryCallState) -> None:
    # The first attempt ran outside tenacity: wait before the first retry as tenacity would have.
    if retry_state.attempt_number == 1:
        wait = retry_state.retry_object.wait
        assert wait is not None
        await anyio.sleep(wait(retry_state))


def _last_result(retry_state: RetryCallState) -> DatabaseResult:
    """Out of attempts: the last result is the outcome (it carries the error), not an exception."""
    assert retry_state.outcome is not None
    result: DatabaseResult = retry_state.outcome.result()
    return result


def skipped_run(tenants: Sequence[Tenant], reason: str, observer: Observer | None = None) -> FleetRun:
    """A run in which nothing started (e.g. the rehearsal failed): every school `skipped` with the reason."""
    now = datetime.now(UTC)
    outcomes = [TenantOutcome(t, _skipped(t, reason), "all") for t in tenants]
    for outcome in outcomes:
        if observer:
            observer(outcome)
    return FleetRun(outcomes, now, now, halted=reason)


def _skipped(tenant: Tenant, reason: str) -> DatabaseResult:
    return DatabaseResult(
        database=tenant.target.database, server=tenant.server, status=Status.SKIPPED, notes=[reason], attempts=0
    )


def _server_down(tenant: Tenant, why: str) -> DatabaseResult:
    return DatabaseResult(
        database=tenant.target.database,
        server=tenant.server,
        status=Status.UNREACHABLE,
        error=Unreachable(
            f"{why} on {tenant.server}; {tenant.target.database} was not attempted",
            hint="bring the server back (or fix the network), then `--resume` the report: only these schools run",
        ),
        attempts=0,
    )


def _cancelled(tenant: Tenant) -> DatabaseResult:
    return DatabaseResult(
        database=tenant.target.database,
        server=tenant.server,
        status=Status.FAILED,
        error=Interrupted(
            "aborted by an interrupt while working on this school",
            hint="an open transaction rolls back as its session ends; `orchestrator status` shows where it stands",
        ),
    )
