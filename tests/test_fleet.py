"""Fleet rollouts on real servers: budgets, waves, the failure budget, resume, signals, two orchestrators at once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import anyio
import asyncpg
import pytest
from fleetkit import (
    BASIC,
    by_id,
    cli,
    fleet_registry,
    make_migrations,
    make_school,
    popen,
    registry_url,
    run_fleet_job,
    wait_for_slow_file,
    write_registry,
)
from pgfixtures import PG_PASSWORD, execute_sync, fetch_sync, fetchval_sync, run_sync

from orchestrator.devserver import DevServer, free_port
from orchestrator.job import Command, Request, prepare
from orchestrator.outcome import Status
from orchestrator.runner import plan_first, run
from orchestrator.settings import Budgets, FailureBudget, SchoolSettings
from orchestrator.sqlx import advisory_lock_key


def history(server: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(server.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def tables(server: DevServer, db: str) -> set[str]:
    rows = fetch_sync(server.url(db), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows}


def assert_consistent(server: DevServer, db: str) -> None:
    """Every applied version's effects exist, and no unapplied version's effects do."""
    applied = set(history(server, db)) if "_sqlx_migrations" in tables(server, db) else set()
    present = tables(server, db)
    assert (1 in applied) == ("log" in present)
    assert (2 in applied) == ("two" in present)
    assert (3 in applied) == ("three" in present)
    if "log" in present:
        notes = [r["note"] for r in fetch_sync(server.url(db), "SELECT note FROM log ORDER BY id")]
        expected = [n for v, n in ((2, "two"), (3, "three")) if v in applied]
        assert notes == expected, "each migration ran exactly once"


def test_a_mixed_fleet_over_two_servers_reports_each_school(tmp_path: Path, pg: DevServer, pg2: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    healthy = [make_school(pg, "ok_a"), make_school(pg2, "ok_b"), make_school(pg2, "ok_c")]
    failing = make_school(pg, "failing")
    execute_sync(pg.url(failing), "CREATE TABLE two (id int)")  # migration 2 will collide with it
    locked = make_school(pg2, "locked")
    tenants = [
        (f"s{i}", registry_url(srv, db), []) for i, (srv, db) in enumerate(zip([pg, pg2, pg2], healthy, strict=True))
    ]
    tenants += [
        ("failing", registry_url(pg, failing), []),
        ("locked", registry_url(pg2, locked), []),
        ("gone", f"postgresql://postgres:${{PGPW}}@127.0.0.1:{free_port()}/nowhere", []),
    ]
    registry = write_registry(tmp_path / "tenants.yaml", tenants)

    async def hold_lock_and_run() -> object:
        conn = await asyncpg.connect(pg2.url(locked))
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(locked))
            return await anyio.to_thread.run_sync(
                lambda: run_fleet_job(
                    Command.MIGRATE,
                    registry,
                    migrations,
                    school=SchoolSettings(lock_wait=1.0, connect_timeout=2.0),
                    budgets=Budgets(retries=1, retry_backoff=0.05),
                )
            )
        finally:
            await conn.close()

    report = anyio.run(hold_lock_and_run)
    results = by_id(report)  # type: ignore[arg-type]
    for i, (srv, db) in enumerate(zip([pg, pg2, pg2], healthy, strict=True)):
        assert results[f"s{i}"].status is Status.APPLIED
        assert history(srv, db) == [1, 2, 3]
    assert results["failing"].status is Status.FAILED
    assert results["failing"].error.sqlstate == "42P07"
    assert results["failing"].error.file == "2_slow_step.sql"
    assert history(pg, failing) == [1], "the failed file and its row rolled back together"
    assert fetch_sync(pg.url(failing), "SELECT note FROM log") == []
    assert results["locked"].status is Status.LOCKED
    assert results["locked"].attempts == 2, "a lock is transient: retried once"
    assert results["gone"].status is Status.UNREACHABLE
    assert results["gone"].attempts == 2
    assert not report.ok  # type: ignore[attr-defined]


def test_a_server_never_sees_more_sessions_than_its_budget(tmp_path: Path, pg: DevServer, pg2: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [(srv, make_school(srv, f"slow_budget_{i}")) for i in range(4) for srv in (pg, pg2)]
    registry = write_registry(
        tmp_path / "tenants.yaml", [(f"s{i}", registry_url(srv, db), []) for i, (srv, db) in enumerate(schools)]
    )
    peak = {pg.port: 0, pg2.port: 0}
    done = False

    async def watch() -> None:
        conns = {srv.port: await asyncpg.connect(srv.url()) for srv in (pg, pg2)}
        try:
            while not done:
                for port, conn in conns.items():
                    n = await conn.fetchval(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE application_name = 'orchestrator' AND datname LIKE 't_slow_budget%'"
                    )
                    peak[port] = max(peak[port], n)
                await anyio.sleep(0.05)
        finally:
            for conn in conns.values():
                await conn.close()

    async def main() -> None:
        nonlocal done
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch)
            await anyio.to_thread.run_sync(
                lambda: run_fleet_job(
                    Command.MIGRATE,
                    registry,
                    migrations,
                    budgets=Budgets(concurrency=10),
                    school=SchoolSettings(per_server=2),
                )
            )
            done = True

    anyio.run(main)
    assert peak == {pg.port: 2, pg2.port: 2}, "the budget was used, and never exceeded"


def test_the_failure_budget_halts_and_skips_the_rest(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"budget_{i}") for i in range(5)]
    for db in schools:
        execute_sync(pg.url(db), "CREATE TABLE two (id int)")
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    report = run_fleet_job(
        Command.MIGRATE,
        registry,
        migrations,
        budgets=Budgets(concurrency=1, max_failures=FailureBudget.parse("2")),
    )
    statuses = [o.result.status for o in report.outcomes]
    assert statuses.count(Status.FAILED) == 2
    assert statuses.count(Status.SKIPPED) == 3
    assert report.run.halted and "--max-failures 2" in report.run.halted
    skipped = [o.result for o in report.outcomes if o.result.status is Status.SKIPPED]
    assert all("max-failures" in r.notes[0] for r in skipped)
    assert not any(r.ok for r in skipped), "not attempted: never ok, so --resume picks them up"
    for db in schools[2:]:
        assert "_sqlx_migrations" not in tables(pg, db), "skipped schools were not touched"


def test_a_failing_canary_stops_the_rollout(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    canary, *rest = [make_school(pg, f"canary_{i}") for i in range(3)]
    execute_sync(pg.url(canary), "CREATE TABLE two (id int)")
    registry = write_registry(
        tmp_path / "t.yaml",
        [("canary", registry_url(pg, canary), ["canary"])]
        + [(f"s{i}", registry_url(pg, db), []) for i, db in enumerate(rest)],
    )
    report = run_fleet_job(Command.MIGRATE, registry, migrations)
    results = by_id(report)
    assert results["canary"].status is Status.FAILED
    assert results["s0"].status is results["s1"].status is Status.SKIPPED
    assert "canary wave failed" in (report.run.halted or "")
    assert all("_sqlx_migrations" not in tables(pg, db) for db in rest)


def test_resume_reruns_only_the_schools_that_did_not_end_ok(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    good, bad = make_school(pg, "resume_good"), make_school(pg, "resume_bad")
    execute_sync(pg.url(bad), "CREATE TABLE two (id int)")
    registry = write_registry(
        tmp_path / "t.yaml", [("good", registry_url(pg, good), []), ("bad", registry_url(pg, bad), [])]
    )
    first = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--report",
                str(tmp_path / "r1.json"), "--no-progress")  # fmt: skip
    assert first.returncode == 1
    assert "--resume" in first.stdout, "the output says how to redo only what failed"
    execute_sync(pg.url(bad), "DROP TABLE two")
    second = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--resume",
                 str(tmp_path / "r1.json"), "--report", str(tmp_path / "r2.json"), "--no-progress")  # fmt: skip
    assert second.returncode == 0, second.stdout + second.stderr
    schools = json.loads((tmp_path / "r2.json").read_text())["schools"]
    assert [(s["id"], s["status"]) for s in schools] == [("bad", "applied")]
    assert schools[0]["applied"] == [2, 3]


def test_reports_say_what_happened_to_each_school_without_secrets(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    ok, bad = make_school(pg, "report_ok"), make_school(pg, "report_bad")
    execute_sync(pg.url(bad), "CREATE TABLE three (id int)")
    registry = write_registry(
        tmp_path / "t.yaml",
        [("ok", registry_url(pg, ok), ["north"]), ("bad", registry_url(pg, bad), []),
         ("wrongpw", f"postgresql://postgres:{PG_PASSWORD}x@127.0.0.1:{pg.port}/{ok}_x", [])],
    )  # fmt: skip
    result = cli("--log-format", "json", "migrate", "--yes", "--registry", str(registry), "--migrations",
                 str(migrations), "--report", str(tmp_path / "r.json"), "--junit", str(tmp_path / "j.xml"))  # fmt: skip
    assert result.returncode == 1
    for text in (result.stdout, result.stderr, (tmp_path / "r.json").read_text(), (tmp_path / "j.xml").read_text()):
        assert PG_PASSWORD not in text
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["schema_version"] == 1
    assert data["summary"]["by_status"] == {"applied": 1, "failed": 1, "denied": 1}  # the wrong password
    schools = {s["id"]: s for s in data["schools"]}
    assert schools["ok"]["applied"] == [1, 2, 3] and schools["ok"]["version_after"] == 3
    assert schools["ok"]["tags"] == ["north"]
    assert [s["version"] for s in schools["ok"]["steps"]] == [1, 2, 3]
    bad_error = schools["bad"]["error"]
    assert (bad_error["code"], bad_error["sqlstate"], bad_error["file"], bad_error["line"]) == (
        "migration_failed", "42P07", "3_add_three.sql", 2,
    )  # fmt: skip
    assert schools["bad"]["version_before"] is None and schools["bad"]["version_after"] == 2
    cases = ET.parse(tmp_path / "j.xml").getroot().findall("testcase")
    assert sorted(c.get("name") for c in cases) == ["bad", "ok", "wrongpw"]
    assert len([c for c in cases if c.find("failure") is not None]) == 2
    # JSON log mode: stderr is JSON lines only (no progress lines, no human text), each event bound to its school.
    log_lines = [json.loads(line) for line in result.stderr.splitlines()]
    assert any(e.get("tenant") == "bad" and e["event"] == "school_result" and not e["ok"] for e in log_lines)


def test_invalid_input_exits_2_before_touching_anything(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "untouched")
    registry = write_registry(tmp_path / "t.yaml", [("a", registry_url(pg, db), []), ("a", registry_url(pg, "x"), [])])
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations))
    assert result.returncode == 2
    assert f"{registry}:" in result.stderr and "already used" in result.stderr
    good = write_registry(tmp_path / "g.yaml", [("a", registry_url(pg, db), [])])
    for args in (["--max-failures", "lots"], ["--shard", "2/2"], ["--tenant", "zz"], ["--lock-timeout", "soon"]):
        result = cli("migrate", "--yes", "--registry", str(good), "--migrations", str(migrations), *args)
        assert result.returncode == 2, args
        assert "what to do" in result.stderr or "hint" in result.stderr or "Error" in result.stderr
    assert "_sqlx_migrations" not in tables(pg, db)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_lets_running_schools_finish_and_skips_the_rest(
    tmp_path: Path, pg: DevServer, signum: signal.Signals
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"slow_sig_{signum.name.lower()}_{i}") for i in range(4)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--concurrency", "1",
                 "--report", str(tmp_path / "r.json"), "--no-progress")  # fmt: skip
    wait_for_slow_file(pg, proc, f"t_slow_sig_{signum.name.lower()}%")
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    statuses = [s["status"] for s in report["schools"]]
    assert report["interrupted"] is True
    assert statuses[0] == "applied", "the running school finished its migrations"
    assert "skipped" in statuses
    assert "interrupted: running schools finished; the rest were skipped" in stdout
    for db in schools:
        assert_consistent(pg, db)
    again = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert again.returncode == 0, again.stdout
    for db in schools:
        assert history(pg, db) == [1, 2, 3]
        assert_consistent(pg, db)


def test_a_second_signal_aborts_running_schools_and_the_summary_says_so(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(
        tmp_path / "migrations",
        {**BASIC, "2_slow_step.sql": "INSERT INTO log (note) VALUES ('two');\nCREATE TABLE two (id int);\n"
         "SELECT pg_sleep(60);\n"},
    )  # fmt: skip
    schools = [make_school(pg, f"abort_{i}") for i in range(2)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--concurrency", "1",
                 "--report", str(tmp_path / "r.json"), "--no-progress")  # fmt: skip
    deadline = time.monotonic() + 60
    while not fetchval_sync(
        pg.url(), "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' "
        "AND pid <> pg_backend_pid()"
    ):  # fmt: skip
        assert time.monotonic() < deadline and proc.poll() is None, "the slow migration never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)  # two signals at once could arrive as one
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 130, stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["aborted"] is True
    running, waiting = report["schools"]
    assert running["status"] == "failed" and running["error"]["code"] == "interrupted"
    assert "aborted by an interrupt" in running["error"]["message"]
    assert running["applied"] == [1]
    assert waiting["status"] == "skipped"
    assert "interrupted: running schools were aborted; the rest were skipped" in stdout
    assert history(pg, schools[0]) == [1]
    assert_consistent(pg, schools[0])


def test_two_orchestrators_at_once_apply_each_migration_exactly_once(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"twice_{i}") for i in range(3)] + [make_school(pg, "slow_twice")]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    args = ("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--json")
    procs = [popen(*args), popen(*args)]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    applied_by = {}
    for stdout, _ in outputs:
        for school in json.loads(stdout)["schools"]:
            for version in school["applied"]:
                assert (school["id"], version) not in applied_by, "applied twice"
                applied_by[(school["id"], version)] = True
    assert len(applied_by) == 3 * len(schools)
    for db in schools:
        assert history(pg, db) == [1, 2, 3]
        assert_consistent(pg, db)


def test_shards_split_a_rollout_between_processes(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"shard_{i}") for i in range(6)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    seen: list[str] = []
    for index in range(2):
        result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--shard",
                     f"{index}/2", "--json", "--no-progress")  # fmt: skip
        assert result.returncode == 0
        seen += [s["id"] for s in json.loads(result.stdout)["schools"]]
    assert sorted(seen) == sorted(f"s{i}" for i in range(6))


@pytest.mark.parametrize("command", ["status", "plan"])
def test_status_and_plan_show_a_version_histogram_and_write_nothing(
    tmp_path: Path, pg: DevServer, command: str
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    done, fresh = make_school(pg, f"{command}_done"), make_school(pg, f"{command}_fresh")
    registry = write_registry(
        tmp_path / "t.yaml", [("done", registry_url(pg, done), []), ("fresh", registry_url(pg, fresh), [])]
    )
    assert (
        cli(
            "migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--tenant", "done"
        ).returncode
        == 0
    )
    result = cli(command, "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 0, result.stdout
    assert "versions across the fleet" in result.stdout
    assert "3 ############################## 1 (latest)" in result.stdout.replace("  ", " ").replace("  ", " ")
    assert "_sqlx_migrations" not in tables(pg, fresh), f"{command} wrote nothing"


def test_status_reports_a_migration_in_progress_as_locked_naming_the_holder(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "status_locked")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [db])

    async def hold_and_check() -> subprocess.CompletedProcess[str]:
        conn = await asyncpg.connect(pg.url(db), server_settings={"application_name": "school-worker"})
        try:
            await conn.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(db))
            return await anyio.to_thread.run_sync(
                lambda: cli(
                    "status",
                    "--registry",
                    str(registry),
                    "--migrations",
                    str(migrations),
                    "--no-progress",
                    "--retries",
                    "0",
                )
            )
        finally:
            await conn.close()

    result = anyio.run(hold_and_check)
    assert result.returncode == 1
    assert "locked" in result.stdout and "school-worker" in result.stdout


def test_a_rollout_first_shows_the_histogram_and_what_would_run(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    done, fresh = make_school(pg, "preflight_done"), make_school(pg, "preflight_fresh")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [done, fresh])
    assert cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--tenant", "s0",
               "--target", "2").returncode == 0  # fmt: skip
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    plan_part = result.stdout.split("summary:")[0]
    assert "versions across the fleet" in plan_part
    assert "1 school(s) would get 1 migration(s): 3" in plan_part
    assert "1 school(s) would get 3 migration(s): 1, 2, 3" in plan_part
    assert history(pg, done) == history(pg, fresh) == [1, 2, 3]


def test_a_school_the_plan_pass_found_up_to_date_is_not_opened_again(tmp_path: Path, pg: DevServer) -> None:
    """An idempotent rollout costs one pass: the rollout trusts the plan pass's `up_to_date`. Shown by handing the
    run a plan pass that calls a pending school up to date: the rollout leaves it alone and says why."""
    migrations = make_migrations(tmp_path / "migrations")
    a, b = make_school(pg, "plan_reuse_a"), make_school(pg, "plan_reuse_b")
    registry = write_registry(tmp_path / "t.yaml", [("a", registry_url(pg, a), []), ("b", registry_url(pg, b), [])])
    os.environ["PGPW"] = PG_PASSWORD
    job = prepare(Request(command=Command.MIGRATE, registry=registry, migrations=migrations))
    planned = run_sync(plan_first(job))
    assert {o.tenant.id: o.result.status for o in planned.outcomes} == {"a": Status.PLANNED, "b": Status.PLANNED}
    for outcome in planned.outcomes:
        if outcome.tenant.id == "a":
            outcome.result.status = Status.UP_TO_DATE
    report = run_sync(run(job, planned=planned))
    results = {o.tenant.id: o.result for o in report.outcomes}
    assert results["b"].status is Status.APPLIED
    assert results["a"].status is Status.UP_TO_DATE
    assert "up to date in the read-only plan pass: not opened again" in results["a"].notes
    assert not fetchval_sync(pg.url(a), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"), "a was never opened"


def test_grace_bounds_how_long_a_running_migration_may_go_on_after_sigterm(tmp_path: Path, pg: DevServer) -> None:
    # A 60 s migration and --grace 1s: SIGTERM lets it run about a second, then aborts it (the default grace, 20 s,
    # would outlast the bound below); the file's transaction rolls back, the ledger keeps only what committed.
    migrations = make_migrations(
        tmp_path / "migrations",
        {**BASIC, "2_slow_step.sql": "INSERT INTO log (note) VALUES ('two');\nCREATE TABLE two (id int);\n"
         "SELECT pg_sleep(60);\n"},
    )  # fmt: skip
    [school] = [make_school(pg, "grace_1s")]
    registry = fleet_registry(tmp_path / "t.yaml", pg, [school])
    proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--grace", "1s",
                 "--report", str(tmp_path / "r.json"), "--no-progress")  # fmt: skip
    deadline = time.monotonic() + 60
    while not fetchval_sync(
        pg.url(), "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%pg_sleep(60)%' AND state = 'active' "
        f"AND pid <> pg_backend_pid() AND datname = '{school}'"
    ):  # fmt: skip
        assert time.monotonic() < deadline and proc.poll() is None, "the slow migration never started"
        time.sleep(0.05)
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    took = time.monotonic() - signalled

    assert proc.returncode == 130, stderr
    assert 1.0 <= took < 15.0, f"aborted {took:.1f}s after SIGTERM, with --grace 1s"
    assert "running ones get 1s to finish" in stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["aborted"] is True
    [running] = report["schools"]
    assert running["status"] == "failed" and running["error"]["code"] == "interrupted"
    assert history(pg, school) == [1]
    assert_consistent(pg, school)
    assert not fetchval_sync(pg.url(school), "SELECT to_regclass('two') IS NOT NULL"), "the cut file rolled back"


def test_grace_is_a_duration_checked_before_any_connection(tmp_path: Path) -> None:
    for bad in ("soon", "-1s"):
        result = cli("migrate", "--yes", "-D", "postgresql://u@127.0.0.1:1/x", "--grace", bad)
        assert result.returncode == 2 and "--grace" in result.stderr, (bad, result.stderr)


def test_exclude_tag_leaves_the_tagged_schools_untouched(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", {"1_create_a.sql": "CREATE TABLE a (id int);\n"})
    schools = [make_school(pg, f"xtag_{i}") for i in range(3)]
    registry = write_registry(tmp_path / "t.yaml", [
        ("open", registry_url(pg, schools[0]), ["north"]),
        ("paused", registry_url(pg, schools[1]), ["north", "paused"]),
        ("other", registry_url(pg, schools[2]), []),
    ])  # fmt: skip
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--tag", "north", "--exclude-tag", "paused", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert [s["id"] for s in json.loads((tmp_path / "r.json").read_text())["schools"]] == ["open"]
    assert history(pg, schools[0]) == [1]
    assert "_sqlx_migrations" not in tables(pg, schools[1]) and "_sqlx_migrations" not in tables(pg, schools[2])
