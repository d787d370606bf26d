"""The files a command writes and the metrics it exports: every output path checked before the first connection (exit
2, nothing written to any database), each file replaced atomically (a failed write leaves the previous one), and the
run's Prometheus metrics (`--metrics`, `--pushgateway`) saying what the report says.

No Pushgateway runs offline: a tiny HTTP server in the test stands in for it and records what it was sent.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
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
from pgfixtures import PG_PASSWORD, drop_template, execute_sync, fetchval_sync, unique_db_name
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.devserver import DevServer, free_port
from orchestrator.errors import InvalidInput, UnwritableOutput
from orchestrator.metrics import check_pushgateway
from orchestrator.output_files import OutputFile, check_outputs, check_writable, write_atomically
from orchestrator.settings import Outputs


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text, by (name, sorted labels)."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def has_ledger(server: DevServer, database: str) -> bool:
    return fetchval_sync(server.url(database), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL") is True


# --- checked before the first connection ----------------------------------------------------------------------


def test_a_path_under_proc_or_sys_is_refused_naming_the_flag(tmp_path: Path) -> None:
    for flag, path in [("--report", Path("/proc/x/r.json")), ("--metrics", Path("/sys/nope.prom")),
                       ("--junit", Path("/proc/self/status"))]:  # fmt: skip
        with pytest.raises(UnwritableOutput, match=rf"^{flag} {path}: (its directory .* does not exist, and )?cannot "
                           "create a file in") as caught:  # fmt: skip
            check_writable([OutputFile(flag, path)])
        assert caught.value.hint and "directory you can write" in caught.value.hint


def test_a_directory_a_device_or_a_file_as_parent_is_refused(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("")
    for path, problem in [(tmp_path, "is a directory"), (Path("/dev/null"), "is not a regular file"),
                          (tmp_path / "plain" / "r.json", "is not a directory")]:  # fmt: skip
        with pytest.raises(UnwritableOutput, match=problem):
            check_writable([OutputFile("--report", path)])


def test_two_flags_naming_one_file_are_refused(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    same = [OutputFile("--report", tmp_path / "r.out"), OutputFile("--junit", tmp_path / "sub" / ".." / "r.out")]
    with pytest.raises(UnwritableOutput, match="--report and --junit both name"):
        check_writable(same)


def test_an_output_never_lands_on_an_input(tmp_path: Path) -> None:
    registry, migrations = tmp_path / "tenants.yaml", make_migrations(tmp_path / "migrations")
    registry.write_text("tenants: []\n")
    inputs = [OutputFile("--registry", registry), OutputFile("--migrations", migrations)]
    for output, said in [(registry, "would replace the input --registry"),
                         (migrations / "r.json", "would land in the input --migrations")]:  # fmt: skip
        with pytest.raises(UnwritableOutput, match=said):
            check_outputs(Outputs(report=output), inputs=inputs)
    check_outputs(Outputs(report=tmp_path / "r.json"), inputs=inputs)


def test_a_writable_path_passes_and_the_check_leaves_nothing_behind(tmp_path: Path) -> None:
    (tmp_path / "old.json").write_text("{}")
    check_writable([OutputFile("--report", tmp_path / "old.json"), OutputFile("--junit", tmp_path / "new.xml"),
                    OutputFile("--metrics", tmp_path / "not" / "yet" / "m.prom")])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.json"], "no probe left, no directory made"


def test_a_pushgateway_url_is_checked(tmp_path: Path) -> None:
    for good in ("http://pushgateway:9091", "https://pg.example.internal", "127.0.0.1:9091"):
        check_pushgateway(good)
    for bad, problem in [("ftp://x:21", "not http or https"), ("http://:9091", "no host"),
                         ("http://pg:99999", "port"), ("http://pg:9091/?a=b", "query")]:  # fmt: skip
        with pytest.raises(InvalidInput, match=problem):
            check_pushgateway(bad)
    with pytest.raises(InvalidInput, match="credentials") as caught:
        check_pushgateway("http://user:s3cret@pg:9091")
    assert "s3cret" not in str(caught.value) and "user:***@pg" in str(caught.value)


@pytest.fixture
def fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, list[str]]:
    """Three empty schools of the BASIC migrations (1, 2, 3): (registry, migrations, database names)."""
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"outputs{i}") for i in range(3)]
    return fleet_registry(tmp_path / "t.yaml", pg, schools), migrations, schools


def test_migrate_with_an_unwritable_report_exits_2_before_touching_any_school(
    tmp_path: Path, pg: DevServer, fleet: tuple[Path, Path, list[str]]
) -> None:
    registry, migrations, schools = fleet
    args = ("--registry", str(registry), "--migrations", str(migrations), "--yes", "--no-progress")
    for flags, said in [
        (
            ("--report", "/proc/x/r.json"),
            "--report /proc/x/r.json: its directory /proc/x does not exist, and cannot create a file in /proc",
        ),
        (("--metrics", str(tmp_path)), f"--metrics {tmp_path} is a directory"),
        (("--report", str(tmp_path / "r.out"), "--junit", str(tmp_path / "r.out")), "--report and --junit both"),
    ]:
        result = cli("migrate", *args, *flags)
        assert result.returncode == 2, result.stdout + result.stderr
        assert "[unwritable_output]" in result.stderr and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
        assert "cannot connect" not in result.stdout + result.stderr
    assert not any(has_ledger(pg, db) for db in schools), "no school was migrated"
    assert not (tmp_path / "r.out").exists()


def test_audit_with_an_unwritable_metrics_file_exits_2_before_any_connection(tmp_path: Path) -> None:
    # Nothing listens at the registry's server: a run that went as far as connecting would say so, and exit 1.
    registry = write_registry(tmp_path / "t.yaml", [("a", f"postgresql://u:p@127.0.0.1:{free_port()}/a", [])])
    result = cli("audit", "--registry", str(registry), "--migrations", str(make_migrations(tmp_path / "m")),
                 "--metrics", "/proc/nope/x.prom", "--no-progress")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--metrics /proc/nope/x.prom: its directory /proc/nope does not exist" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) <= 4
    html = cli("audit", "--registry", str(registry), "--migrations", str(tmp_path / "m"), "--html", str(tmp_path))
    assert html.returncode == 2 and f"--html {tmp_path} is a directory" in html.stderr


def test_template_with_an_unwritable_metrics_file_exits_2(tmp_path: Path) -> None:
    result = cli("template", "-D", f"postgresql://u:p@127.0.0.1:{free_port()}/a", "--template", "school_template",
                 "--migrations", str(make_migrations(tmp_path / "m")), "--metrics", "/sys/x.prom", "--yes")  # fmt: skip
    assert result.returncode == 2 and "--metrics /sys/x.prom: cannot create" in result.stderr, result.stderr


# --- written atomically -----------------------------------------------------------------------------------------


def test_a_write_that_fails_midway_leaves_the_previous_file(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    write_atomically(path, "previous\n")

    def chunks() -> Iterator[str]:
        yield "half of a new"
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        write_atomically(path, chunks())
    assert path.read_text() == "previous\n"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "no temporary file left"
    write_atomically(path, iter(["new ", "one\n"]))
    assert path.read_text() == "new one\n" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_a_report_that_cannot_be_written_after_the_run_keeps_the_result_and_the_old_file(
    tmp_path: Path, pg: DevServer, fleet: tuple[Path, Path, list[str]]
) -> None:
    """The disk fills up after the check: simulated with RLIMIT_FSIZE, under which a write past the limit fails with
    EFBIG (Python ignores SIGXFSZ). The run's result is still shown, the exit code is not 0, and no half file."""
    registry, migrations, schools = fleet
    report = tmp_path / "out" / "r.json"
    report.parent.mkdir()
    report.write_text("previous\n")
    limit = 1024  # the check's probe is empty; the report of three schools is several KB

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run(
        [sys.executable, "-m", "orchestrator", "migrate", "--yes", "--no-progress", "--registry", str(registry),
         "--migrations", str(migrations), "--report", str(report)],
        capture_output=True, text=True, timeout=120, cwd=ROOT, stdin=subprocess.DEVNULL, preexec_fn=small_files,
        env={**os.environ, "PGPW": PG_PASSWORD},
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert f"--report {report} was not written: File too large" in output
    assert "summary: 3 schools: 3 applied" in done.stdout, "the run's result is still shown"
    assert all(has_ledger(pg, db) for db in schools), "the run itself went through"
    assert report.read_text() == "previous\n"
    assert [p.name for p in report.parent.iterdir()] == ["r.json"], "no partial temporary file"
    assert "--resume" not in output, "no advice to resume from a report that was not written"


# --- the run's metrics ------------------------------------------------------------------------------------------


class Gateway:
    """A stand-in Pushgateway: records each request's method, path and body, answers 200 (or `status`)."""

    def __init__(self, status: int = 200) -> None:
        self.requests: list[tuple[str, str, str]] = []
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
                gateway.requests.append((self.command, self.path, body))
                self.send_response(status)
                self.end_headers()

            do_PUT = do_POST = _record

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Gateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_migrate_metrics_say_what_the_report_says_and_the_same_is_pushed(
    tmp_path: Path, pg: DevServer, fleet: tuple[Path, Path, list[str]]
) -> None:
    registry, migrations, schools = fleet
    execute_sync(pg.url(schools[2]), "CREATE TABLE three (id int)")  # its migration 3 fails: it stays at 2
    metrics, report = tmp_path / "metrics" / "orchestrator.prom", tmp_path / "r.json"
    with Gateway() as gateway:
        result = cli("migrate", "--yes", "--no-progress", "--registry", str(registry), "--migrations",
                     str(migrations), "--report", str(report), "--metrics", str(metrics), "--pushgateway",
                     gateway.url)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(report.read_text())
    text = metrics.read_text()
    got = samples(text)
    cmd = (("command", "migrate"),)
    by_status = {status: got[("orchestrator_schools", (*cmd, ("status", status)))]
                 for status in ("applied", "failed", "up_to_date", "skipped", "unreachable")}  # fmt: skip
    assert {k: v for k, v in by_status.items() if v} == data["summary"]["by_status"] == {"applied": 2, "failed": 1}
    assert got[("orchestrator_latest_migration_version", cmd)] == 3
    assert got[("orchestrator_schools_at_latest", cmd)] == 2
    assert (got[("orchestrator_schools_min_version", cmd)], got[("orchestrator_schools_max_version", cmd)]) == (2, 3)
    assert got[("orchestrator_run_ok", cmd)] == 0 and got[("orchestrator_run_interrupted", cmd)] == 0
    assert got[("orchestrator_run_halted", cmd)] == 0
    assert got[("orchestrator_school_duration_seconds_count", cmd)] == 3
    assert abs(got[("orchestrator_run_duration_seconds", cmd)] - data["duration_s"]) < 0.01
    assert got[("orchestrator_run_timestamp_seconds", cmd)] > 1.7e9
    assert PG_PASSWORD not in text and "postgres" not in text

    [(method, path, body)] = gateway.requests
    assert (method, path) == ("PUT", "/metrics/job/orchestrator/command/migrate")
    assert samples(body) == got, "the push carries the textfile's metrics"
    assert f"pushed metrics to {gateway.url}" in result.stdout


def test_a_push_that_fails_is_a_warning_and_the_exit_code_stays_the_run_s(
    tmp_path: Path, fleet: tuple[Path, Path, list[str]]
) -> None:
    registry, migrations, _ = fleet
    args = ("--yes", "--no-progress", "--registry", str(registry), "--migrations", str(migrations))
    closed = f"http://127.0.0.1:{free_port()}"
    result = cli("migrate", *args, "--pushgateway", closed, "--metrics", str(tmp_path / "m.prom"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"warning: metrics not pushed to {closed}" in result.stdout
    assert "Traceback" not in result.stderr
    assert samples((tmp_path / "m.prom").read_text())[("orchestrator_run_ok", (("command", "migrate"),))] == 1
    with Gateway(status=500) as gateway:
        refused = cli("migrate", *args, "--pushgateway", gateway.url)
    assert refused.returncode == 0 and "warning: metrics not pushed" in refused.stdout, refused.stdout


def test_the_pushgateway_may_come_from_the_environment_and_a_shard_pushes_to_its_own_group(
    fleet: tuple[Path, Path, list[str]],
) -> None:
    registry, migrations, _ = fleet
    args = ("--yes", "--no-progress", "--registry", str(registry), "--migrations", str(migrations))
    with Gateway() as gateway:
        result = cli("migrate", *args, "--shard", "0/1", env={"ORCHESTRATOR_PUSHGATEWAY": gateway.url})
        unset = cli("status", *args[1:], env={"ORCHESTRATOR_PUSHGATEWAY": gateway.url})  # status pushes nothing
    assert result.returncode == 0 and unset.returncode == 0, result.stdout + result.stderr
    [(method, path, body)] = gateway.requests
    # prometheus_client writes a value holding `/` in base64: "0/1" -> MC8x
    assert (method, path) == ("PUT", "/metrics/job/orchestrator/command/migrate/shard@base64/MC8x")
    assert samples(body)[("orchestrator_schools", (("command", "migrate"), ("status", "applied")))] == 3


def test_provision_revert_and_audit_metrics_carry_their_command(
    tmp_path: Path, pg: DevServer, fleet: tuple[Path, Path, list[str]]
) -> None:
    registry, migrations, _ = fleet
    args = ("--no-progress", "--registry", str(registry), "--migrations", str(migrations))
    assert cli("migrate", "--yes", *args).returncode == 0
    new = cli("provision", "-D", pg.url(unique_db_name("outnew")), "--migrations", str(migrations), "--metrics",
              str(tmp_path / "provision.prom"))  # fmt: skip
    assert new.returncode == 0, new.stdout + new.stderr
    provisioned = samples((tmp_path / "provision.prom").read_text())
    assert provisioned[("orchestrator_schools", (("command", "provision"), ("status", "applied")))] == 1
    assert provisioned[("orchestrator_schools_at_latest", (("command", "provision"),))] == 1
    with Gateway() as gateway:
        reverted = cli("revert", "--yes", "--target", "1", *args, "--metrics", str(tmp_path / "revert.prom"))
        audited = cli("audit", *args, "--metrics", str(tmp_path / "audit.prom"), "--pushgateway", gateway.url)
    assert reverted.returncode == 1, "no down files: not reversible"
    got = samples((tmp_path / "revert.prom").read_text())
    assert got[("orchestrator_schools", (("command", "revert"), ("status", "failed")))] == 3
    assert audited.returncode == 0, audited.stdout + audited.stderr
    audit = samples((tmp_path / "audit.prom").read_text())
    assert audit[("orchestrator_audit_schools", (("state", "clean"),))] == 3
    [(method, path, body)] = gateway.requests
    assert (method, path) == ("PUT", "/metrics/job/orchestrator/command/audit") and samples(body) == audit


def test_an_interrupted_rollout_writes_and_pushes_metrics_that_say_so(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    schools = [make_school(pg, f"slow_outsig_{i}") for i in range(3)]  # slow_: the second file sleeps 1.5 s
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    with Gateway() as gateway:
        proc = popen("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations),
                     "--concurrency", "1", "--no-progress", "--metrics", str(tmp_path / "m.prom"), "--pushgateway",
                     gateway.url)  # fmt: skip
        wait_for_slow_file(pg, proc, "t_slow_outsig%")
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    got = samples((tmp_path / "m.prom").read_text())
    cmd = (("command", "migrate"),)
    assert got[("orchestrator_run_interrupted", cmd)] == 1 and got[("orchestrator_run_ok", cmd)] == 0
    assert got[("orchestrator_schools", (*cmd, ("status", "applied")))] == 1
    assert got[("orchestrator_schools", (*cmd, ("status", "skipped")))] == 2
    assert got[("orchestrator_school_duration_seconds_count", cmd)] == 1, "skipped schools were not attempted"
    [(_, _, body)] = gateway.requests
    assert samples(body) == got


@pytest.fixture
def template(pg: DevServer) -> Iterator[str]:
    name = unique_db_name("outtpl")
    yield name
    drop_template(pg.url(), name)


def test_template_metrics_give_each_server_s_version_and_spares(tmp_path: Path, pg: DevServer, template: str) -> None:
    school = unique_db_name("unused")  # only its server counts
    registry = write_registry(tmp_path / "t.yaml", [("a", registry_url(pg, school), [])])
    result = cli("template", "--registry", str(registry), "--migrations", str(make_migrations(tmp_path / "m")),
                 "--template", template, "--spares", "2", "--yes", "--metrics", str(tmp_path / "t.prom"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    got = samples((tmp_path / "t.prom").read_text())
    key = (("command", "template"), ("server", f"127.0.0.1:{pg.port}"), ("template", template))
    assert (got[("orchestrator_template_version", key)], got[("orchestrator_template_spares", key)]) == (3, 2)
    assert got[("orchestrator_template_ready", key)] == 1
    assert got[("orchestrator_run_ok", (("command", "template"),))] == 1
