"""Nothing is written over a registry without a confirmation: the work a rollout's plan pass found, and any write to
every school of the registry (no selection). On a terminal (stdin) the command asks, on stderr, so neither --json
nor a piped stdout skips the question or ends up in it; without a terminal it refuses (exit 2, nothing written)
unless --yes. One database (-D) and the Python API are not asked."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fleetkit import (
    ROOT,
    cli,
    fleet_registry,
    make_migrations,
    make_school,
    registry_url,
    run_fleet_job,
    write_registry,
)
from pgfixtures import PG_PASSWORD, database_exists, fetch_sync, run_sync, unique_db_name

from orchestrator.devserver import DevServer
from orchestrator.job import Command

SCRIPTS_CONFIRM = "a script or CI job confirms with --yes"


def versions(pg: DevServer, db: str) -> list[int]:
    rows = fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")
    return [r["version"] for r in rows]


def has_ledger(pg: DevServer, db: str) -> bool:
    return bool(fetch_sync(pg.url(db), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'"))


REVERSIBLE = {
    "1_one.up.sql": "CREATE TABLE one (id int);\n",
    "1_one.down.sql": "DROP TABLE one;\n",
    "2_two.up.sql": "CREATE TABLE two (id int);\n",
    "2_two.down.sql": "DROP TABLE two;\n",
    "3_three.up.sql": "CREATE TABLE three (id int);\n",
    "3_three.down.sql": "DROP TABLE three;\n",
}


@pytest.fixture
def fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, list[str]]:
    """Two empty schools, s0 and s1, and three reversible migrations."""
    migrations = make_migrations(tmp_path / "migrations", REVERSIBLE)
    schools = [make_school(pg, f"confirm_{i}") for i in range(2)]
    return migrations, fleet_registry(tmp_path / "t.yaml", pg, schools), schools


def test_planned_work_is_refused_without_a_terminal_unless_yes(
    fleet: tuple[Path, Path, list[str]], pg: DevServer
) -> None:
    migrations, registry, schools = fleet
    args = ("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--tenant", "s0")

    refused = cli(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "not confirmed: migrate would apply migrations on 1 school(s)" in refused.stderr
    assert SCRIPTS_CONFIRM in refused.stderr
    assert "1 school(s) would get 3 migration(s)" in refused.stdout, "the plan is shown first"
    assert not has_ledger(pg, schools[0]), "nothing was written"

    confirmed = cli(*args, "--yes")
    assert confirmed.returncode == 0, confirmed.stdout + confirmed.stderr
    assert versions(pg, schools[0]) == [1, 2, 3]
    nothing_to_do = cli(*args)
    assert nothing_to_do.returncode == 0, "a selection with nothing to write needs no confirmation"
    single = cli("migrate", "-D", pg.url(schools[1]), "--migrations", str(migrations))
    assert single.returncode == 0, "one database is never asked about"


def test_revert_with_json_is_refused_without_a_terminal(fleet: tuple[Path, Path, list[str]], pg: DevServer) -> None:
    migrations, registry, schools = fleet
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", *args, "--yes").returncode == 0
    reverted = cli("revert", "--target", "1", *args, "--tenant", "s0", "--json")
    assert reverted.returncode == 2, reverted.stdout + reverted.stderr
    assert "not confirmed: revert would revert migrations on 1 school(s)" in reverted.stderr
    assert reverted.stdout == "", "no report: nothing ran"
    assert versions(pg, schools[0]) == [1, 2, 3]
    resolved = cli("resolve", "--not-applied", "3", *args, "--tenant", "s0")
    assert resolved.returncode == 2 and "not confirmed: resolve would change the ledger of 1 school(s)" in (
        resolved.stderr
    )


def test_schools_to_create_count_as_work(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    existing, new = make_school(pg, "confirm_known"), unique_db_name("confirm_new")
    registry = write_registry(
        tmp_path / "t.yaml", [("known", registry_url(pg, existing), []), ("new", registry_url(pg, new), [])]
    )
    args = ("migrate", "--create-missing", "--registry", str(registry), "--migrations", str(migrations), "--tenant",
            "new", "--no-progress")  # fmt: skip
    refused = cli(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "not confirmed: migrate would create 1 school database(s) and migrate them" in refused.stderr
    assert not run_sync(database_exists(pg.url(), new))
    assert cli(*args, "--yes").returncode == 0
    assert versions(pg, new) == [1, 2, 3]


@pytest.mark.parametrize("command", ["bootstrap", "provision", "migrate", "template"])
def test_a_write_to_every_school_of_the_registry_is_refused_without_yes(
    tmp_path: Path, pg: DevServer, command: str
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    new, other, template = unique_db_name("whole_new"), make_school(pg, "whole_other"), unique_db_name("whole_tpl")
    registry = write_registry(
        tmp_path / "t.yaml",
        [("new", registry_url(pg, new), ["k12"]), ("other", registry_url(pg, other), ["k12"])],
        f"defaults:\n  template: {template}",
    )
    args = (command, "--registry", str(registry), "--migrations", str(migrations))
    if command == "migrate":
        assert run_fleet_job(Command.PROVISION, registry, migrations).ok, "the Python API is not asked"
    refused = cli(*args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    said = " ".join(refused.stderr.split())
    assert f"not confirmed: {command} would " in said and f"every school of {registry} (2; no --tenant, --tag" in said
    every = cli(*args, "--tag", "k12")  # a selection is judged by what it selected: here, every school
    assert every.returncode == 2, every.stdout + every.stderr
    assert "(2; the selection leaves none out)" in " ".join(every.stderr.split())
    assert run_sync(database_exists(pg.url(), new)) is (command == "migrate"), "nothing created"
    assert run_sync(database_exists(pg.url(), template)) is (command == "migrate"), "no template built"
    selected = cli(*args, "--tenant", "new")
    if command == "provision":  # creating the school is work: confirmed like any other
        assert selected.returncode == 2, selected.stdout + selected.stderr
        assert "not confirmed: provision would create 1 school database(s)" in selected.stderr
        assert not run_sync(database_exists(pg.url(), new))
        selected = cli(*args, "--tenant", "new", "--yes")
    assert selected.returncode == 0, selected.stdout + selected.stderr


def ask_on_a_terminal(args: list[str], answer: str) -> tuple[int, str, str]:
    """Run the command with a terminal on stdin and stderr, stdout piped; answer its question. Returns the exit code,
    what the terminal showed and stdout."""
    controller, terminal = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *args],
        stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, cwd=ROOT, text=True,
        env={**os.environ, "PGPW": PG_PASSWORD, "COLUMNS": "200"},
    )  # fmt: skip
    os.close(terminal)
    shown, answered, deadline = b"", False, time.monotonic() + 60
    try:
        while time.monotonic() < deadline:
            if select.select([controller], [], [], 0.1)[0]:
                try:
                    chunk = os.read(controller, 4096)
                except OSError:  # the command exited: the terminal is gone
                    break
                shown += chunk
            if not answered and b"Go ahead?" in shown:
                os.write(controller, answer.encode() + b"\n")
                answered = True
            if proc.poll() is not None and not select.select([controller], [], [], 0.1)[0]:
                break
        stdout, _ = proc.communicate(timeout=60)
    finally:
        os.close(controller)
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, shown.decode(errors="replace"), stdout


@pytest.mark.parametrize("answer", ["n", "y"])
def test_on_a_terminal_the_question_is_asked_even_with_json_on_a_piped_stdout(
    fleet: tuple[Path, Path, list[str]], pg: DevServer, answer: str
) -> None:
    migrations, registry, schools = fleet
    code, terminal, stdout = ask_on_a_terminal(
        ["migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--json"], answer
    )
    assert "Migrate would apply migrations on 2 school(s), over every school of" in " ".join(terminal.split())
    if answer == "n":
        assert code == 1 and "aborted: nothing was written" in terminal
        assert stdout == "" and not has_ledger(pg, schools[0])
    else:
        assert code == 0, terminal
        assert [s["status"] for s in json.loads(stdout)["schools"]] == ["applied", "applied"], "only JSON on stdout"
        assert all(versions(pg, db) == [1, 2, 3] for db in schools)


WRITES = {"migrate", "revert", "resolve", "bootstrap", "provision", "template"}


def test_the_shipped_jobs_and_the_demo_confirm_their_writes_over_the_registry() -> None:
    """A Kubernetes Job or a script has no terminal: each write over a registry it runs says --yes."""
    runs: list[tuple[str, list[str]]] = []
    for manifest in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            for container in _containers(document):
                runs.append((manifest.name, [str(a) for a in container.get("args", [])]))
    for line in (ROOT / "scripts" / "demo.sh").read_text().splitlines():
        if "$BIN/orchestrator " in line:
            runs.append(("demo.sh", line.split("$BIN/orchestrator ", 1)[1].split()))
    writes = [(where, args) for where, args in runs if WRITES & set(args) and "-D" not in args]
    assert len(writes) >= 5, writes  # two rollout Jobs, the template CronJob, the demo's bootstrap and migrate
    assert [where for where, args in writes if "--yes" not in args] == []


def _containers(node: object) -> list[dict[str, object]]:
    if isinstance(node, dict):
        found = [node] if "image" in node and "name" in node else []
        return found + [c for value in node.values() for c in _containers(value)]
    if isinstance(node, list):
        return [c for value in node for c in _containers(value)]
    return []
