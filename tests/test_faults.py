"""Faults injected on a real server through a proxy (tests/faultproxy.py): replies lost at the worst moment, servers
that stop answering, interrupts. The database, read afterwards, is the judge: each result must say what really
happened, nothing is run twice, and no wait is endless."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from faultproxy import FaultProxy
from fleetkit import ROOT, make_migrations, popen, run_fleet_job, write_registry
from pgfixtures import (
    PG_PASSWORD,
    database_exists,
    execute_sync,
    fetch_sync,
    fetchval_sync,
    quote_ident,
    run_sync,
    spares_of,
    unique_db_name,
)

from orchestrator import engine, resolve, template
from orchestrator.command import Command
from orchestrator.connection import SessionSettings, session_group
from orchestrator.devserver import DevServer
from orchestrator.engine import EngineOptions
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.settings import Budgets
from orchestrator.source import MigrationSource, load_migrations
from orchestrator.target import DatabaseTarget

# Generous: a hang guard, not a measure of speed (a broken deadline would wait for minutes or forever).
HANG_GUARD_S = 120

COUNTER = {
    "1_create_counter.sql": "CREATE TABLE counter (n int NOT NULL);\nINSERT INTO counter VALUES (0);\n",
    "2_bump_counter.sql": "-- no-transaction\nUPDATE counter SET n = n + 1;\n",
}
INDEXED = {
    "1_create_a.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1), (2);\n",
    "2_index_a.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY a_id_idx ON a (id);\n",
    "3_create_b.sql": "CREATE TABLE b (id int);\n",
}


@pytest.fixture
def proxy(pg: DevServer) -> Iterator[FaultProxy]:
    with FaultProxy(pg.port) as fault_proxy:
        yield fault_proxy


def options(
    *, connect_timeout: float = 5.0, lock_timeout: float = 5.0, statement_timeout: float = 60.0, lock_wait: float = 10
) -> EngineOptions:
    session = SessionSettings(
        connect_timeout=connect_timeout, lock_timeout=lock_timeout, statement_timeout=statement_timeout
    )
    return EngineOptions(session=session, lock_wait=lock_wait)


def registry_through(proxy: FaultProxy, database: str, tmp_path: Path, password: str = "${PGPW}") -> Path:
    """A registry of one school, `s`, reached through the proxy."""
    url = f"postgresql://postgres:{password}@127.0.0.1:{proxy.port}/{database}"
    return write_registry(tmp_path / "t.yaml", [("s", url, [])])


def source_of(tmp_path: Path, files: dict[str, str]) -> MigrationSource:
    return load_migrations(make_migrations(tmp_path / "migrations", files))


def migrate(url: str, source: MigrationSource, opts: EngineOptions | None = None) -> DatabaseResult:
    async def guarded() -> DatabaseResult:
        with anyio.fail_after(HANG_GUARD_S):
            return await engine.migrate(DatabaseTarget.parse(url), source, opts or options())

    return run_sync(guarded)


def ledger(url: str) -> list[tuple[int, bool]]:
    return [
        (r["version"], r["success"])
        for r in fetch_sync(url, "SELECT version, success FROM _sqlx_migrations ORDER BY 1")
    ]


def counter(url: str) -> int:
    return int(fetchval_sync(url, "SELECT n FROM counter"))


# --- a -- no-transaction file whose reply is lost ---------------------------------------------------------------


def test_a_no_transaction_file_whose_reply_is_lost_ends_dirty_and_is_never_run_again(
    tmp_path: Path, db_url: str, db_name: str, proxy: FaultProxy
) -> None:
    migrations = make_migrations(tmp_path / "migrations", COUNTER)
    registry = registry_through(proxy, db_name, tmp_path)
    proxy.drop_after_reply("UPDATE counter")

    report = run_fleet_job(Command.MIGRATE, registry, migrations, budgets=Budgets(retries=2, retry_backoff=0.01))

    school = report.outcomes[0].result
    assert school.status is Status.DIRTY and not report.ok
    assert school.attempts == 1, "a file whose statement may have run is never retried automatically"
    assert school.error is not None and school.error.code == "dirty" and not school.error.retryable
    assert "2_bump_counter.sql" in school.error.message and "whether it took effect is unknown" in school.error.message
    hint = school.error.hint or ""
    assert "UPDATE _sqlx_migrations SET success = true WHERE version = 2" in hint
    assert "DELETE FROM _sqlx_migrations WHERE version = 2" in hint
    assert school.applied_versions == [1]
    assert counter(db_url) == 1
    assert ledger(db_url) == [(1, True), (2, False)]

    # The next run refuses, as every backend worker does, instead of running the file a second time.
    again = run_fleet_job(Command.MIGRATE, registry, migrations)
    assert again.outcomes[0].result.status is Status.DIRTY
    assert counter(db_url) == 1

    # The operator checked: it did take effect. Recorded so, the school is up to date and SQLx sees it applied.
    source = load_migrations(migrations)
    resolved = run_sync(resolve.mark_applied, DatabaseTarget.parse(db_url), source, 2, options())
    assert resolved.status is Status.APPLIED, resolved.error
    assert migrate(db_url, source).status is Status.UP_TO_DATE
    assert counter(db_url) == 1
    row = fetch_sync(db_url, "SELECT success, checksum FROM _sqlx_migrations WHERE version = 2")[0]
    assert row["success"] is True and bytes(row["checksum"]) == source.migrations[1].checksum


def test_an_index_built_concurrently_whose_reply_is_lost_is_dirty_not_already_exists_forever(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    # As after kill -9 during CREATE INDEX CONCURRENTLY: the server finished the index, no reply came back.
    source = source_of(tmp_path, INDEXED)
    proxy.drop_after_reply("CONCURRENTLY")

    result = migrate(proxy.url(db_url), source)

    assert result.status is Status.DIRTY
    assert fetchval_sync(db_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_id_idx'::regclass") is True
    assert ledger(db_url) == [(1, True), (2, False)]
    assert not fetchval_sync(db_url, "SELECT to_regclass('b') IS NOT NULL"), "nothing runs past the dirty file"

    # Every later run says exactly what to check (not 42P07 "already exists" and "run migrate again").
    rerun = migrate(db_url, source)
    assert rerun.status is Status.DIRTY and rerun.error is not None
    assert rerun.error.message.startswith("migration 2 is partially applied")
    assert "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass('a_id_idx')" in (rerun.error.hint or "")

    resolved = run_sync(resolve.mark_applied, DatabaseTarget.parse(db_url), source, 2, options())
    assert resolved.status is Status.APPLIED
    finished = migrate(db_url, source)
    assert finished.status is Status.APPLIED and finished.applied_versions == [3]
    assert ledger(db_url) == [(1, True), (2, True), (3, True)]


def test_a_lost_reply_while_marking_a_no_transaction_file_done_says_it_took_effect(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    source = source_of(tmp_path, COUNTER)
    proxy.drop_after_reply("SET success = TRUE")  # our UPDATE that turns the mark into SQLx's row

    result = migrate(proxy.url(db_url), source)

    # The UPDATE committed before its reply was lost: the ledger, read again, shows the file applied.
    assert result.status is Status.APPLIED, result.error
    assert result.applied_versions == [1, 2]
    assert any("lost the connection" in note for note in result.notes)
    assert ledger(db_url) == [(1, True), (2, True)]
    assert counter(db_url) == 1


def test_a_no_transaction_file_the_server_refuses_is_pending_again_and_the_hint_names_the_invalid_index(
    tmp_path: Path, db_url: str
) -> None:
    source = source_of(
        tmp_path,
        {
            "1_create_a.sql": "CREATE TABLE a (id int);\nINSERT INTO a VALUES (1), (1);\n",
            "2_unique_a.sql": "-- no-transaction\nCREATE UNIQUE INDEX CONCURRENTLY a_id_key ON a (id);\n",
        },
    )

    result = migrate(db_url, source)

    assert result.status is Status.FAILED and result.error is not None
    assert result.error.to_dict()["sqlstate"] == "23505" and not result.error.retryable
    assert "to_regclass('a_id_key')" in (result.error.hint or "") and "INVALID" in (result.error.hint or "")
    # As SQLx leaves it: no row, the version pending; the failed build left an INVALID index, as the hint says.
    assert ledger(db_url) == [(1, True)]
    assert fetchval_sync(db_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'a_id_key'::regclass") is False


# --- a transactional file whose reply is lost ----------------------------------------------------------------------


def test_a_lost_commit_reply_is_reported_applied_as_the_ledger_shows(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    source = source_of(tmp_path, {"1_create_a.sql": "CREATE TABLE a (id int);\n"})
    proxy.drop_after_reply("COMMIT")

    result = migrate(proxy.url(db_url), source)

    assert result.status is Status.APPLIED and result.error is None
    assert result.applied_versions == [1] and result.version_after == 1 and result.pending == []
    assert any("committing 1_create_a.sql" in note and "shows it applied" in note for note in result.notes)
    assert ledger(db_url) == [(1, True)]


def test_a_lost_commit_reply_mid_way_reports_what_committed_and_what_is_left(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    source = source_of(
        tmp_path, {"1_create_a.sql": "CREATE TABLE a (id int);\n", "2_create_b.sql": "CREATE TABLE b (id int);\n"}
    )
    proxy.drop_after_reply("COMMIT")

    result = migrate(proxy.url(db_url), source)

    assert result.status is Status.FAILED and result.error is not None
    assert result.error.code == "interrupted" and result.error.retryable  # the rest can safely be retried
    assert result.applied_versions == [1] and result.pending == [2] and result.version_after == 1
    assert ledger(db_url) == [(1, True)]


def test_a_reply_lost_before_commit_rolls_the_file_back_and_a_retry_applies_it(
    tmp_path: Path, db_url: str, db_name: str, proxy: FaultProxy
) -> None:
    migrations = make_migrations(tmp_path / "migrations", {"1_create_a.sql": "CREATE TABLE a (id int);\n"})
    registry = registry_through(proxy, db_name, tmp_path)
    proxy.drop_after_reply("CREATE TABLE a")  # the file ran in its transaction; COMMIT was never sent

    report = run_fleet_job(Command.MIGRATE, registry, migrations, budgets=Budgets(retries=2, retry_backoff=0.01))

    school = report.outcomes[0].result
    assert school.status is Status.APPLIED and school.attempts == 2
    assert school.applied_versions == [1]
    assert ledger(db_url) == [(1, True)]


# --- servers that stop answering ----------------------------------------------------------------------------------


def test_status_on_a_server_that_stops_answering_after_login_gives_up(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    source = source_of(tmp_path, COUNTER)
    proxy.freeze_on("pg_locks")  # the status query

    async def status() -> DatabaseResult:
        with anyio.fail_after(HANG_GUARD_S):
            opts = options(connect_timeout=1, lock_timeout=1)
            return await engine.status(DatabaseTarget.parse(proxy.url(db_url)), source, opts)

    result = run_sync(status)

    assert proxy.froze.is_set()
    assert result.status is Status.FAILED and result.error is not None and result.error.code == "interrupted"
    assert "stopped answering" in result.error.message


def test_migrate_on_a_server_that_freezes_mid_file_gives_up_and_keeps_nothing(
    tmp_path: Path, db_url: str, proxy: FaultProxy
) -> None:
    source = source_of(tmp_path, {"1_create_a.sql": "CREATE TABLE a (id int);\nSELECT 1;\n"})
    proxy.freeze_on("CREATE TABLE a")

    result = migrate(proxy.url(db_url), source, options(connect_timeout=1, lock_timeout=1, statement_timeout=1))

    assert result.status is Status.FAILED and result.error is not None
    assert result.error.code == "interrupted" and "stopped answering" in result.error.message
    proxy.resume()  # the held file reaches the server only after its session is gone: rolled back
    proxy.cut_all()
    assert not fetchval_sync(db_url, "SELECT to_regclass('a') IS NOT NULL")
    assert ledger(db_url) == []


# --- aborting the sessions of a run ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "frozen_on", "status", "rows"),
    [
        ({"1_create_a.sql": "CREATE TABLE a (id int);\n"}, "CREATE TABLE a", Status.FAILED, []),
        (COUNTER, "UPDATE counter", Status.DIRTY, [(1, True), (2, False)]),
    ],
    ids=["in-a-transaction", "no-transaction"],
)
def test_an_abort_ends_work_on_a_frozen_server_and_the_result_says_what_was_in_flight(
    tmp_path: Path,
    db_url: str,
    proxy: FaultProxy,
    files: dict[str, str],
    frozen_on: str,
    status: Status,
    rows: list[tuple[int, bool]],
) -> None:
    source = source_of(tmp_path, files)
    proxy.freeze_on(frozen_on)

    results: list[DatabaseResult] = []

    async def run_migrate() -> None:
        results.append(await engine.migrate(DatabaseTarget.parse(proxy.url(db_url)), source, options()))

    async def scenario() -> None:
        with anyio.fail_after(HANG_GUARD_S):
            async with session_group() as sessions, anyio.create_task_group() as tg:
                tg.start_soon(run_migrate)
                while not proxy.froze.is_set():
                    await anyio.sleep(0.02)
                await sessions.abort()

    run_sync(scenario)

    result = results[0]

    assert result.status is status and result.error is not None
    assert "aborted by an interrupt" in result.error.message
    proxy.cut_all()
    assert ledger(db_url) == rows


def test_one_sigterm_ends_the_cli_on_a_frozen_server_with_the_report_written(
    tmp_path: Path, db_url: str, db_name: str, proxy: FaultProxy
) -> None:
    migrations = make_migrations(tmp_path / "migrations", {"1_create_a.sql": "CREATE TABLE a (id int);\n"})
    registry = registry_through(proxy, db_name, tmp_path)
    proxy.freeze_on("CREATE TABLE a")
    report_path = tmp_path / "r.json"
    proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--report", str(report_path))  # fmt: skip
    try:
        assert proxy.froze.wait(timeout=HANG_GUARD_S), "the migration never reached the proxy"
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=HANG_GUARD_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise

    assert proc.returncode == 130, stderr
    report = json.loads(report_path.read_text())
    assert report["interrupted"] is True
    school = report["schools"][0]
    assert school["status"] == "failed" and school["error"]["code"] == "interrupted"
    assert "aborted by an interrupt" in school["error"]["message"]
    assert "running schools were aborted" in stdout
    proxy.cut_all()
    assert ledger(db_url) == [] and not fetchval_sync(db_url, "SELECT to_regclass('a') IS NOT NULL")


# --- logins -------------------------------------------------------------------------------------------------------


def test_a_refused_login_is_not_retried(tmp_path: Path, db_name: str, db_url: str, proxy: FaultProxy) -> None:
    migrations = make_migrations(tmp_path / "migrations", COUNTER)
    registry = registry_through(proxy, db_name, tmp_path, password=f"wrong-{PG_PASSWORD}")

    report = run_fleet_job(Command.MIGRATE, registry, migrations, budgets=Budgets(retries=2, retry_backoff=0.01))

    school = report.outcomes[0].result
    assert school.status is Status.DENIED and school.error is not None and school.error.code == "auth_failed"
    assert "password authentication failed" in school.error.message
    assert not school.error.retryable and school.attempts == 1
    assert proxy.logins == 1, "a wrong password is tried once: repeated failures can lock the account"


# --- onboarding from a spare: the rename's connection lost ---------------------------------------------------------


@pytest.mark.parametrize(
    "fault", ["cut while claiming the spare", "reply lost after the rename", "cut before the server sees the rename"]
)
def test_a_connection_lost_while_taking_a_spare_leaves_the_spare_or_the_school_and_a_rerun_finishes(
    pg: DevServer, proxy: FaultProxy, fault: str
) -> None:
    """A spare is claimed (taken over as scratch under a passing name), read, then renamed to the school with its
    comment cleared (`... IS NULL`): each step one transaction."""
    source = load_migrations(ROOT / "migrations")
    # The project's migrations call uuid_generate_v4(): the extension, as a registry naming it would give.
    opts = replace(options(connect_timeout=2, lock_timeout=2, statement_timeout=2), extensions=("uuid-ossp",))
    name = unique_db_name("tpl_fault")
    assert run_sync(template.keep_ready(DatabaseTarget.parse(pg.url()), name, source, opts, 1)).ok
    [spare] = spares_of(pg.url(), name)
    school = unique_db_name("from_spare_fault")
    creator = template.creator(name, source, opts)

    def provision(url: str) -> DatabaseResult:
        async def guarded() -> DatabaseResult:
            with anyio.fail_after(HANG_GUARD_S):
                return await engine.provision(DatabaseTarget.parse(url), source, opts, creator=creator)

        return run_sync(guarded)

    if fault == "cut while claiming the spare":
        proxy.freeze_on("RENAME TO")  # the first rename: the spare taken over as scratch
    elif fault == "reply lost after the rename":
        proxy.drop_after_reply("IS NULL")
    else:
        proxy.freeze_on("IS NULL")
    first = provision(proxy.url(pg.url(school)))
    proxy.cut_all()  # a held statement never reaches the server

    assert not first.ok and first.error is not None and first.error.code == "interrupted"
    renamed = fault == "reply lost after the rename"
    # The spare as it was; or the school (open to connections); or a claimed copy, scratch whose maker is gone.
    assert bool(run_sync(database_exists(pg.url(), school))) is renamed
    assert spares_of(pg.url(), name) == ([spare] if fault == "cut while claiming the spare" else [])
    again = provision(pg.url(school))
    assert again.ok, again.error
    assert again.status is (Status.UP_TO_DATE if renamed else Status.APPLIED)
    assert fetch_sync(pg.url(school), "SELECT version FROM _sqlx_migrations ORDER BY 1")[-1][0] == source.latest
    assert spares_of(pg.url(), name) == []
    claimed = "SELECT count(*) FROM pg_database WHERE datname LIKE 'orchestrator\\_taking\\_%'"
    assert fetchval_sync(pg.url(), claimed) == 0, "a claimed copy whose maker is gone is dropped by the rerun"
    run_sync(template.keep_ready(DatabaseTarget.parse(pg.url()), name, source, opts, 0))


# --- orchestrator template ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("retries", [0, 1])
def test_template_tries_a_server_again_after_a_lost_connection_within_retries(
    tmp_path: Path, pg: DevServer, proxy: FaultProxy, retries: int
) -> None:
    # The link dies right after the server answered the maintenance session's first query: a transient failure.
    # --retries 1 tries the server again (and the template is made); --retries 0 reports it.
    from orchestrator.job import Request, prepare
    from orchestrator.settings import SchoolSettings
    from orchestrator.template_fleet import keep_templates

    name = unique_db_name("tplretry")
    migrations = make_migrations(tmp_path / "migrations", {"1_create_a.sql": "CREATE TABLE a (id int);\n"})
    registry = registry_through(proxy, unique_db_name("unused"), tmp_path)
    proxy.drop_after_reply("shobj_description")
    budgets = Budgets(retries=retries, retry_backoff=0.01)
    request = Request(Command.TEMPLATE, registry=registry, migrations=migrations, spares=0,
                      school=SchoolSettings(template=name), budgets=budgets)  # fmt: skip
    try:
        os.environ["PGPW"] = PG_PASSWORD
        report = run_sync(keep_templates(prepare(request)))
        [server] = report.servers
        assert proxy.dropped.is_set()
        if retries:
            assert server.ok and server.attempts == 2, server
            assert fetchval_sync(pg.url(), "SELECT count(*) FROM pg_database WHERE datname = $1", name) == 1
        else:
            assert not server.ok and server.retryable and server.attempts == 1, server
            assert report.to_dict()["servers"][0]["attempts"] == 1
    finally:
        if fetchval_sync(pg.url(), "SELECT count(*) FROM pg_database WHERE datname = $1", name):
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false")
            execute_sync(pg.url(), f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
