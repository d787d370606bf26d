"""Through PgBouncer (real, started here): read-only commands work in any pool mode; commands that take SQLx's
lock are refused in transaction mode (the lock would stay on a pooled server connection), whatever the pooler's
scheduling, and work in session mode, through a plain TCP proxy, or with the school's `direct_url`."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest
from faultproxy import FaultProxy
from fleetkit import cli, make_migrations, make_school, run_fleet_job, write_registry
from pgbouncer import PgBouncer
from pgfixtures import PG_PASSWORD, database_exists, fetch, fetch_sync, fetchval_sync, run_sync, unique_db_name

from orchestrator import engine, pooler, sqlx
from orchestrator.command import Command
from orchestrator.connection import SessionSettings
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.settings import Budgets
from orchestrator.source import load_migrations
from orchestrator.target import DatabaseTarget

# A hang guard, not a measure of speed.
HANG_GUARD_S = 60
OPTIONS = EngineOptions(session=SessionSettings(connect_timeout=5, lock_timeout=5, statement_timeout=30), lock_wait=2)


@pytest.fixture
def transaction_pooler(pg: DevServer) -> Iterator[PgBouncer]:
    with PgBouncer(pg, PG_PASSWORD, "transaction") as bouncer:
        yield bouncer


@pytest.fixture
def session_pooler(pg: DevServer) -> Iterator[PgBouncer]:
    with PgBouncer(pg, PG_PASSWORD, "session") as bouncer:
        yield bouncer


def has_history(pg: DevServer, db: str) -> bool:
    return bool(fetch_sync(pg.url(db), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'"))


def test_read_only_commands_work_through_transaction_pooling(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_ro")
    url = transaction_pooler.url(PG_PASSWORD, db)
    for command in ("status", "plan"):
        result = cli(command, "-D", url, "--migrations", str(migrations), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        status = json.loads(result.stdout)["schools"][0]["status"]
        assert status == ("pending" if command == "status" else "planned")
    audit = cli("audit", "-D", url, "--migrations", str(migrations), "--no-schema", "--json")
    assert json.loads(audit.stdout)["schools"][0]["status"] == "drift", audit.stderr  # 3 pending: drift, read fine
    missing = cli("status", "-D", transaction_pooler.url(PG_PASSWORD, "no_such_school"), "--json")
    assert json.loads(missing.stdout)["schools"][0]["status"] == "no_database"
    assert PG_PASSWORD not in "".join(r.stdout + r.stderr for r in (result, audit, missing))


def test_migrate_through_transaction_pooling_is_refused_naming_the_pooler_and_writes_nothing(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_tx")
    result = cli(
        "migrate", "--yes", "-D", transaction_pooler.url(PG_PASSWORD, db), "--migrations", str(migrations), "--json"
    )
    assert result.returncode == 1, result.stdout + result.stderr
    school = json.loads(result.stdout)["schools"][0]
    assert school["status"] == "pooled"
    assert "connection pooler in transaction mode" in school["error"]["message"]
    assert "direct_url" in school["error"]["hint"]
    assert not has_history(pg, db), "nothing was written"


def test_migrate_through_session_pooling_works(tmp_path: Path, pg: DevServer, session_pooler: PgBouncer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_session")
    result = cli(
        "migrate", "--yes", "-D", session_pooler.url(PG_PASSWORD, db), "--migrations", str(migrations), "--json"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["schools"][0]["applied"] == [1, 2, 3]


def test_direct_url_carries_the_writes_while_url_stays_the_pooler(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_direct")
    registry = tmp_path / "t.yaml"
    write_registry(registry, [("school", transaction_pooler.url("${PGPW}", db), [])])
    pooled_only = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert pooled_only.returncode == 1 and "pooled" in pooled_only.stdout
    registry.write_text(
        registry.read_text() + f"    direct_url: postgresql://postgres:${{PGPW}}@127.0.0.1:{pg.port}/{db}\n"
    )
    migrated = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    status = cli("status", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--report", str(tmp_path / "s.json"))  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    [school] = json.loads((tmp_path / "s.json").read_text())["schools"]
    assert school["server"] == f"127.0.0.1:{transaction_pooler.port}", "status reads through the workers' url"
    assert school["status"] == "up_to_date"


def holders_of_sqlx_lock(pg: DevServer, db: str) -> list[int]:
    """The server processes holding SQLx's lock for `db` (read on the server itself)."""
    key = sqlx.advisory_lock_key(db)
    rows = fetch_sync(
        pg.url(db),
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1"
        " AND classid = ($1::bigint >> 32)::oid AND objid = ($1::bigint & 4294967295)::oid",
        key,
    )
    return sorted(row["pid"] for row in rows)


def migrate(url: str, migrations: Path) -> DatabaseResult:
    async def guarded() -> DatabaseResult:
        with anyio.fail_after(HANG_GUARD_S):
            return await engine.migrate(DatabaseTarget.parse(url), load_migrations(migrations), OPTIONS)

    return run_sync(guarded)


@pytest.mark.parametrize("warm", [0, 4], ids=["worker-only", "warm-pool"])
@pytest.mark.parametrize("round_robin", [True, False], ids=["round-robin", "lifo"])
def test_a_worker_holding_sqlx_lock_through_transaction_pooling_is_never_passed(
    tmp_path: Path, pg: DevServer, round_robin: bool, warm: int
) -> None:
    """A backend worker took SQLx's lock through the pooler (its server connection went back to the pool, lock
    and all). However the pooler hands connections out, and however many it has, migrate is refused and the
    worker's lock stays where it is: the lock is never taken on the worker's server connection (where it would
    succeed: it is reentrant). `warm`: server connections opened before the worker's lock."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_worker")
    with PgBouncer(pg, PG_PASSWORD, "transaction", round_robin=round_robin) as bouncer:
        url = bouncer.url(PG_PASSWORD, db)

        async def scenario() -> tuple[list[int], list[DatabaseResult]]:
            clients = [await asyncpg.connect(url, statement_cache_size=0) for _ in range(max(warm, 1))]
            try:
                async with anyio.create_task_group() as tg:  # `warm` server connections in the pool
                    for client in clients[:warm]:
                        tg.start_soon(client.execute, "SELECT pg_sleep(0.2)")
                await clients[0].execute("SELECT pg_advisory_lock($1)", sqlx.advisory_lock_key(db))  # the worker
                held = await anyio.to_thread.run_sync(holders_of_sqlx_lock, pg, db)
                results = []
                for _ in range(3):
                    with anyio.fail_after(HANG_GUARD_S):
                        target = DatabaseTarget.parse(url)
                        results.append(await engine.migrate(target, load_migrations(migrations), OPTIONS))
                return held, results
            finally:
                for client in clients:
                    await client.close()

        held, results = run_sync(scenario)
        assert len(held) == 1
        for result in results:
            assert result.status is Status.POOLED, result.error
            assert result.error is not None and "transaction mode" in result.error.message
        assert not has_history(pg, db), "nothing was applied"
        assert holders_of_sqlx_lock(pg, db) == held, "the worker's lock is where it was"


@pytest.mark.parametrize("mode", ["transaction", "session"])
def test_a_pool_of_one_is_refused_quickly_and_not_retried(tmp_path: Path, pg: DevServer, mode: str) -> None:
    """One server connection in the pool: the probes must not wait for the pooler's query_wait_timeout (here 10
    minutes). Transaction mode: a probe gets our server connection (proof). Session mode: a probe gets none (doubt:
    refused too). Never retried: the same URL fails the same way."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_one")
    with PgBouncer(pg, PG_PASSWORD, mode, pool_size=1, query_wait_timeout=600) as bouncer:
        registry = write_registry(tmp_path / "t.yaml", [("s", bouncer.url("${PGPW}", db), [])])
        started = time.monotonic()
        report = run_fleet_job(
            Command.MIGRATE, registry, migrations, budgets=Budgets(retries=2, retry_backoff=0.01, canary=0)
        )
        elapsed = time.monotonic() - started
    school = report.outcomes[0].result
    assert school.status is Status.POOLED, school.error
    assert school.attempts == 1, "not retried"
    assert elapsed < HANG_GUARD_S, "did not wait for the pooler's query_wait_timeout"
    assert not has_history(pg, db)


def test_migrate_through_round_robin_session_pooling_works(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_session_rr")
    with PgBouncer(pg, PG_PASSWORD, "session", round_robin=True) as bouncer:
        result = migrate(bouncer.url(PG_PASSWORD, db), migrations)
    assert result.status is Status.APPLIED, result.error
    assert result.applied_versions == [1, 2, 3]


@pytest.mark.parametrize(
    "command", [["provision"], ["migrate", "--create-missing"], ["bootstrap"], ["provision", "--template", "tpl"]]
)
def test_creating_a_school_through_transaction_pooling_is_refused_before_the_database_is_created(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer, command: list[str]
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = unique_db_name("pooled_new")
    url = transaction_pooler.url(PG_PASSWORD, db)
    result = cli(*command, "-D", url, "--migrations", str(migrations), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    school = json.loads(result.stdout)["schools"][0]
    assert school["status"] == "pooled", school
    assert not run_sync(database_exists(pg.url(), db)), "nothing was created"
    assert PG_PASSWORD not in result.stdout + result.stderr


def test_a_plain_tcp_proxy_is_no_pooler_the_probes_prove_it(tmp_path: Path, pg: DevServer) -> None:
    """The server sees the proxy's socket, not ours: the probes run (more logins through the proxy) and find our
    server process kept for us."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "proxied")
    with FaultProxy(pg.port) as proxy:
        result = migrate(proxy.url(pg.url(db)), migrations)
        logins = proxy.logins
    assert result.status is Status.APPLIED, result.error
    assert logins > 1, "the probes ran"


@pytest.mark.parametrize("via", ["tcp", "unix socket"])
def test_a_direct_session_opens_no_probe(tmp_path: Path, pg: DevServer, via: str) -> None:
    """The server sees our own socket: the lock's query says so, and no probe session is opened (one session in
    the school's database per migrate, as before)."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "direct")
    if via == "tcp":
        url = pg.url(db)
    else:
        socket_dir = fetchval_sync(pg.url(db), "SHOW unix_socket_directories")
        if not socket_dir:
            pytest.skip("the test server has no Unix socket (its path would be too long)")
        url = f"postgresql:///{db}?host={socket_dir}&port={pg.port}&user=postgres"

    def sessions() -> int:
        return int(fetchval_sync(pg.url(), "SELECT sessions FROM pg_stat_database WHERE datname = $1", db))

    before = sessions()
    result = migrate(url, migrations)
    assert result.status is Status.APPLIED, result.error
    assert sessions() - before == 1


def test_the_audit_builds_its_reference_on_the_direct_url_and_reads_the_school_through_the_pooler(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    """Building the expected schema writes (a scratch database, migrations under SQLx's lock): through the school's
    `direct_url`. Through the pooler it would be refused, and the school reported as drifted."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_audit")
    registry = tmp_path / "t.yaml"
    write_registry(registry, [("school", transaction_pooler.url("${PGPW}", db), [])])
    registry.write_text(
        registry.read_text() + f"    direct_url: postgresql://postgres:${{PGPW}}@127.0.0.1:{pg.port}/{db}\n"
    )
    migrated = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    audit = cli("audit", "--registry", str(registry), "--migrations", str(migrations), "--json")
    assert audit.returncode == 0, audit.stdout + audit.stderr
    [school] = json.loads(audit.stdout)["schools"]
    assert school["status"] == "up_to_date", school
    assert school["server"] == f"127.0.0.1:{transaction_pooler.port}", "the school is read through its url"


@pytest.mark.parametrize("round_robin", [True, False], ids=["round-robin", "lifo"])
def test_transaction_pooling_busy_with_workers_is_refused_every_time(
    tmp_path: Path, pg: DevServer, round_robin: bool
) -> None:
    """Workers keep the pool's server connections busy, ours included, while the probes run: whichever way the
    scheduling goes (a probe gets ours, or a worker used it meanwhile, which its activity shows), it is refused."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_busy")
    with PgBouncer(pg, PG_PASSWORD, "transaction", round_robin=round_robin) as bouncer:
        url = bouncer.url(PG_PASSWORD, db)

        async def scenario() -> list[DatabaseResult]:
            results = []

            async def worker() -> None:
                client = await asyncpg.connect(url, statement_cache_size=0)
                try:
                    while True:
                        async with client.transaction():
                            await client.execute("SELECT pg_sleep(0.005)")
                finally:
                    await client.close()

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(worker)
                await anyio.sleep(0.2)
                for _ in range(5):
                    with anyio.fail_after(HANG_GUARD_S):
                        results.append(
                            await engine.migrate(DatabaseTarget.parse(url), load_migrations(migrations), OPTIONS)
                        )
                tg.cancel_scope.cancel()
            return results

        results = run_sync(scenario)
    assert [r.status for r in results] == [Status.POOLED] * 5, [r.error for r in results]
    assert not has_history(pg, db)


def test_our_server_process_used_by_another_client_while_the_probes_run_is_refused(
    tmp_path: Path, pg: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The probes miss our server process X because a worker has it (it took X right after our count, LIFO), and
    gives it back before our session reads its pid again (which then finds X): only X's activity, read while the
    probes are pinned, shows another client on it. The worker is a real client, put in at those two moments."""
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_borrowed")
    with PgBouncer(pg, PG_PASSWORD, "transaction", pool_size=8) as bouncer:
        url = bouncer.url(PG_PASSWORD, db)
        worker: list[asyncpg.Connection] = []
        seen: list[tuple[int, int]] = []
        enter, leave = pooler._Probes.__aenter__, pooler._Probes.__aexit__

        async def worker_takes_ours(probes: pooler._Probes) -> pooler._Probes:
            [ours] = await fetch(
                pg.url(db),
                "SELECT pid FROM pg_stat_activity WHERE query LIKE '%pinning probe%' AND pid <> pg_backend_pid()",
            )
            client = await asyncpg.connect(url, statement_cache_size=0)
            await client.execute("BEGIN")
            seen.append((ours["pid"], await client.fetchval("SELECT pg_backend_pid()")))
            worker.append(client)
            return await enter(probes)

        async def worker_gives_it_back(probes: pooler._Probes, *exc: object) -> None:
            await leave(probes, *exc)
            for client in worker:
                await client.execute("COMMIT")
                await client.close()

        monkeypatch.setattr(pooler._Probes, "__aenter__", worker_takes_ours)
        monkeypatch.setattr(pooler._Probes, "__aexit__", worker_gives_it_back)
        result = migrate(url, migrations)
    [(ours, workers)] = seen
    assert workers == ours, "the worker had our server process"
    assert result.status is Status.POOLED, result.error
    assert not has_history(pg, db)
