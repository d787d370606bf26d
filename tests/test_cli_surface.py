"""One CLI surface: every fleet command takes the same option groups, each flag means the same everywhere, help
shows the real defaults, and global options work after the command too. `--help` of every command is pinned by a
snapshot (tests/snapshots/help/): a flag that drifts shows up here. After a deliberate change, refresh them with
`UPDATE_SNAPSHOTS=1 .venv/bin/pytest tests/test_cli_surface.py`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from typer.testing import CliRunner

from orchestrator.cli import app, commands
from orchestrator.job import Command, Request
from orchestrator.settings import BUILTIN, Budgets, format_duration

SNAPSHOTS = Path(__file__).parent / "snapshots" / "help"
FLEET_COMMANDS = ["migrate", "plan", "status", "bootstrap", "provision", "revert", "resolve", "audit", "template"]
ALL_COMMANDS = [*FLEET_COMMANDS, "lint", "new"]
EVERY_FLEET_COMMAND_TAKES = [
    "--concurrency", "--per-server", "--retries", "--no-progress", "--report", "--junit", "--json", "--tenant",
    "--tag", "--exclude", "--shard", "--resume", "--connect-timeout", "--lock-timeout", "--statement-timeout",
    "--lock-wait", "--registry", "--database-url", "--migrations", "--log-format", "--log-level",
]  # fmt: skip
WRITING_COMMANDS_TAKE = ["--canary", "--max-failures"]
# Commands that check a school's ledger against the files (bootstrap applies nothing; template builds from the files).
LEDGER_COMMANDS = ["migrate", "plan", "status", "provision", "revert", "resolve", "audit"]
APPLYING_COMMANDS_TAKE = ["--allow-unsafe", "--rehearse", "--reference-url"]


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


def help_text(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "110", "NO_COLOR": "1", "TERM": "dumb"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_help_matches_its_snapshot(command: str) -> None:
    text = help_text(command)
    snapshot = SNAPSHOTS / f"{command}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS") or not snapshot.exists():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        snapshot.write_text(text)
    assert text == snapshot.read_text(), f"`orchestrator {command} --help` changed; see the module docstring"


@pytest.mark.parametrize("command", FLEET_COMMANDS)
def test_every_fleet_command_takes_the_shared_groups(command: str) -> None:
    text = help_text(command)
    missing = [flag for flag in EVERY_FLEET_COMMAND_TAKES if not re.search(rf"{flag}\b", text)]
    assert not missing, f"{command} lacks {missing}"
    if command not in ("plan", "status", "audit", "template"):
        assert all(flag in text for flag in WRITING_COMMANDS_TAKE), command
    if command in ("migrate", "provision"):
        assert all(flag in text for flag in APPLYING_COMMANDS_TAKE), command


def test_ignore_missing_is_one_flag_with_one_meaning_on_every_command_that_reads_the_ledger() -> None:
    def panel(command: str) -> str:
        text = help_text(command)
        return text[text.index("--ignore-missing") :].split("╰")[0] if "--ignore-missing" in text else ""

    panels = {command: panel(command) for command in ALL_COMMANDS}
    readers = [*LEDGER_COMMANDS, "lint"]  # lint --baseline reads the fleet's ledgers
    assert {command for command, text in panels.items() if text} == set(readers)
    assert len({panels[command] for command in readers}) == 1, "the same help everywhere"
    assert "sqlx --ignore-missing" in " ".join(panels["status"].split())


def test_migrations_is_repeatable_on_every_database_command(captured: Captured) -> None:
    args = ["--migrations", "main", "--migrations", "deferred", "--ignore-missing"]
    for command in LEDGER_COMMANDS:
        extra = {"revert": ["--target", "0"], "resolve": ["--applied", "1"]}.get(command, [])
        assert CliRunner().invoke(app, [command, *args, *extra]).exit_code == 0, command
    assert CliRunner().invoke(app, ["bootstrap", "--migrations", "main", "--migrations", "deferred"]).exit_code == 0
    assert {(r.migrations, r.ignore_missing) for r in captured.requests[:-1]} == {
        ((Path("main"), Path("deferred")), True)
    }
    assert captured.requests[-1].migrations == (Path("main"), Path("deferred"))
    assert CliRunner().invoke(app, ["status"]).exit_code == 0
    assert captured.requests[-1].migrations == (Path("migrations"),), "the default: one directory"


def test_metrics_flags_are_one_group_with_one_meaning_on_the_commands_that_take_them() -> None:
    def panel(command: str) -> str:
        text = help_text(command)
        return text[text.index("╭─ Metrics") :].split("╰")[0] if "╭─ Metrics" in text else ""

    panels = {command: panel(command) for command in ALL_COMMANDS}
    takers = {"migrate", "revert", "resolve", "provision", "template", "audit"}
    assert {command for command, text in panels.items() if text} == takers
    assert len({panels[command] for command in takers}) == 1, "the same flags and help everywhere"
    assert "--metrics" in panels["audit"] and "--pushgateway" in panels["audit"]
    assert help_text("audit").count("--metrics") == 1, "the audit's --metrics is the shared one"


@pytest.mark.parametrize("command", ALL_COMMANDS)
def test_help_shows_no_value_for_flags(command: str) -> None:
    assert "<bool>" not in help_text(command)


@pytest.mark.parametrize("command", FLEET_COMMANDS)
def test_help_shows_the_built_in_defaults(command: str) -> None:
    text = " ".join(help_text(command).split())  # help wraps long lines
    for flag, value in [
        ("--lock-timeout", format_duration(BUILTIN.lock_timeout)),
        ("--statement-timeout", format_duration(BUILTIN.statement_timeout)),
        ("--lock-wait", format_duration(BUILTIN.lock_wait)),
        ("--connect-timeout", format_duration(BUILTIN.connect_timeout)),
        ("--per-server", str(BUILTIN.per_server)),
        ("--concurrency", str(Budgets().concurrency)),
        ("--retries", str(Budgets().retries)),
        ("--registry", "tenants.yaml"),
    ]:
        assert re.search(rf"{flag} .*?\[default: {re.escape(value)}\]", text), (command, flag)


class Captured:
    """What a command would run: the request its flags build (execute() itself is tested everywhere else)."""

    def __init__(self) -> None:
        self.requests: list[Request] = []

    def __call__(self, flags: Any, command: Command, **specific: Any) -> None:
        specific = {k: v for k, v in specific.items() if k in Request.__dataclass_fields__}
        self.requests.append(flags.request(command, **specific))


@pytest.fixture
def captured(monkeypatch: pytest.MonkeyPatch) -> Captured:
    capture = Captured()
    monkeypatch.setattr(commands, "execute", capture)
    return capture


def test_an_unset_flag_leaves_the_registry_its_say_and_a_typed_one_wins(captured: Captured) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["status"], env={"DATABASE_URL": None}).exit_code == 0
    default = format_duration(BUILTIN.lock_timeout)
    assert runner.invoke(app, ["status", "--lock-timeout", default, "--per-server", "4"]).exit_code == 0
    unset, typed = captured.requests
    assert unset.school.lock_timeout is None and unset.school.per_server is None
    assert typed.school.lock_timeout == BUILTIN.lock_timeout, "typed, even at the default's value, overrides"
    assert typed.school.per_server == 4


def test_the_groups_become_the_same_request_on_every_command(captured: Captured) -> None:
    args = ["--tenant", "a", "--shard", "1/3", "-j", "3", "--retries", "0", "--statement-timeout", "30m"]
    for command in ("status", "plan", "bootstrap", "audit"):
        assert CliRunner().invoke(app, [command, *args]).exit_code == 0
    requests = captured.requests
    assert {(r.selection, r.budgets.concurrency, r.budgets.retries, r.school) for r in requests} == {
        (requests[0].selection, 3, 0, requests[0].school)
    }
    assert requests[0].selection.shard == (1, 3) and requests[0].school.statement_timeout == 1800.0


def test_the_plan_pass_is_on_unless_no_preflight_and_preflight_is_still_accepted(captured: Captured) -> None:
    for args in (["migrate"], ["migrate", "--preflight"], ["revert", "--target", "0", "--no-preflight"],
                 ["provision", "--no-preflight"], ["resolve", "--applied", "1", "--preflight"]):  # fmt: skip
        assert CliRunner().invoke(app, args).exit_code == 0, args
    assert [r.gate.preflight for r in captured.requests] == [True, True, False, False, True]


def test_log_format_is_accepted_after_the_command(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["status", "--log-format", "json", "--registry", str(tmp_path / "none.yaml")], env={"DATABASE_URL": None}
    )
    assert result.exit_code == 2 and "none.yaml" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--lock-timeout", "soon"], "--lock-timeout"),
        (["--shard", "3/3"], "--shard"),
        (["--max-failures", "0"], "--max-failures"),
        (["--per-server", "0"], "--per-server"),
        (["--log-format", "xml"], "--log-format"),
    ],
)
def test_a_bad_value_exits_2_naming_the_flag(args: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["migrate", "-D", "postgresql://u@127.0.0.1:1/x", *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
