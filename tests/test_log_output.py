"""What the process writes: with --log-format json, JSON lines only (the rollout Job's own arguments, every command,
usage errors, a SIGTERM); in console mode, each school's outcome once; --quiet and --no-progress."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fleetkit import (
    ROOT,
    cli,
    fleet_registry,
    make_migrations,
    make_school,
    popen,
    registry_url,
    wait_for_slow_file,
    write_registry,
)
from pgfixtures import PG_PASSWORD, execute_sync

from orchestrator.devserver import DevServer, free_port

K8S = ROOT / "deploy" / "k8s"


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as a JSON object (fails on the first that is not one)."""
    events = []
    for line in text.splitlines():
        event = json.loads(line)
        assert isinstance(event, dict), line
        events.append(event)
    return events


def rollout_job_args(manifest: str, registry: Path, reports: Path) -> list[str]:
    """A rollout Job's container args, as shipped, pointed at this test's registry and reports directory (an
    Indexed Job's as its only shard)."""
    job = yaml.safe_load((K8S / manifest).read_text())
    args: list[str] = job["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--log-format=json" in args and "--no-progress" in args, "the Job as shipped"
    substitutions = {"/config/tenants.yaml": str(registry), "/reports": str(reports), "$(JOB_COMPLETION_INDEX)": "0",
                     "$(SHARD_COUNT)": "1"}  # fmt: skip
    for old, new in substitutions.items():
        args = [a.replace(old, new) for a in args]
    return args


def small_fleet(tmp_path: Path, pg: DevServer, label: str) -> tuple[Path, Path, list[str]]:
    """Four schools: `ok0`, `bad` (its third file fails), `ok1`, `ok2`; returns (migrations, registry, databases)."""
    migrations = make_migrations(tmp_path / "migrations")
    dbs = [make_school(pg, f"{label}{i}") for i in range(4)]
    execute_sync(pg.url(dbs[1]), "CREATE TABLE three (id int)")
    ids = ["ok0", "bad", "ok1", "ok2"]
    schools = [(i, registry_url(pg, db), []) for i, db in zip(ids, dbs, strict=True)]
    registry = write_registry(tmp_path / "t.yaml", schools)
    return migrations, registry, dbs


@pytest.mark.parametrize("manifest", ["rollout-job.yaml", "rollout-indexed-job.yaml"])
def test_the_rollout_jobs_own_arguments_log_json_lines_only(tmp_path: Path, pg: DevServer, manifest: str) -> None:
    migrations, registry, _ = small_fleet(tmp_path, pg, "jobjson")
    args = [*rollout_job_args(manifest, registry, tmp_path), "--migrations", str(migrations)]
    done = cli(*args)
    assert done.returncode == 1, done.stderr  # `bad` failed, and 2% of 4 halts at the first failure
    assert done.stdout == "", "nothing human on stdout"
    events = json_lines(done.stderr)
    names = [e["event"] for e in events]
    for name in ("plan", "preflight", "summary", "wrote", "next_steps"):
        assert name in names, name
    plan = next(e for e in events if e["event"] == "plan")
    assert (plan["schools"], plan["servers"], plan["migrations"], plan["latest"]) == (4, 1, 3, 3)
    results = [e for e in events if e["event"] == "school_result"]
    assert sorted(e["tenant"] for e in results) == ["bad", "ok0", "ok1", "ok2"], "one result per school"
    bad = next(e for e in results if e["tenant"] == "bad")
    assert (bad["level"], bad["status"], bad["code"], bad["version_before"], bad["version_after"]) == (
        "warning", "failed", "migration_failed", None, 2,
    )  # fmt: skip
    assert "already exists" in bad["message"] and bad["hint"]
    assert "database.failed" not in names, "the engine's own line is debug: the outcome is said once"
    summary = next(e for e in events if e["event"] == "summary")
    assert summary["ok"] is False and summary["counts"]["failed"] == 1 and "halted" in summary
    outputs = [a.split("=", 1)[1] for a in args if a.startswith(("--report=", "--junit="))]
    assert sorted(e["path"] for e in events if e["event"] == "wrote") == sorted(outputs) and len(outputs) == 2

    # --json with JSON logs: stdout holds exactly the report, stderr JSON lines only.
    again = cli(*args, "--json", "--report", str(tmp_path / "again.json"))
    assert again.returncode == 1
    report = json.loads(again.stdout)
    assert {s["id"]: s["status"] for s in report["schools"]}["bad"] == "failed"
    assert report == json.loads((tmp_path / "again.json").read_text())
    json_lines(again.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ["--log-format", "json", "migrate", "--bogus"],
        ["migrate", "--bogus", "--log-format=json"],  # given after the command, after the mistake
        ["--log-format=json", "revert"],  # a missing option
        ["--log-format=json", "migrate", "--concurrency", "lots"],  # a bad value
        ["--log-format=json", "lint", "--format", "xml"],
        ["--log-format=json", "new"],  # a missing argument
        ["--log-format=json", "nosuchcommand"],
        ["--log-format=json", "migrate", "--max-failures", "lots", "--registry", "none.yaml"],  # our own check
        ["--log-format=json", "--log-level", "loud", "status"],
    ],
    ids=[
        "flag",
        "flag-after",
        "missing-option",
        "bad-value",
        "bad-choice",
        "missing-argument",
        "command",
        "ours",
        "log-level",
    ],
)
def test_usage_errors_are_one_json_line_with_json_logs(args: list[str]) -> None:
    done = cli(*args)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    [event] = json_lines(done.stderr)
    assert event["event"] == "invalid_input" and event["level"] == "error"
    assert event["code"] and event["message"] and event["hint"]


COMMANDS = ["migrate", "plan", "status", "bootstrap", "provision", "revert", "resolve", "audit", "template", "lint",
            "new"]  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_rejects_a_mistyped_flag_in_json(command: str) -> None:
    done = cli(command, "--log-format", "json", "--no-such-flag")
    assert done.returncode == 2
    [event] = json_lines(done.stderr)
    assert event["event"] == "invalid_input" and "--no-such-flag" in event["message"]


def test_every_command_logs_json_lines_only(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    dbs = [make_school(pg, f"everyjson{i}") for i in range(2)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, dbs)
    fleet = ["--registry", str(registry), "--migrations", str(migrations)]
    runs = {
        "bootstrap": ["bootstrap", *fleet, "--yes"],
        "plan": ["plan", *fleet],
        "migrate": ["migrate", *fleet, "--yes"],
        "status": ["status", *fleet],
        "audit": ["audit", *fleet, "--no-schema"],
        "revert": ["revert", *fleet, "--target", "1", "--yes", "--dry-run"],
        "resolve": ["resolve", *fleet, "--applied", "2", "--yes"],
        "provision": ["provision", *fleet, "--yes"],
        "template": ["template", *fleet, "--template", "everyjson_tpl", "--spares", "0", "--yes"],
        "lint": ["lint", str(migrations)],
        "new": ["new", "--migrations", str(tmp_path / "new"), "add", "books"],
        "single": ["status", "-D", pg.url(dbs[0]), "--migrations", str(migrations)],
        "version": ["--version"],
    }
    for name, args in runs.items():
        done = cli("--log-format=json", *args)
        assert done.returncode in (0, 1), (name, done.stdout, done.stderr)
        assert done.stdout == "", (name, done.stdout)
        events = json_lines(done.stderr)
        assert events, name
        names = {e["event"] for e in events}
        if name not in ("new", "version"):
            assert "summary" in names, (name, names)
        if name in ("plan", "migrate", "status", "bootstrap", "resolve", "provision", "audit", "single"):
            assert "school_result" in names, (name, names)


def test_a_sigterm_in_json_mode_is_json_too(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"slow_jsonterm_{i}") for i in range(3)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    proc = popen("--log-format=json", "migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations),
                 "--concurrency", "1")  # fmt: skip
    wait_for_slow_file(pg, proc, "t_slow_jsonterm%")
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert stdout == ""
    events = json_lines(stderr)
    names = [e["event"] for e in events]
    assert "fleet.stopping" in names
    assert next(e for e in events if e["event"] == "summary")["interrupted"] is True
    assert sorted(e["tenant"] for e in events if e["event"] == "school_result") == ["s0", "s1", "s2"]


# Console mode: each school's outcome once.


def lines_naming(text: str, school: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(rf"(?<![\w-]){re.escape(school)}(?![\w-])", line)]


def test_a_failure_is_said_once(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, _ = small_fleet(tmp_path, pg, "onceonly")
    for extra in ([], ["--no-progress"]):
        done = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), *extra)
        assert done.returncode == 1
        output = done.stdout + done.stderr
        assert len(lines_naming(output, "bad")) == 1, (extra, output)
        assert output.count('relation "three" already exists') == 1, (extra, output)
        assert output.count("the database has changes the history does not record") == 1, "its hint, once"
        for school in ("ok0", "ok1", "ok2"):
            assert len(lines_naming(output, school)) == 1, (extra, school, output)
        assert "database.failed" not in output


def test_a_halted_run_says_each_skipped_school_once(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, _ = small_fleet(tmp_path, pg, "halted")
    done = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--max-failures", "1",
               "--concurrency", "1", "--canary", "0")  # fmt: skip
    assert done.returncode == 1
    output = done.stdout + done.stderr
    for school in ("ok1", "ok2"):
        [line] = lines_naming(output, school)
        assert "skipped" in line
    assert output.count("halted:") == 1 and "fleet.halted" not in output, output


def test_a_plan_pass_refusal_carried_into_the_rollout_is_said_once(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db, other = make_school(pg, "carried"), make_school(pg, "carried_wrongpw")
    wrong = f"postgresql://postgres:{PG_PASSWORD}x@127.0.0.1:{pg.port}/{other}"
    registry = write_registry(tmp_path / "t.yaml", [("good", registry_url(pg, db), []), ("wrongpw", wrong, [])])
    done = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    [line] = lines_naming(output, "wrongpw")
    assert "not tried again" in line or "password" in line, output
    assert len(lines_naming(output, "good")) == 1, output


def test_quiet_shows_only_what_is_not_ok(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, _ = small_fleet(tmp_path, pg, "quiet")
    base = ["migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations)]
    done = cli(*base, "--quiet")
    assert done.returncode == 1
    output = done.stdout + done.stderr
    lines = output.splitlines()
    assert lines[0].startswith("bad (") and "failed" in lines[0], output
    assert lines[1].startswith("  -> the object already exists"), "the school's hint"
    assert lines[2].startswith("summary: 4 schools: 3 applied, 1 failed"), output
    assert len(lines) == 3, output  # no plan, no progress, no ok school, no next steps
    # --json's stdout is the report, --quiet or not; the human output went to stderr.
    quiet = cli(*base, "--quiet", "--json")
    loud = cli(*base, "--json")
    assert [s["id"] for s in json.loads(quiet.stdout)["schools"]] == ["ok0", "bad", "ok1", "ok2"]
    assert json.loads(quiet.stdout)["summary"] == json.loads(loud.stdout)["summary"]
    assert "ok0" not in quiet.stderr and "ok0" in loud.stderr


def test_no_progress_lists_each_school_once_at_the_end(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, _ = small_fleet(tmp_path, pg, "noprog")
    done = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert done.stderr == "", "no progress lines"
    assert "migrate: 4 schools" in done.stdout, "the plan"
    for school in ("ok0", "bad", "ok1", "ok2"):
        assert len(lines_naming(done.stdout, school)) == 1
    assert done.stdout.index("ok0 (") > done.stdout.index("would get"), "the results come after the plan"


def test_a_server_found_down_by_the_plan_pass_says_why_once(tmp_path: Path) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    port = free_port()  # nothing listens there
    registry = write_registry(
        tmp_path / "t.yaml", [(f"d{i}", f"postgresql://postgres:${{PGPW}}@127.0.0.1:{port}/d{i}", []) for i in range(4)]
    )
    done = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations))
    assert done.returncode == 1
    output = done.stdout + done.stderr
    # The schools' results say `server down` (not attempted again); the cause is said once, with the plan pass.
    assert output.count("cannot connect to") == 1, output
    assert f"server down: 127.0.0.1:{port}: cannot connect to" in output
    assert "fleet.server_down" not in output, "the summary says it: no log line at the default level"
    logged = cli("--log-format=json", "migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations))
    [preflight] = [e for e in json_lines(logged.stderr) if e["event"] == "preflight"]
    assert "cannot connect to" in preflight["servers_down"][f"127.0.0.1:{port}"]
