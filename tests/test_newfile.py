"""`orchestrator new --simple` / `-r`: one `<version>_<desc>.sql` or an up/down pair, byte for byte what
`sqlx migrate add` writes, and one convention per directory as sqlx keeps it (its first migration decides; a flag
that would mix the two is refused, exit 2, nothing written). The real sqlx CLI reads what we write, and we read
what it writes."""

from __future__ import annotations

import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fleetkit import SQLX, sqlx_info
from typer.testing import CliRunner

from orchestrator.cli import app
from orchestrator.errors import UsageError
from orchestrator.newfile import SIMPLE_CONTENT, new_migration
from orchestrator.source import load_migrations

NOW = datetime(2025, 4, 1, 9, 30, 15, tzinfo=UTC)
LATER = datetime(2025, 4, 2, 9, 30, 15, tzinfo=UTC)


def sqlx_add(directory: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run([str(SQLX), "migrate", "add", "--source", str(directory), *args], check=True,
                   capture_output=True, env=env, timeout=60)  # fmt: skip


def test_simple_writes_one_file_as_sqlx_migrate_add_does(tmp_path: Path) -> None:
    [path] = new_migration(tmp_path / "ours", "add library books", reversible=False, now=NOW)
    sqlx_add(tmp_path / "theirs", "add library books")
    [theirs] = (tmp_path / "theirs").iterdir()

    assert path.name == "20250401093015_add_library_books.sql"
    assert path.read_bytes() == theirs.read_bytes() == SIMPLE_CONTENT.encode()
    [migration] = load_migrations(tmp_path / "ours").migrations
    assert (migration.version, migration.description, migration.up_kind) == (
        20250401093015,
        "add library books",
        "simple",
    )


def test_the_directory_s_first_migration_decides_without_a_flag(tmp_path: Path) -> None:
    new_migration(tmp_path / "simple", "first", reversible=False, now=NOW)
    assert [p.name for p in new_migration(tmp_path / "simple", "second", now=LATER)] == ["20250402093015_second.sql"]
    new_migration(tmp_path / "pairs", "first", now=NOW)  # empty: a pair, our default
    assert len(new_migration(tmp_path / "pairs", "second", now=LATER)) == 2


@pytest.mark.parametrize(("first_reversible", "asked"), [(True, False), (False, True)])
def test_a_flag_that_would_mix_the_two_kinds_is_refused(tmp_path: Path, first_reversible: bool, asked: bool) -> None:
    new_migration(tmp_path, "first", reversible=first_reversible, now=NOW)
    before = sorted(tmp_path.iterdir())
    with pytest.raises(UsageError, match="would mix the two") as caught:
        new_migration(tmp_path, "second", reversible=asked, now=LATER)
    assert "20250401093015_first" in caught.value.message and caught.value.hint
    assert sorted(tmp_path.iterdir()) == before


def test_sqlx_sees_our_simple_file_and_follows_its_convention(tmp_path: Path, db_url: str) -> None:
    migrations = tmp_path / "migrations"
    [ours] = new_migration(migrations, "create books", reversible=False, now=NOW)
    ours.write_text("CREATE TABLE books (id int);\n")
    assert sqlx_info(migrations, db_url) == {20250401093015: "pending"}
    sqlx_add(migrations, "-r", "more books")  # sqlx keeps the directory simple too, -r or not
    assert [p.name.endswith((".up.sql", ".down.sql")) for p in migrations.iterdir()] == [False, False]


def test_the_cli_prints_what_it_wrote_and_refuses_both_flags(tmp_path: Path) -> None:
    runner = CliRunner()
    simple = runner.invoke(app, ["new", "--simple", "add", "books", "--migrations", str(tmp_path)])
    assert simple.exit_code == 0, simple.output
    [path] = simple.stdout.split()
    assert path.endswith("_add_books.sql") and Path(path).is_file()
    both = runner.invoke(app, ["new", "-r", "--simple", "x", "--migrations", str(tmp_path / "other")])
    assert both.exit_code == 2 and "contradict" in both.stderr
    mixed = runner.invoke(app, ["new", "-r", "more", "--migrations", str(tmp_path)])
    assert mixed.exit_code == 2 and "would mix the two" in " ".join(mixed.stderr.split())
    assert len(list(tmp_path.iterdir())) == 1
