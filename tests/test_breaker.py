"""The per-server breaker: a dead server costs its schools one round of connection timeouts, not one each."""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
from faultproxy import FaultProxy
from fleetkit import cli, make_migrations, make_school, popen, registry_url, run_fleet_job, write_registry
from pgfixtures import fetch_sync, fetchval_sync, run_sync, with_database

from orchestrator import engine
from orchestrator.command import Command
from orchestrator.connection import Session, SessionSettings, connection_lost
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.errors import ConnectFailed, MigrationFailed
from orchestrator.fleet import FleetOptions, _State
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.settings import Budgets, Gate, SchoolSettings
from orchestrator.source import load_migrations
from orchestrator.target import DatabaseTarget


class SilentServer:
    """Accepts TCP connections and never answers: a frozen server, the worst kind of dead."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def test_a_dead_server_costs_one_round_of_timeouts_and_the_live_one_carries_on(
    tmp_path: Path, pg: DevServer, silent: SilentServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    live = [(f"live{i}", registry_url(pg, make_school(pg, f"breaker_{i}")), []) for i in range(4)]
    dead = [(f"dead{i}", f"postgresql://postgres@127.0.0.1:{silent.port}/school_{i}", []) for i in range(24)]
    registry = write_registry(tmp_path / "t.yaml", [*dead, *live])
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--connect-timeout", "2s", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1
    data = json.loads((tmp_path / "r.json").read_text())
    statuses = {s["id"]: s["status"] for s in data["schools"]}
    assert [statuses[f"live{i}"] for i in range(4)] == ["applied"] * 4
    assert {statuses[f"dead{i}"] for i in range(24)} == {"unreachable"}
    dead_server = f"127.0.0.1:{silent.port}"
    down = "server down: 3 connection attempts in a row failed (in the plan pass)"
    assert data["servers_down"] == {dead_server: down}
    # One round, in the read-only plan pass: the per-server workers' first attempts (no retries, no attempt for the
    # other schools), and the session in which that pass lists the server's databases (12 or more of its schools);
    # the rollout itself attempts none of them again.
    assert len(silent.accepted) == 4 + 1
    assert sum(1 for s in data["schools"] if s["id"].startswith("dead") and s["attempts"] == 0) == 24
    assert f"server down: {dead_server}" in result.stdout and "24 schools not attempted" in result.stdout


def test_a_signal_during_the_plan_pass_stops_the_rollout_before_any_write(
    tmp_path: Path, pg: DevServer, silent: SilentServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    live = make_school(pg, "plan_pass_signal")
    registry = write_registry(
        tmp_path / "t.yaml",
        [("dead", f"postgresql://postgres@127.0.0.1:{silent.port}/school_x", []), ("live", registry_url(pg, live), [])],
    )
    proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--connect-timeout", "30s", "--report", str(tmp_path / "r.json"))  # fmt: skip
    deadline = time.monotonic() + 30
    while not silent.accepted:  # the plan pass waits on the frozen server
        assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stdout + stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["interrupted"] is True
    assert {s["id"]: s["status"] for s in data["schools"]} == {"dead": "skipped", "live": "skipped"}
    assert not fetch_sync(pg.url(live), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'")


# Short limits: a stalled attempt costs its reply deadline (lock timeout + connect timeout), twice (the ledger is read
# again on a fresh session before the school's result is settled).
PER_SERVER = 2
QUICK = SchoolSettings(connect_timeout=1, lock_timeout=0.5, statement_timeout=2, per_server=PER_SERVER)


def ledger_exists(pg: DevServer, database: str) -> bool:
    url = with_database(pg.url(), database)
    return bool(fetchval_sync(url, "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"))


def spy_on_polite_closes(monkeypatch: pytest.MonkeyPatch, port: int) -> list[int]:
    """The ports of the sessions closed politely (a goodbye, then a wait for the server's) from now on."""
    ports: list[int] = []
    close = Session.close

    async def spied(self: Session, *, timeout: float | None = None) -> None:
        if self._addr[1] == port:  # type: ignore[attr-defined]
            ports.append(port)
        await close(self, timeout=timeout)

    monkeypatch.setattr(Session, "close", spied)
    return ports


@pytest.mark.parametrize("fault", ["silent-after-login", "silent-at-login"])
def test_a_server_that_stops_answering_trips_the_breaker_and_the_healthy_one_carries_on(
    tmp_path: Path, pg: DevServer, fault: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server accepts connections (and, in the first case, logins), then never answers: after
    --server-down-after attempts without an answer, its other schools end `unreachable` without waiting for their
    own deadlines, while the schools of a healthy server are migrated."""
    migrations = make_migrations(tmp_path / "migrations")
    stalled_dbs = [make_school(pg, f"stalled_{i}") for i in range(8)]
    healthy_dbs = [make_school(pg, f"healthy_{i}") for i in range(2)]
    with FaultProxy(pg.port) as proxy:
        stalled = [(f"stalled{i}", f"postgresql://postgres:${{PGPW}}@127.0.0.1:{proxy.port}/{db}", [])
                   for i, db in enumerate(stalled_dbs)]  # fmt: skip
        healthy = [(f"healthy{i}", registry_url(pg, db), []) for i, db in enumerate(healthy_dbs)]
        registry = write_registry(tmp_path / "t.yaml", [*stalled, *healthy])
        polite = spy_on_polite_closes(monkeypatch, proxy.port)
        if fault == "silent-after-login":
            proxy.stall_after_login()
        else:
            proxy.freeze()
        budgets = Budgets(server_down_after=3, retry_backoff=0.01)
        # No plan pass: the breaker is watched in the rollout itself (the plan pass trips it the same way, and the
        # rollout then starts with the server down: test_a_dead_server_costs_one_round_of_connection_attempts).
        report = run_fleet_job(
            Command.MIGRATE, registry, migrations, budgets=budgets, school=QUICK, gate=Gate(preflight=False)
        )
        logins = proxy.logins

    results = {o.tenant.id: o.result for o in report.outcomes}
    assert [results[f"healthy{i}"].status for i in range(2)] == [Status.APPLIED] * 2
    assert all(ledger_exists(pg, db) for db in healthy_dbs)
    stalled_server = f"127.0.0.1:{proxy.port}"
    assert report.run.servers_down == {stalled_server: "server down: 3 connection attempts in a row failed"}
    tried = [results[f"stalled{i}"] for i in range(8) if results[f"stalled{i}"].attempts > 0]
    # Only the schools already running when the breaker opened waited for a deadline: at most one round of the
    # per-server workers, and no more attempts than the threshold plus the ones already in flight then.
    assert len(tried) <= 3 and sum(r.attempts for r in tried) <= 3 + PER_SERVER - 1
    for r in tried:
        assert r.error is not None and r.error.no_answer
        if fault == "silent-after-login":  # the login worked; the first query got no reply
            assert r.error.code == "interrupted" and "stopped answering" in r.error.message
        else:
            assert r.error.code == "unreachable" and "TimeoutError" in r.error.message
    skipped = [results[f"stalled{i}"] for i in range(8) if results[f"stalled{i}"].attempts == 0]
    assert len(skipped) == 8 - len(tried)
    for r in skipped:
        assert r.status is Status.UNREACHABLE and r.error is not None
        assert r.error.message.startswith(f"server down: 3 connection attempts in a row failed on {stalled_server}")
    if fault == "silent-after-login":
        assert logins >= len(tried), "the stalled server accepted the logins"
        assert polite == [], "a session past its deadline is dropped: a polite close would wait for it again"
    assert not any(ledger_exists(pg, db) for db in stalled_dbs), "no query reached the stalled server"


def test_a_statement_cancelled_by_the_servers_statement_timeout_is_an_answer(tmp_path: Path, pg: DevServer) -> None:
    """A statement that runs long ends with the server's query_canceled (--statement-timeout), well before our
    client-side deadline: the server answered, so even a breaker that opens at the first silence stays closed."""
    migrations = make_migrations(
        tmp_path / "migrations", {"1_slow.sql": "CREATE TABLE t (id int);\nSELECT pg_sleep(5);\n"}
    )
    dbs = [make_school(pg, f"slow_stmt_{i}") for i in range(3)]
    registry = write_registry(tmp_path / "t.yaml", [(f"s{i}", registry_url(pg, db), []) for i, db in enumerate(dbs)])
    school = SchoolSettings(connect_timeout=2, statement_timeout=0.3, per_server=1)
    budgets = Budgets(server_down_after=1, retry_backoff=0.01)
    report = run_fleet_job(Command.MIGRATE, registry, migrations, budgets=budgets, school=school)

    assert report.run.servers_down == {}
    for outcome in report.outcomes:
        error = outcome.result.error
        assert outcome.result.status is Status.FAILED and outcome.result.attempts == 1
        assert isinstance(error, MigrationFailed) and error.sqlstate == "57014" and not error.no_answer
    for db in dbs:  # each file's transaction rolled back; the ledger table was created before it, empty
        assert fetchval_sync(with_database(pg.url(), db), "SELECT count(*) FROM _sqlx_migrations") == 0
        assert not fetchval_sync(with_database(pg.url(), db), "SELECT to_regclass('t') IS NOT NULL")


@pytest.mark.parametrize("answers_again", [False, True], ids=["still-silent", "answers-the-ledger-read"])
def test_a_passed_reply_deadline_counts_unless_the_server_answers_the_ledger_read(
    tmp_path: Path, pg: DevServer, db_url: str, answers_again: bool
) -> None:
    """After a reply deadline passed, the ledger is read again on a fresh session: if the server answers that,
    it is not down (the school's error does not count toward the breaker); if not, it does."""
    source = load_migrations(make_migrations(tmp_path / "migrations", {"1_create_a.sql": "CREATE TABLE a (id int);\n"}))
    settings = SessionSettings(connect_timeout=1, lock_timeout=1, statement_timeout=1)
    with FaultProxy(pg.port) as proxy:
        proxy.freeze_on("CREATE TABLE a")  # the file gets no reply; new connections hear nothing either

        def resume_on_reconnect() -> None:  # the fresh session for the ledger: let the server answer it
            proxy.froze.wait(30)
            frozen_at = proxy.connections  # the migrating session's (a proxy: the pinning probes came before it)
            while proxy.connections <= frozen_at:
                time.sleep(0.01)
            proxy.resume()

        watcher = threading.Thread(target=resume_on_reconnect, daemon=True)
        if answers_again:
            watcher.start()

        async def migrate() -> DatabaseResult:
            with anyio.fail_after(60):
                target = DatabaseTarget.parse(proxy.url(db_url))
                return await engine.migrate(target, source, EngineOptions(session=settings, lock_wait=10))

        result = run_sync(migrate)
        if answers_again:
            watcher.join(timeout=10)

    assert proxy.froze.is_set()
    error = result.error
    assert result.status is Status.FAILED and error is not None and error.code == "interrupted"
    assert "stopped answering" in error.message
    assert error.no_answer is not answers_again
    if answers_again:
        assert "the ledger, read again, shows 1 still to do" in error.message
    assert not fetchval_sync(db_url, "SELECT to_regclass('a') IS NOT NULL")
    assert fetchval_sync(db_url, "SELECT count(*) FROM _sqlx_migrations") == 0


def test_a_passed_reply_deadline_counts_as_no_answer_and_a_dropped_link_does_not() -> None:
    target = DatabaseTarget.parse("postgresql://u@h:1/x")
    assert connection_lost(target, TimeoutError(), "working").no_answer
    assert not connection_lost(target, ConnectionResetError("reset by peer"), "working").no_answer
    state = _State(total=10, options=FleetOptions(budgets=Budgets(server_down_after=2)))
    silent = DatabaseResult(
        database="x", server="h:1", status=Status.FAILED, error=connection_lost(target, TimeoutError(), "working")
    )
    state.observe("h:1", silent)
    state.observe("h:1", failed_connect())
    assert state.servers_down == {"h:1": "server down: 2 connection attempts in a row failed"}


def failed_connect() -> DatabaseResult:
    error = ConnectFailed("cannot connect to x on h:1: TimeoutError")
    return DatabaseResult(database="x", server="h:1", status=Status.UNREACHABLE, error=error)


def test_the_breaker_opens_after_n_failures_in_a_row_and_an_answer_closes_it() -> None:
    state = _State(total=10, options=FleetOptions(budgets=Budgets(server_down_after=3)))
    for _ in range(2):
        state.observe("h:1", failed_connect())
    assert "h:1" not in state.servers_down
    state.observe("h:1", DatabaseResult(database="x", server="h:1", status=Status.APPLIED))
    state.observe("h:1", failed_connect())
    state.observe("h:1", failed_connect())
    assert "h:1" not in state.servers_down, "a success in between resets the count"
    state.observe("h:1", failed_connect())
    assert state.servers_down["h:1"] == "server down: 3 connection attempts in a row failed"
    state.observe("h:1", DatabaseResult(database="x", server="h:1", status=Status.FAILED))
    assert "h:1" not in state.servers_down, "the server answered (a failed migration is an answer): closed"


def test_a_zero_threshold_never_opens_the_breaker() -> None:
    state = _State(total=10, options=FleetOptions(budgets=Budgets(server_down_after=0)))
    for _ in range(10):
        state.observe("h:1", failed_connect())
    assert state.servers_down == {}


def test_a_school_waiting_to_retry_when_the_breaker_opens_keeps_its_own_error() -> None:
    """School a got no answer and waits to retry; meanwhile b's silence opens the breaker. a is not retried, and
    its result still says what its attempt met, not "not attempted"."""
    from orchestrator.fleet import run_fleet
    from orchestrator.registry import Tenant

    target = DatabaseTarget.parse("postgresql://u@h:5432/x")

    async def work(tenant: Tenant) -> DatabaseResult:
        if tenant.id == "b":
            await anyio.sleep(0.05)  # a's retry waits at least retry_backoff (0.5 s)
        silent = connection_lost(target, TimeoutError(), "working")
        return DatabaseResult(database=tenant.id, server=tenant.server, status=Status.FAILED, error=silent)

    schools = [Tenant(name, DatabaseTarget.parse(f"postgresql://u@h:5432/{name}")) for name in ("a", "b")]
    options = FleetOptions(budgets=Budgets(server_down_after=2, retry_backoff=0.5), per_server={"h:5432": 2})
    run = anyio.run(run_fleet, schools, work, options)
    a, b = (o.result for o in run.outcomes)
    assert run.servers_down == {"h:5432": "server down: 2 connection attempts in a row failed"}
    assert (a.attempts, b.attempts) == (1, 1)
    assert a.error is not None and a.error.code == "interrupted" and "stopped answering" in a.error.message
    assert a.notes == ["not retried: server down: 2 connection attempts in a row failed on h:5432"]


def test_a_retried_school_reports_what_every_attempt_did() -> None:
    """Attempt 1 applied file 1, then lost its connection; attempt 2 applied files 2 and 3: the school's result
    says 1, 2 and 3 were applied, from the version it started at."""
    from orchestrator.errors import Interrupted
    from orchestrator.fleet import run_fleet
    from orchestrator.outcome import MigrationStep
    from orchestrator.registry import Tenant
    from orchestrator.target import DatabaseTarget

    calls = 0

    async def work(tenant: Tenant) -> DatabaseResult:
        nonlocal calls
        calls += 1
        if calls == 1:
            lost = Interrupted("lost the connection while running 2_b.sql")
            return DatabaseResult(
                database="x", server=tenant.server, status=Status.FAILED, error=lost, version_before=None,
                version_after=1, steps=[MigrationStep(1, "a", "up", 0.01)], created_database=True,
                notes=["created database x"],
            )  # fmt: skip
        return DatabaseResult(
            database="x", server=tenant.server, status=Status.APPLIED, version_before=1, version_after=3,
            steps=[MigrationStep(2, "b", "up", 0.01), MigrationStep(3, "c", "up", 0.01)],
        )  # fmt: skip

    school = Tenant("x", DatabaseTarget.parse("postgresql://u@h:5432/x"))
    options = FleetOptions(budgets=Budgets(retries=2, retry_backoff=0.001))
    run = anyio.run(run_fleet, [school], work, options)
    [outcome] = run.outcomes
    result = outcome.result
    assert (result.status, result.attempts) == (Status.APPLIED, 2)
    assert result.applied_versions == [1, 2, 3]
    assert (result.version_before, result.version_after) == (None, 3)
    assert result.created_database and "created database x" in result.notes
