"""Two directories, one ledger: an application's main migrations and its deferred `-- no-transaction` ones (a second
SQLx migrator, run with `ignore_missing`) share one `_sqlx_migrations`. Given both (`--migrations` twice), they are
one source ordered by version; given one, `--ignore-missing` accepts the other's versions as SQLx does, on every
command that reads the ledger. (The real `sqlx` CLI on the same layout: tests/test_sqlx_interop.py.)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pgfixtures import PG_PASSWORD, execute_sync, fetchval_sync, ledger
from sourcecases import DEFERRED_SET, MAIN_SET, V1, V3, V4, V_DEFERRED, make
from typer.testing import CliRunner, Result

import orchestrator
from orchestrator.cli import app
from orchestrator.command import Command
from orchestrator.errors import MigrationSourceError
from orchestrator.job import Request
from orchestrator.lint.released import read_released
from orchestrator.source import load_migrations

ALL = [V1, V_DEFERRED, V3, V4]
DEFERRED_UP = f"{V_DEFERRED}_index_students_email.up.sql"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    return make(tmp_path / "main", dict(MAIN_SET)), make(tmp_path / "deferred", dict(DEFERRED_SET))


def cli(*args: str, url: str) -> Result:
    result = CliRunner().invoke(app, [*args, "-D", url, "--no-progress"], env={"DATABASE_URL": None})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert PG_PASSWORD not in result.output
    return result


def school(result: Result) -> dict[str, Any]:
    data = json.loads(result.stdout)
    [only] = data["schools"]
    assert isinstance(only, dict)
    return only


def given(*directories: Path) -> list[str]:
    return [arg for d in directories for arg in ("--migrations", str(d))]


def versions(url: str) -> list[int]:
    return [row[0] for row in ledger(url)]


def index_exists(url: str) -> bool:
    return bool(fetchval_sync(url, "SELECT to_regclass('students_email_idx') IS NOT NULL"))


def migrate_both(url: str, main: Path, deferred: Path) -> Result:
    migrated = cli("migrate", *given(main, deferred), "--json", url=url)
    assert migrated.exit_code == 0, migrated.output
    return migrated


# --- one source -----------------------------------------------------------------------------------------------


def test_several_directories_are_one_source_ordered_by_version(dirs: tuple[Path, Path]) -> None:
    main, deferred = dirs
    source = load_migrations(main, deferred)
    assert source.versions == ALL
    assert source.directories == (main, deferred)
    assert [m.directory for m in source] == [main, deferred, main, main]
    assert [m.no_transaction for m in source] == [False, True, False, False]
    assert source.where == f"{main} + {deferred}"


def test_a_version_in_two_directories_is_refused_naming_both_files(
    dirs: tuple[Path, Path], unreachable_url: str
) -> None:
    main, deferred = dirs
    make(deferred, {f"{V3}_grades_again.sql": "SELECT 1;\n"})
    with pytest.raises(MigrationSourceError) as refused:
        load_migrations(main, deferred)
    assert str(main / f"{V3}_create_grades.up.sql") in refused.value.message
    assert str(deferred / f"{V3}_grades_again.sql") in refused.value.message
    # Every command: exit 2 before any connection (the server does not even exist: reaching it would be exit 1).
    for command in (["status"], ["migrate"], ["audit"], ["revert", "--target", "0"]):
        result = cli(*command, *given(main, deferred), url=unreachable_url)
        assert result.exit_code == 2, (command, result.output)
        assert "in two migrations directories" in result.stderr and "_grades_again.sql" in result.stderr


def test_the_same_directory_given_twice_is_refused(dirs: tuple[Path, Path], unreachable_url: str) -> None:
    main, _ = dirs
    result = cli("status", *given(main, main.parent / "." / "main"), url=unreachable_url)
    assert result.exit_code == 2 and "given twice" in result.stderr


# --- both directories -----------------------------------------------------------------------------------------


def test_migrate_with_both_directories_applies_all_and_every_command_then_agrees(
    dirs: tuple[Path, Path], db_url: str
) -> None:
    main, deferred = dirs
    migrated = migrate_both(db_url, main, deferred)

    assert school(migrated)["applied"] == ALL
    assert json.loads(migrated.stdout)["migrations"]["directories"] == [str(main), str(deferred)]
    assert [(v, success) for v, _, success, _ in ledger(db_url)] == [(v, True) for v in ALL]
    assert index_exists(db_url)
    for command in ("status", "plan", "audit", "migrate"):
        again = cli(command, *given(main, deferred), url=db_url)
        assert again.exit_code == 0, (command, again.output)


# --- the main directory alone -----------------------------------------------------------------------------------


def test_the_main_directory_alone_finds_the_deferred_version_missing_unless_ignore_missing(
    dirs: tuple[Path, Path], db_url: str
) -> None:
    main, deferred = dirs
    migrate_both(db_url, main, deferred)

    for command in ("status", "plan", "migrate"):
        refused = cli(command, *given(main), "--json", url=db_url)
        assert refused.exit_code == 1, (command, refused.output)
        entry = school(refused)
        assert entry["status"] == "missing"
        assert f"migration {V_DEFERRED} was previously applied but is missing" in entry["error"]["message"]
        assert "--migrations is repeatable" in entry["error"]["hint"]
        accepted = cli(command, *given(main), "--ignore-missing", "--json", url=db_url)
        assert accepted.exit_code == 0, (command, accepted.output)
        assert school(accepted)["status"] == "up_to_date"

    drift = cli("audit", *given(main), "--json", url=db_url)
    assert drift.exit_code == 1
    findings = school(drift)["findings"]
    assert {"kind": "ahead", "text": f"migration {V_DEFERRED} is applied but has no file (deleted, or the school "
            "is ahead)"} in findings  # fmt: skip
    assert any("students_email_idx not in migrations" in f["text"] for f in findings)

    clean = cli("audit", *given(main), "--ignore-missing", "--json", url=db_url)
    assert clean.exit_code == 0, clean.output
    entry = school(clean)
    assert entry["findings"] == [] and entry["drift"] is False
    assert any(f"version(s) {V_DEFERRED} are applied with no file" in note for note in entry["notes"])
    human = cli("audit", *given(main), "--ignore-missing", url=db_url)
    assert "compared only with what the files create" in human.stdout
    assert versions(db_url) == ALL and index_exists(db_url)  # read-only, all of it


def test_the_audit_with_ignore_missing_still_finds_drift_in_what_the_files_create(
    dirs: tuple[Path, Path], db_url: str
) -> None:
    main, deferred = dirs
    migrate_both(db_url, main, deferred)
    execute_sync(db_url, "ALTER TABLE grades ALTER COLUMN score TYPE bigint")
    execute_sync(db_url, "CREATE TABLE notes_by_hand (id int)")

    partial = cli("audit", *given(main), "--ignore-missing", "--json", url=db_url)
    assert partial.exit_code == 1
    texts = [f["text"] for f in school(partial)["findings"]]
    assert texts == ["grades.score: type bigint, migrations say integer"], texts
    # With every directory the comparison is whole again: the table made by hand is drift too.
    full = cli("audit", *given(main, deferred), "--json", url=db_url)
    texts = [f["text"] for f in school(full)["findings"]]
    assert "table notes_by_hand not in migrations" in texts and len(texts) == 2, texts


# --- revert ---------------------------------------------------------------------------------------------------


def test_revert_reaches_the_deferred_version_only_when_its_directory_is_given(
    dirs: tuple[Path, Path], db_url: str
) -> None:
    main, deferred = dirs
    migrate_both(db_url, main, deferred)

    above = cli("revert", "--target", str(V3), *given(main), "--ignore-missing", "--json", url=db_url)
    assert above.exit_code == 0, above.output
    assert [s["version"] for s in school(above)["steps"]] == [V4]
    # Past the deferred version with the main directory alone: refused before any down file runs.
    refused = cli("revert", "--target", str(V1), *given(main), "--ignore-missing", "--json", url=db_url)
    assert refused.exit_code == 1
    error = school(refused)["error"]
    assert error["code"] == "not_reversible"
    assert f"version {V_DEFERRED} is applied above the target but has no file in {main}" in error["message"]
    assert "would skip it" in error["hint"]
    assert versions(db_url) == [V1, V_DEFERRED, V3] and index_exists(db_url)
    assert cli("revert", "--target", str(V1), *given(main), url=db_url).exit_code == 1  # missing, as without it

    both = cli("revert", "--target", str(V1), *given(main, deferred), "--json", url=db_url)
    assert both.exit_code == 0, both.output
    assert [s["version"] for s in school(both)["steps"]] == [V3, V_DEFERRED]
    assert versions(db_url) == [V1] and not index_exists(db_url)
    assert school(migrate_both(db_url, main, deferred))["applied"] == [V_DEFERRED, V3, V4]


# --- the Python API and the release record ------------------------------------------------------------------------


def test_the_python_api_takes_several_directories(dirs: tuple[Path, Path], fresh_url: str) -> None:
    main, deferred = dirs
    result = orchestrator.provision(fresh_url, migrations=[main, deferred], extensions=())
    assert result.ok and result.applied_versions == ALL

    accepted = orchestrator.run(
        Request(Command.STATUS, migrations=(main,), database_url=fresh_url, ignore_missing=True)
    )
    assert accepted.ok
    alone = orchestrator.run(Request(Command.STATUS, migrations=main, database_url=fresh_url))  # one Path, as before
    assert not alone.ok and alone.outcomes[0].result.status.value == "missing"


def test_each_directory_keeps_its_own_released_sum_and_the_gate_checks_each(
    dirs: tuple[Path, Path], db_url: str
) -> None:
    main, deferred = dirs
    released = CliRunner().invoke(app, ["lint", str(main), str(deferred), "--release", "--no-squawk"])
    assert released.exit_code == 0, released.output
    assert sorted(read_released(main / "released.sum").entries) == sorted(MAIN_SET)
    assert sorted(read_released(deferred / "released.sum").entries) == sorted(DEFERRED_SET)

    up = deferred / DEFERRED_UP
    up.write_text(up.read_text() + "-- edited after its release\n")
    refused = cli("migrate", *given(main, deferred), url=db_url)
    assert refused.exit_code == 2, refused.output
    assert "released-file-edited" in refused.stderr and DEFERRED_UP in refused.stderr
    assert fetchval_sync(db_url, "SELECT to_regclass('_sqlx_migrations')") is None  # nothing touched
    # The main directory's record knows nothing of the deferred files: alone, it migrates.
    assert cli("migrate", *given(main), url=db_url).exit_code == 0
    assert versions(db_url) == [V1, V3, V4]
