"""The service's warm state: the job prepared once (files loaded and linted, registry read), what it knows of each
server, the recent onboardings, and the two things every request goes through: onboarding one school and reading
one school's status, each a one-school job on the usual runner (`job.for_schools`, `runner.run`).

Kept warm so a request costs what its database work costs: the files are read and linted again only when a
migrations directory (or the registry file) changes, or on SIGHUP; the registry is read again for an id it does not
know; asyncpg's SCRAM derivations are memoised for the process (scram.py, installed by connection.py).
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import anyio

from ..command import Command
from ..errors import InvalidInput, RequestRefused, SchoolConflict, UnknownSchool, UnsafeMigrations, UsageError
from ..fleet import TenantOutcome
from ..job import Job, Request, for_schools, prepare
from ..logsetup import get_logger, register_secrets
from ..outcome import Status
from ..registry import Tenant, caller_tenant, check_tenant_id
from ..report import RunReport
from ..runner import run
from ..scratch import KeptSessions, keeping
from ..settings import SERVE_RECENT_ONBOARDINGS
from ..spare_seals import SpareSeals, remembering
from ..template import made_from
from .metrics import Metrics

log = get_logger("orchestrator.serve")

RETRY_REFUSED_S = 10.0  # a refused reload (bad files, an admin source that did not answer) is tried again after this


@dataclass(frozen=True)
class Onboarding:
    """One PUT's outcome, for the dashboard and /v1/fleet."""

    tenant: str
    at: datetime
    status: str
    path: str  # template.made_from: spare, template, files, existing
    ms: float

    def to_dict(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "at": self.at.isoformat(), "status": self.status, "path": self.path,
                "ms": round(self.ms, 3)}  # fmt: skip


@dataclass
class ServerHealth:
    """What the service last heard from one server (any session: an onboarding, a status, the survey, spares)."""

    last_answer_at: datetime | None = None
    error: str | None = None  # the last failure that got no answer, cleared by the next answer
    spares_ready: int = 0
    template: str | None = None


@dataclass
class Refused(Exception):
    """A request refused before or by the runner, nothing written: the error and the HTTP status it maps to."""

    error: InvalidInput
    status: int = 400


@dataclass
class Service:
    """Built from the command's request (a PROVISION over a registry); `load()` before serving."""

    request: Request
    survey_every: float
    metrics: Metrics = field(default_factory=Metrics)
    job: Job | None = None
    source_error: InvalidInput | None = None  # the last reload's refusal: PUTs are refused until the files are fixed
    extra: dict[str, Tenant] = field(default_factory=dict)  # schools PUT with a URL the registry does not list
    servers: dict[str, ServerHealth] = field(default_factory=dict)
    onboardings: deque[Onboarding] = field(default_factory=lambda: deque(maxlen=SERVE_RECENT_ONBOARDINGS))
    refill: anyio.Event = field(default_factory=anyio.Event)  # set when an onboarding used up a spare
    stamp: tuple[Any, ...] = ()
    kept: KeptSessions = field(default_factory=KeptSessions)
    seals: SpareSeals = field(default_factory=SpareSeals)  # the spares it made or read: taken unread if untouched
    _listed: dict[str, Tenant] = field(default_factory=dict)  # the registry's schools by id
    _identities: tuple[Job | None, dict[Any, str]] | None = None
    _reloading: anyio.Lock = field(default_factory=anyio.Lock)
    _claims: dict[str, list[Any]] = field(default_factory=dict)  # id -> [school given by URL, requests onboarding it]
    _school_locks: dict[str, list[Any]] = field(default_factory=dict)  # school -> [its lock, holders and waiters]
    _server_limits: dict[str, anyio.CapacityLimiter] = field(default_factory=dict)
    _total: anyio.CapacityLimiter | None = None
    _refused_at: float = 0.0  # time.monotonic() of the last refused reload
    _read_at: float = 0.0  # ... of the last reading of the files and the registry, refused or not

    # --- loading -----------------------------------------------------------------------------------------------

    def load(self) -> None:
        """Prepare the job (raises InvalidInput: the command exits 2 before serving)."""
        stamp = self._stamp()
        self._use(prepare(self.request), stamp)

    async def reload(self, *, force: bool = False) -> None:
        """Read the files and the registry again when they changed (or `force`: SIGHUP, an unknown id). A refused
        reload keeps the last good job for reads and refuses onboardings until it is fixed."""
        stamp = self._stamp()
        # A refusal is tried again after a while even if no file changed: an admin-database source may have been
        # down for a moment.
        force = force or (self.source_error is not None and time.monotonic() - self._refused_at > RETRY_REFUSED_S)
        if not force and stamp == self.stamp:
            return
        asked = time.monotonic()
        async with self._reloading:
            if (not force and stamp == self.stamp) or self._read_at > asked:  # read while this one waited
                return
            try:
                job = await anyio.to_thread.run_sync(prepare, self.request)
            except InvalidInput as error:
                self.source_error, self.stamp = error, stamp
                self._read_at = self._refused_at = time.monotonic()
                log.error("serve.reload_refused", code=error.code, error=error.message)
                return
            self._use(job, stamp)
            log.info("serve.reloaded", schools=len(job.tenants), latest_version=job.source.latest)

    def _use(self, job: Job, stamp: tuple[Any, ...]) -> None:
        self.job, self.stamp, self.source_error = job, stamp, None
        self._read_at = time.monotonic()
        register_secrets(s for t in job.tenants for s in t.target.secrets)
        self._listed = {t.id: t for t in job.tenants}  # a fleet of 100,000: one look-up per request, not a scan
        self.extra = {k: t for k, t in self.extra.items() if k not in self._listed}  # listed now: the registry wins
        for tenant in self.tenants:
            self.servers.setdefault(tenant.server, ServerHealth())

    def _stamp(self) -> tuple[Any, ...]:
        """What the files and the registry file look like (names, sizes, times): a change means a reload. The ctime
        and the inode too: `cp -p`, `rsync -t` and tar keep the mtime, and an edit may keep the size."""
        entries: list[Any] = []
        for path in (*self.request.migrations, self.request.registry):
            try:
                if path.is_dir():
                    with os.scandir(path) as it:
                        for e in it:
                            st = e.stat()
                            entries.append((str(path), e.name, *_looks(st)))
                else:
                    st = path.stat()
                    entries.append((str(path), *_looks(st)))
            except OSError:
                entries.append((str(path), None))
        return tuple(sorted(entries, key=repr))

    @property
    def ready_job(self) -> Job:
        if self.job is None:
            raise RuntimeError("Service.load() first")
        return self.job

    @property
    def tenants(self) -> list[Tenant]:
        """Every school the service knows: the registry's, then those PUT with a URL."""
        return [*self.ready_job.tenants, *self.extra.values()]

    # --- finding a school ---------------------------------------------------------------------------------------

    async def school(self, tenant_id: str, url: str | None) -> Tenant:
        """The school `tenant_id` names: the registry's entry (read again when it does not list the id), or, with a
        `url`, a school of the caller's, checked as a registry row is. Raises RequestRefused."""
        try:
            check_tenant_id(tenant_id)
        except InvalidInput as error:
            raise RequestRefused(error.message, hint=error.hint) from None
        known = self._known(tenant_id)
        if known is None and url is None:
            await self.reload(force=True)
            known = self._known(tenant_id)
            if known is None:
                raise UnknownSchool(
                    f"no school with id {tenant_id!r} in the registry",
                    hint='add it to the registry (or its admin source), or give its URL: {"url": "postgresql://..."}',
                )
        if url is None:
            assert known is not None
            return known
        try:
            given = caller_tenant(tenant_id, url, "the request body")
        except InvalidInput as error:
            raise RequestRefused(error.message, hint=error.hint) from None
        register_secrets(given.target.secrets)
        if known is not None:
            if given.target.identity not in {t.identity for t in known.targets}:
                raise SchoolConflict(
                    f"school {tenant_id} is {known.target.redacted} in the registry, not {given.target.redacted}",
                    hint="leave the URL out to use the registry's, or change the registry first",
                )
            return known
        admin = self.ready_job.registry_source
        if admin is not None and set(admin.places) & set(given.target.places):
            raise SchoolConflict(
                f"{given.target.redacted} is the registry's admin database (its `source:`), not a school's",
                hint="every school needs its own database",
            )
        other = next((o for o in map(self._databases().get, given.target.places) if o is not None), None)
        if other is not None:
            raise SchoolConflict(
                f"{given.target.redacted} is the database of school {other}", hint="every school needs its own database"
            )
        return given

    def _databases(self) -> dict[Any, str]:
        """Each known school's database (url and direct_url, by identity) -> its id."""
        if self._identities is None or self._identities[0] is not self.job:
            self._identities = (
                self.job,
                {p: s.id for s in self.ready_job.tenants for t in s.targets for p in t.places},
            )
        return {**self._identities[1], **{p: s.id for s in self.extra.values() for t in s.targets for p in t.places}}

    def _known(self, tenant_id: str) -> Tenant | None:
        return self._listed.get(tenant_id) or self.extra.get(tenant_id)

    # --- onboarding and status ------------------------------------------------------------------------------------

    async def onboard(self, tenant: Tenant) -> TenantOutcome:
        """`provision` for one school, one at a time per school, within the per-server and total budgets. Raises
        Refused when the files cannot be used (a reload refused, the safety gate, a split fleet): nothing written."""
        await self.reload()
        if self.source_error is not None:
            raise Refused(self.source_error, 503)
        job = self.ready_job
        started = time.perf_counter()
        with self._claimed(tenant):
            async with self._one_at_a_time(tenant), self._limits(tenant, job):
                try:
                    # One open maintenance session per server, not one per school; spares sealed (spare_seals.py).
                    with keeping(self.kept), remembering(self.seals):
                        report = await run(for_schools(job, [tenant], (), Command.PROVISION))
                except UnsafeMigrations as error:
                    raise Refused(error, 422) from None
                except InvalidInput as error:  # the files differ from what the template or the fleet holds
                    raise Refused(error, 409) from None
        outcome = report.outcomes[0]
        if tenant.id not in self._listed and outcome.result.status not in _NOT_THERE:
            self.extra[tenant.id] = tenant  # known from now on (GET, the survey), until the registry lists it
            self.servers.setdefault(tenant.server, ServerHealth())
        ms = (time.perf_counter() - started) * 1000
        path = made_from(outcome.result)
        record = Onboarding(tenant.id, datetime.now(UTC), outcome.result.status.value, path, ms)
        self.onboardings.appendleft(record)
        self.metrics.onboarded(record, ok=outcome.result.ok)
        self._heard(report)
        if path == "spare":
            self.used_spare(tenant.server)
        elif path == "template":  # no spare was left: make some
            self.refill.set()
        log.info("serve.onboarded", school=tenant.id, status=record.status, path=path, ms=round(ms, 1))
        return outcome

    async def status(self, tenant: Tenant) -> TenantOutcome:
        job = self.ready_job
        async with self._limits(tenant, job):
            report = await run(for_schools(job, [tenant], (), Command.STATUS))
        self._heard(report)
        return report.outcomes[0]

    async def survey(self) -> RunReport:
        """`status` over every school the service knows (the registry read again first, when it changed)."""
        await self.reload()
        job = self.ready_job
        report = await run(for_schools(job, self.tenants, (), Command.STATUS))
        self._heard(report)
        return report

    def used_spare(self, server: str) -> None:
        health = self.servers.setdefault(server, ServerHealth())
        health.spares_ready = max(0, health.spares_ready - 1)
        self.metrics.spares(server, health.spares_ready)
        self.refill.set()

    @contextmanager
    def _claimed(self, tenant: Tenant) -> Iterator[None]:
        """A school given by URL is held by its id and its database while it is onboarded: another request naming
        the same id with another database, or the same database under another id, is refused (409) instead of
        racing it. The same school twice is not (the second waits: `_one_at_a_time`)."""
        if tenant.id in self._listed:
            yield
            return
        mine = set(tenant.target.places)
        for other, (held, _) in self._claims.items():
            if (other == tenant.id) != bool(mine & set(held.target.places)):
                raise SchoolConflict(
                    f"school {other} is being onboarded on {held.target.redacted} right now",
                    hint="one school, one database: wait for that request, then check the id and the URL",
                )
        entry = self._claims.setdefault(tenant.id, [tenant, 0])
        entry[1] += 1
        try:
            yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._claims[tenant.id]

    @asynccontextmanager
    async def _one_at_a_time(self, tenant: Tenant) -> AsyncIterator[None]:
        """Two PUTs of one school at once: the second waits and finds it made (one database, two answers). A lock
        lives while someone holds or waits for it (a fleet's worth of them would otherwise pile up)."""
        key = tenant.target.database + "@" + tenant.server
        entry = self._school_locks.setdefault(key, [anyio.Lock(), 0])
        entry[1] += 1
        try:
            async with entry[0]:
                yield
        finally:
            entry[1] -= 1
            if not entry[1]:
                del self._school_locks[key]

    def _limits(self, tenant: Tenant, job: Job) -> _Limits:
        """The per-server session budget (as in `migrate`: the smallest `per_server` among its schools) and the
        total one (--concurrency), shared by every request."""
        limit = self._server_limits.get(tenant.server)
        if limit is None:
            per_server = job.per_server.get(tenant.server) or job.settings_for(tenant).per_server
            limit = self._server_limits[tenant.server] = anyio.CapacityLimiter(per_server)
        if self._total is None:
            self._total = anyio.CapacityLimiter(job.request.budgets.concurrency)
        return _Limits(limit, self._total)

    def _heard(self, report: RunReport) -> None:
        now = datetime.now(UTC)
        for o in report.outcomes:
            self.heard(o.result.server, now, None if o.result.error is None or not o.result.error.no_answer
                       else o.result.error.message)  # fmt: skip

    def heard(self, server: str, at: datetime, error: str | None) -> None:
        """An answer (error None) or a failure that got none, from a server of a school the service knows."""
        health = self.servers.get(server)
        if health is None:
            return
        if error is None:
            health.last_answer_at, health.error = at, None
        else:
            health.error = error


def _looks(st: os.stat_result) -> tuple[int, ...]:
    return st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size


# A school PUT with its URL whose server could not be reached safely: not remembered (its server is not the fleet's).
_NOT_THERE = frozenset({Status.UNREACHABLE, Status.POOLED})


@dataclass
class _Limits:
    server: anyio.CapacityLimiter
    total: anyio.CapacityLimiter

    async def __aenter__(self) -> None:
        await self.server.acquire()
        try:
            await self.total.acquire()
        except BaseException:
            self.server.release()
            raise

    async def __aexit__(self, *exc: object) -> None:
        self.total.release()
        self.server.release()


def service_request(request: Request, *, spares: int, survey_every: float) -> Request:
    """The command line's request as the service runs it: over a registry; one school per job, so no plan pass
    (a fleet's split is the engine's `modified` and the template's checksum rule for one school, as for `provision
    -D`; the safety gate still judges the files where they would run); signals are the server's. Raises UsageError."""
    if request.single:
        raise UsageError(
            "orchestrator serve works over a registry, not one database (-D or $DATABASE_URL)",
            hint="give --registry PATH (its schools, and any school PUT with its URL, are served)",
        )
    if spares < 0:
        raise UsageError(f"--spares {spares}: must not be negative", hint="0 keeps no ready copies")
    if survey_every < 1:
        raise UsageError("--survey-every must be at least 1s", hint="e.g. --survey-every 5m")
    return replace(request, gate=replace(request.gate, preflight=False), handle_signals=False, spares=spares)
