"""Helpers to build small fleets for tests: migration directories, registries, and in-process runs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pgfixtures import PG_PASSWORD, create_database, fetchval_sync, run_sync, unique_db_name

from orchestrator.devserver import DevServer
from orchestrator.job import Command, Request, prepare
from orchestrator.report import RunReport
from orchestrator.runner import run

ROOT = Path(__file__).resolve().parent.parent

# Three small migrations; the second one sleeps when the school's name asks for it (slow_ prefix), so tests can
# catch a school mid-migration.
BASIC = {
    "1_create_log.sql": "CREATE TABLE log (id serial PRIMARY KEY, note text NOT NULL DEFAULT '');\n",
    "2_slow_step.sql": (
        "INSERT INTO log (note) VALUES ('two');\n"
        "SELECT CASE WHEN current_database() LIKE '%slow%' THEN pg_sleep(1.5) END;\n"
        "CREATE TABLE two (id int);\n"
    ),
    "3_add_three.sql": "INSERT INTO log (note) VALUES ('three');\nCREATE TABLE three (id int);\n",
}


def make_migrations(directory: Path, files: dict[str, str] | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, sql in (files or BASIC).items():
        (directory / name).write_text(sql)
    return directory


def git_commit(directory: Path, message: str = "migrations") -> str:
    """Commit everything under `directory` (a git repository made there first, if need be); returns the commit."""

    def git(*args: str) -> str:
        command = ["git", "-C", str(directory), "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args]
        return subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip()

    if not (directory / ".git").exists():
        git("init", "-q")
    git("add", "-A", ".")
    git("commit", "-q", "--allow-empty", "-m", message)
    return git("rev-parse", "HEAD")


def make_school(server: DevServer, label: str) -> str:
    """Create an empty school database; returns its name."""
    name = unique_db_name(label)
    run_sync(create_database(server.url(), name))
    return name


def registry_url(server: DevServer, database: str) -> str:
    """A registry URL whose password comes from ${PGPW}: passwords stay out of the file."""
    return f"postgresql://postgres:${{PGPW}}@127.0.0.1:{server.port}/{database}"


def write_registry(path: Path, tenants: Sequence[tuple[str, str, Sequence[str]]], defaults: str = "") -> Path:
    lines = [defaults.rstrip(), "tenants:"] if defaults else ["tenants:"]
    for tenant_id, url, tags in tenants:
        lines.append(f"  - id: {tenant_id}")
        lines.append(f"    url: {url}")
        if tags:
            lines.append(f"    tags: [{', '.join(tags)}]")
    path.write_text("\n".join(lines) + "\n")
    return path


def fleet_registry(path: Path, server: DevServer, schools: Sequence[str]) -> Path:
    """A registry of `schools` (database names) on one server, with ids s0, s1, ..."""
    return write_registry(path, [(f"s{i}", registry_url(server, db), []) for i, db in enumerate(schools)])


def run_fleet_job(command: Command, registry: Path, migrations: Path, **request: Any) -> RunReport:
    os.environ["PGPW"] = PG_PASSWORD
    job = prepare(Request(command=command, registry=registry, migrations=migrations, **request))
    return run_sync(run(job))


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run the real command in a subprocess (signals, exit codes, two processes at once), as a script or CI runs it:
    no terminal (stdin is /dev/null, whatever pytest was started from), stdout and stderr piped."""
    return subprocess.run(
        [sys.executable, "-m", "orchestrator", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PGPW": PG_PASSWORD, **(env or {})},
        cwd=ROOT,
    )


def popen(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PGPW": PG_PASSWORD},
        cwd=ROOT,
    )


def wait_for_slow_file(server: DevServer, proc: subprocess.Popen[str], databases_like: str) -> None:
    """Until a school whose database matches `databases_like` (a LIKE pattern) runs a slow file (pg_sleep) in the
    rollout itself: the orchestrator's session, not its plan pass, which opens sessions on the same databases first."""
    deadline = time.monotonic() + 30
    while fetchval_sync(
        server.url(), "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'orchestrator' "
        "AND datname LIKE $1 AND query LIKE '%pg_sleep%'", databases_like,
    ) == 0:  # fmt: skip
        assert time.monotonic() < deadline and proc.poll() is None, "the rollout never started"
        time.sleep(0.05)


def by_id(report: RunReport) -> dict[str, Any]:
    return {o.tenant.id: o.result for o in report.outcomes}


SQLX = Path(sys.executable).parent / "sqlx"  # the real CLI, installed with the dev extras


def sqlx_info(migrations: Path, url: str) -> dict[int, str]:
    """`sqlx migrate info` of the real CLI: each version's state (installed, pending, ...)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    info = subprocess.run(
        [str(SQLX), "migrate", "info", "--no-dotenv", "--source", str(migrations), "-D", url],
        check=True, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    return {int(line.split("/")[0]): line.split("/")[1].split()[0] for line in info.stdout.splitlines()}
