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
from fleetkit import cli, make_migrations, make_school, popen, registry_url, write_registry
from pgfixtures import fetch_sync

from orchestrator.devserver import DevServer
from orchestrator.errors import ConnectFailed
from orchestrator.fleet import FleetOptions, _State
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.settings import Budgets


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
