"""`orchestrator lint` and `orchestrator new`: pure files, no database.

Each rule fires on an unsafe example at the right line and stays quiet on its safe alternative. Squawk runs for
real where it is installed (the squawk-cli wheel puts it next to the venv's python).
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import structlog
import typer
from sourcecases import INVALID_SOURCES, SQLX_SHAPES, Entry, Link, make
from typer.testing import CliRunner, Result

from orchestrator.cli import app as main_app
from orchestrator.cli.lint import register
from orchestrator.errors import InvalidInput, MigrationSourceError, UsageError
from orchestrator.lint import LintReport, lint_migrations, lint_paths
from orchestrator.lint import squawk as squawk_module
from orchestrator.lint.released import SUM_FILENAME, digest, read_released, render_released
from orchestrator.lint.render import render_editor, render_text
from orchestrator.newfile import DOWN_CONTENT, UP_CONTENT, new_migration
from orchestrator.source import load_migrations

ROOT = Path(__file__).resolve().parent.parent
UNSAFE_DIR = Path(__file__).resolve().parent / "data" / "unsafe_migrations"
UP = "20250401000000_change.up.sql"
DOWN = "20250401000000_change.down.sql"

needs_squawk = pytest.mark.skipif(squawk_module.find_squawk() is None, reason="squawk is not installed")


def write_migration(directory: Path, up: str | bytes, *, down: str | bytes | None = "SELECT 1;\n") -> Path:
    """Write the pair 20250401000000_change.{up,down}.sql (no down file when `down` is None); returns the up path."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / UP
    path.write_bytes(up if isinstance(up, bytes) else up.encode())
    if down is not None:
        (directory / DOWN).write_bytes(down if isinstance(down, bytes) else down.encode())
    return path


def lint_sql(tmp_path: Path, up: str | bytes, *, down: str | bytes | None = "SELECT 1;\n") -> LintReport:
    """Our rules only (squawk has its own tests), on one migration."""
    write_migration(tmp_path, up, down=down)
    return lint_paths([tmp_path], released_file=None, use_squawk=False)


def flagged(report: LintReport) -> set[tuple[str, int]]:
    """(rule, line) of every unsuppressed finding."""
    return {(f.rule, f.line) for f in report.findings if not f.suppressed}


# --- our rules: unsafe example (rule, line) and its safe alternative ----------------------------------------------

CASES = [
    pytest.param(
        "drop-column",
        "-- Phones move to guardians.\nALTER TABLE students\n    DROP COLUMN phone;\n",
        3,
        "-- Phones move to guardians.\nALTER TABLE students ADD COLUMN guardian_phone text;\n",
        id="drop-column",
    ),
    pytest.param(
        "drop-column",
        "ALTER TABLE students ADD COLUMN x text,\n  DROP IF EXISTS phone CASCADE;\n",
        2,
        "ALTER TABLE students DROP CONSTRAINT students_phone_check;\n",
        id="drop-column-without-keyword",
    ),
    pytest.param(
        "drop-table",
        "-- Announcements move elsewhere.\n\nDROP TABLE IF EXISTS announcements;\n",
        3,
        "CREATE TABLE scratch (id bigint PRIMARY KEY);\nDROP TABLE scratch;\n",
        id="drop-table",
    ),
    pytest.param(
        "rename-column",
        "SELECT 1;\nALTER TABLE classes RENAME room TO room_code;\n",
        2,
        "ALTER TABLE classes RENAME CONSTRAINT classes_room_check TO classes_room_code_check;\n",
        id="rename-column",
    ),
    pytest.param(
        "rename-table",
        "-- Marks.\nALTER TABLE IF EXISTS grades RENAME TO marks;\n",
        2,
        "-- Marks.\nCREATE VIEW marks AS SELECT * FROM grades;\n",
        id="rename-table",
    ),
    pytest.param(
        "change-column-type",
        "-- Wider scores.\nALTER TABLE grades\n  ALTER COLUMN score TYPE numeric(6,2) USING score::numeric(6,2);\n",
        3,
        "-- Wider scores.\nALTER TABLE grades ALTER COLUMN score SET DEFAULT 0;\n",
        id="change-column-type",
    ),
    pytest.param(
        "change-column-type",
        'ALTER TABLE ONLY "Grades" ALTER "Score" SET DATA TYPE bigint;\n',
        1,
        'ALTER TABLE ONLY "Grades" ALTER "Score" DROP NOT NULL;\n',
        id="set-data-type",
    ),
    pytest.param(
        "add-not-null-without-default",
        "-- Nationality.\nALTER TABLE students ADD COLUMN nationality text NOT NULL;\n",
        2,
        "-- Nationality.\nALTER TABLE students ADD COLUMN nationality text NOT NULL DEFAULT 'unknown';\n",
        id="add-not-null",
    ),
    pytest.param(
        "add-not-null-without-default",
        "ALTER TABLE students\n  ADD COLUMN IF NOT EXISTS nationality text\n    NOT NULL;\n",
        3,
        "ALTER TABLE students ADD COLUMN nationality text CHECK (nationality IS NOT NULL);\n",
        id="add-not-null-multiline",
    ),
    pytest.param(
        "fk-without-on-delete",
        "CREATE TABLE homework (\n  id bigint PRIMARY KEY,\n  class_id uuid NOT NULL REFERENCES classes (id)\n);\n",
        3,
        "CREATE TABLE homework (\n  id bigint PRIMARY KEY,\n"
        "  class_id uuid NOT NULL REFERENCES classes (id) ON DELETE CASCADE\n);\n",
        id="fk-column",
    ),
    pytest.param(
        "fk-without-on-delete",
        "CREATE TABLE homework (\n  id bigint PRIMARY KEY,\n  class_id uuid,\n"
        "  FOREIGN KEY (class_id) REFERENCES classes (id) ON UPDATE CASCADE\n);\n",
        4,
        "CREATE TABLE homework (\n  id bigint PRIMARY KEY,\n  class_id uuid,\n"
        "  FOREIGN KEY (class_id) REFERENCES classes (id) ON UPDATE CASCADE ON DELETE RESTRICT\n);\n",
        id="fk-table-constraint",
    ),
    pytest.param(
        "fk-without-on-delete",
        "-- Link.\nALTER TABLE announcements ADD CONSTRAINT announcements_class_fk\n"
        "  FOREIGN KEY (class_id) REFERENCES classes (id) NOT VALID;\n",
        3,
        "-- Link.\nALTER TABLE announcements ADD CONSTRAINT announcements_class_fk\n"
        "  FOREIGN KEY (class_id) REFERENCES classes (id) ON DELETE SET NULL NOT VALID;\n",
        id="fk-alter-table",
    ),
    pytest.param(
        "index-without-concurrently",
        "-- Lookup.\nCREATE UNIQUE INDEX students_email_idx ON students (email);\n",
        2,
        "-- no-transaction\nCREATE INDEX CONCURRENTLY IF NOT EXISTS students_email_idx ON students (email);\n",
        id="index-without-concurrently",
    ),
    pytest.param(
        "index-without-concurrently",
        "CREATE INDEX ON ONLY public.students (email);\n",
        1,
        "CREATE TABLE library (id bigint PRIMARY KEY, title text);\nCREATE INDEX ON library (title);\n",
        id="index-unnamed",
    ),
    pytest.param(
        "concurrently-in-transaction",
        "-- Index.\nCREATE INDEX CONCURRENTLY students_email_idx ON students (email);\n",
        2,
        "-- no-transaction\nCREATE INDEX CONCURRENTLY students_email_idx ON students (email);\n",
        id="concurrently-in-transaction",
    ),
    pytest.param(
        "concurrently-in-transaction",
        "SELECT 1;\nDROP INDEX CONCURRENTLY students_email_idx;\n",
        2,
        "REFRESH MATERIALIZED VIEW CONCURRENTLY class_sizes;\n",
        id="drop-index-concurrently",
    ),
    pytest.param(
        "byte-order-mark",
        b"\xef\xbb\xbfCREATE TABLE t (id bigint PRIMARY KEY);\n",
        1,
        b"CREATE TABLE t (id bigint PRIMARY KEY);\n",
        id="byte-order-mark",
    ),
    pytest.param(
        "crlf-line-endings",
        b"-- LF here\nCREATE TABLE t (id bigint PRIMARY KEY);\r\n",
        2,
        b"-- LF here\nCREATE TABLE t (id bigint PRIMARY KEY);\n",
        id="crlf-line-endings",
    ),
]


@pytest.mark.parametrize(("rule", "unsafe", "line", "safe"), CASES)
def test_rule_fires_on_unsafe_and_stays_quiet_on_safe(
    tmp_path: Path, rule: str, unsafe: str | bytes, line: int, safe: str | bytes
) -> None:
    report = lint_sql(tmp_path / "unsafe", unsafe)
    assert (rule, line) in flagged(report), render_text(report)
    finding = next(f for f in report.findings if f.rule == rule)
    assert finding.why and finding.instead and finding.origin == "orchestrator"

    quiet = lint_sql(tmp_path / "safe", safe)
    assert quiet.findings == [], render_text(quiet)


def test_findings_point_at_the_exact_column(tmp_path: Path) -> None:
    report = lint_sql(tmp_path, "-- x\nALTER TABLE students DROP COLUMN phone;\n")
    (f,) = report.findings
    assert (f.line, f.column) == (2, 22)
    assert f.severity == "error" and "phone" in f.message and "students" in f.message


def test_a_file_named_directly_is_linted_as_part_of_its_directory(tmp_path: Path) -> None:
    up = write_migration(tmp_path, "-- x\nALTER TABLE students DROP COLUMN phone;\n")
    report = lint_paths([up], released_file=None, use_squawk=False)
    assert report.files_checked == [up] and flagged(report) == {("drop-column", 2)}
    # So a down without its up is refused as `migrate` refuses it, even when only the down is named.
    up.unlink()
    with pytest.raises(MigrationSourceError, match="down file has no up file"):
        lint_paths([tmp_path / DOWN], released_file=None, use_squawk=False)


def test_a_file_sqlx_ignores_named_directly_is_invalid_input(tmp_path: Path) -> None:
    scratch = tmp_path / "scratch.sql"
    scratch.write_text("DROP TABLE students;\n")
    with pytest.raises(MigrationSourceError, match="not a migration file: SQLx ignores it"):
        lint_paths([scratch], released_file=None, use_squawk=False)


def test_simple_migrations_need_no_down(tmp_path: Path) -> None:
    (tmp_path / "20250401000000_simple.sql").write_text("CREATE TABLE t (id bigint PRIMARY KEY);\n")
    assert lint_paths([tmp_path], released_file=None, use_squawk=False).findings == []


def test_down_files_may_drop_rename_and_retype_what_their_up_did(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "ALTER TABLE students ADD COLUMN nickname text;\nCREATE TABLE library (id bigint PRIMARY KEY);\n"
        "ALTER TABLE classes RENAME room TO room_code;\nALTER TABLE grades ALTER COLUMN score TYPE numeric(6,2);\n",
        down="ALTER TABLE students DROP COLUMN nickname;\nDROP TABLE IF EXISTS library;\n"
        "ALTER TABLE classes RENAME room_code TO room;\nALTER TABLE grades ALTER COLUMN score TYPE numeric(5,2);\n",
    )
    assert {(f.rule, f.path.name) for f in report.findings} == {
        ("rename-column", UP),
        ("change-column-type", UP),
    }, render_text(report)


def test_a_down_file_dropping_what_its_up_did_not_create_is_a_warning(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "ALTER TABLE students ADD COLUMN nickname text;\n",
        down="ALTER TABLE students DROP COLUMN nickname, DROP COLUMN phone;\nDROP TABLE library, students_tmp;\n",
    )
    found = [(f.rule, f.severity, f.line, f.message) for f in report.findings]
    assert found == [
        ("down-loses-data", "warning", 1, "drops column phone of table students, which its up file did not add"),
        ("down-loses-data", "warning", 2, "drops tables library, students_tmp, which its up file did not create"),
    ]
    assert report.ok
    assert all(f.path.name == DOWN for f in report.findings)


def test_down_files_still_get_the_rules_that_make_them_fail_with_advice_for_a_down(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "ALTER TABLE students DROP COLUMN -- lint:ignore drop-column reason: unused since v42\n  email;\n"
        "DROP INDEX students_phone_idx;\n",
        down="-- undo\nCREATE INDEX CONCURRENTLY a_idx ON t (a);\n"
        "ALTER TABLE students ADD COLUMN email text NOT NULL;\nCREATE INDEX students_phone_idx ON students (phone);\n",
    )
    assert flagged(report) == {
        ("concurrently-in-transaction", 2),
        ("add-not-null-without-default", 3),
        ("index-without-concurrently", 4),
    }
    down = {f.rule: f for f in report.findings if f.path.name == DOWN}
    assert len(down) == 3
    assert "the down file's first line" in down["concurrently-in-transaction"].instead
    assert "rollback fails" in down["add-not-null-without-default"].instead
    assert "later migration" not in down["add-not-null-without-default"].instead
    assert "its own `-- no-transaction` first line" in down["index-without-concurrently"].instead
    # The same rule in an up file keeps the up file's advice.
    up = lint_sql(tmp_path / "up", "ALTER TABLE students ADD COLUMN email text NOT NULL;\n")
    assert "later migration" in up.findings[0].instead


# --- type changes: judged against the types the earlier migrations declare ---------------------------------------


def migrations_with_column(directory: Path, declared: str, change: str) -> Path:
    """A pg_dump-style first migration declaring `declared`, then a pair changing it; returns the directory."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "20250101000000_initial.sql").write_text(
        f"CREATE TABLE public.students (\n    id integer NOT NULL,\n    name {declared} NOT NULL DEFAULT ''\n);\n"
    )
    write_migration(directory, f"ALTER TABLE ONLY students\n  ALTER COLUMN name {change};\n")
    return directory


@pytest.mark.parametrize(
    ("declared", "change", "message"),
    [
        ("character varying(50)", "TYPE varchar(50)", None),
        ("character varying(50)", "TYPE character varying(200)", None),
        ("varchar(50)", "SET DATA TYPE text", None),
        ("varchar", "TYPE text", None),
        ("text", "TYPE varchar", None),
        ("numeric(5,2)", "TYPE numeric(7,2)", None),
        ("numeric(5, 2)", "TYPE decimal", None),
        ("numeric(5)", "TYPE numeric(9,0)", None),
        ("timestamp(0) without time zone", "TYPE timestamp(3)", None),
        ("timestamp(3) with time zone", "TYPE timestamptz", None),
        ("varchar(200)", "TYPE varchar(50)", "from varchar(200) to varchar(50)"),
        ("text", "TYPE varchar(50)", "from text to varchar(50)"),
        ("numeric(5,2)", "TYPE numeric(7,3)", "from numeric(5, 2) to numeric(7, 3)"),
        ("numeric(5,2)", "TYPE numeric(4,2)", "from numeric(5, 2) to numeric(4, 2)"),
        ("char(5)", "TYPE char(10)", "from char(5) to char(10)"),
        ("char(5)", "TYPE text", "from char(5) to text"),
        ("integer", "TYPE bigint", "from integer to bigint"),
        ("varchar(10)[]", "TYPE varchar(20)[]", "(its current type is not known from the migrations)"),
        ("varchar(50)", "TYPE text USING upper(name)", "from varchar(50) to text with USING or COLLATE"),
        ("varchar(50)", 'TYPE text COLLATE "C"', "from varchar(50) to text with USING or COLLATE"),
        ('varchar(50) COLLATE "C"', "TYPE text", "(its current type is not known from the migrations)"),
    ],
)
def test_type_changes_without_a_rewrite_are_not_reported_and_the_rest_are(
    tmp_path: Path, declared: str, change: str, message: str | None
) -> None:
    report = lint_paths([migrations_with_column(tmp_path, declared, change)], released_file=None, use_squawk=False)
    if message is None:
        assert report.findings == [], render_text(report)
    else:
        (f,) = report.findings
        assert (f.rule, f.severity, f.path.name, f.line) == ("change-column-type", "error", UP, 2)
        assert f.message.startswith("changes the type of column name of table students ") and message in f.message


def test_the_column_type_follows_renames_drops_and_earlier_type_changes(tmp_path: Path) -> None:
    (tmp_path / "1_create.sql").write_text("CREATE TABLE s (a varchar(10), b int);\n")
    (tmp_path / "2_evolve.sql").write_text(
        "-- lint:ignore-file rename-column, rename-table reason: test\n"
        "ALTER TABLE s RENAME COLUMN a TO c;\nALTER TABLE s RENAME TO t;\n"
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(20), ADD COLUMN d numeric(4,1);\n"
    )
    (tmp_path / "3_widen.sql").write_text(
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(30);\nALTER TABLE t ALTER COLUMN d TYPE numeric(6,1);\n"
        "ALTER TABLE t ALTER COLUMN c TYPE varchar(15);\n"  # narrower than 30, though wider than the first 10
        "ALTER TABLE t ALTER COLUMN b TYPE bigint;\n"
    )
    (tmp_path / "4_gone.sql").write_text("ALTER TABLE t DROP COLUMN -- lint:ignore drop-column reason: test\n d;\n")
    (tmp_path / "5_again.sql").write_text("ALTER TABLE t ADD COLUMN d text;\nALTER TABLE t ALTER COLUMN d TYPE text;\n")
    report = lint_paths([tmp_path], released_file=None, use_squawk=False)
    assert {(f.path.name, f.line, f.message.split(" from ")[-1]) for f in report.errors} == {
        ("3_widen.sql", 3, "varchar(30) to varchar(15)"),
        ("3_widen.sql", 4, "int to bigint"),
    }, render_text(report)


def test_a_file_named_directly_is_judged_against_the_types_of_its_directory(tmp_path: Path) -> None:
    migrations_with_column(tmp_path, "varchar(50)", "TYPE text")
    assert lint_paths([tmp_path / UP], released_file=None, use_squawk=False).findings == []


def test_the_gate_judges_type_changes_against_released_files_too(tmp_path: Path) -> None:
    directory = migrations_with_column(tmp_path, "varchar(50)", "TYPE varchar(20)")
    (directory / UP).unlink()
    (directory / DOWN).unlink()
    release(directory)  # the first migration is released (and so exempt from the rules)
    write_migration(directory, "ALTER TABLE students ALTER COLUMN name TYPE varchar(20);\n")
    source = load_migrations(directory)
    report = lint_migrations(source.migrations, directories=[directory], use_squawk=False)
    assert [(f.rule, f.path.name) for f in report.findings] == [("change-column-type", UP)]
    assert "from varchar(50) to varchar(20)" in report.findings[0].message


@needs_squawk
def test_squawk_does_not_report_a_type_change_we_found_safe(tmp_path: Path) -> None:
    safe = lint_paths([migrations_with_column(tmp_path / "safe", "varchar(50)", "TYPE text")], released_file=None)
    assert "squawk:changing-column-type" not in {f.rule for f in safe.findings}, render_text(safe)
    unsafe = lint_paths([migrations_with_column(tmp_path / "unsafe", "integer", "TYPE bigint")], released_file=None)
    assert "change-column-type" in {f.rule for f in unsafe.findings}
    # Squawk itself flags both (so the first assertion is ours dropping it, not squawk staying quiet).
    found = squawk_module.run_squawk([f for m in load_migrations(tmp_path / "safe") for f in m.files])
    assert "squawk:changing-column-type" in {f.rule for f in found}


# --- what SQLx accepts and the platform would rather not have: warnings --------------------------------------------


def test_sqlx_shapes_load_and_lint_with_a_warning_each(tmp_path: Path) -> None:
    make(tmp_path, SQLX_SHAPES)
    report = lint_paths([tmp_path], released_file=None, use_squawk=False)
    assert report.ok and report.errors == []
    assert {(f.rule, f.path.name) for f in report.warnings} == {
        ("up-without-down", "2_create_b.up.sql"),
        ("down-beside-plain-file", "5_plain.down.sql"),
        ("down-named-differently", "6_drop_f.down.sql"),
        ("version-with-sign", "+7_signed.sql"),
        ("ignored-entry", "10_a_directory.sql"),
        ("ignored-entry", "11_a_pipe.sql"),
        ("ignored-entry", "12_a_device.up.sql"),
    }, render_text(report)
    by_rule = {f.rule: f for f in report.warnings}
    assert "2_create_b.down.sql" in by_rule["up-without-down"].message
    assert "5_plain.sql" in by_rule["down-beside-plain-file"].message
    assert "'drop f' differs from its up file's 'add f'" in by_rule["down-named-differently"].message
    assert "SQLx reads 7" in by_rule["version-with-sign"].message
    assert all(f.why and f.instead for f in report.warnings)


def test_an_up_without_a_down_can_be_suppressed_or_renamed_to_a_plain_file(tmp_path: Path) -> None:
    up = tmp_path / "1_seed.up.sql"
    up.parent.mkdir(parents=True, exist_ok=True)
    up.write_text("-- lint:ignore-file up-without-down reason: seed data, nothing to undo\nSELECT 1;\n")
    report = lint_paths([tmp_path], released_file=None, use_squawk=False)
    assert [f.rule for f in report.suppressed] == ["up-without-down"] and report.warnings == []
    up.rename(tmp_path / "1_seed.sql")
    assert lint_paths([tmp_path], released_file=None, use_squawk=False).findings == []


def test_naming_warnings_of_released_files_are_not_repeated(tmp_path: Path) -> None:
    (tmp_path / "1_seed.up.sql").write_text("SELECT 1;\n")
    applied = {(tmp_path / "1_seed.up.sql").resolve()}  # what the fleet's ledgers hold (adoption.read_applied)
    baseline = lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False, baseline=applied)
    assert [f.rule for f in baseline.suppressed] == ["up-without-down"]
    assert lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False).findings == []
    # Adding the down file later is not an edit of anything released.
    (tmp_path / "1_seed.down.sql").write_text("SELECT 2;\n")
    assert lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False).findings == []


def test_a_dangling_link_anywhere_in_the_directory_is_refused_as_sqlx_refuses_it(tmp_path: Path) -> None:
    make(tmp_path, {"1_a.sql": "SELECT 1;\n", "notes.md": Link("gone.md")})
    with pytest.raises(MigrationSourceError, match=r"notes\.md: is a symbolic link to gone\.md, which is missing"):
        lint_paths([tmp_path], released_file=None, use_squawk=False)


def test_sql_in_comments_strings_and_function_bodies_is_not_flagged(tmp_path: Path) -> None:
    sql = (
        "-- ALTER TABLE students DROP COLUMN phone;\n"
        "/* DROP TABLE students; */\n"
        "COMMENT ON TABLE students IS 'we will DROP TABLE students; one day';\n"
        "CREATE FUNCTION f() RETURNS void LANGUAGE plpgsql AS $$\n"
        "BEGIN EXECUTE 'ALTER TABLE students DROP COLUMN phone'; END $$;\n"
    )
    assert lint_sql(tmp_path, sql).findings == []


def test_changes_to_a_table_created_in_the_same_file_are_safe(tmp_path: Path) -> None:
    sql = (
        "CREATE TABLE library (id bigint PRIMARY KEY, title text, isbn varchar(13));\n"
        "ALTER TABLE library ADD COLUMN shelf text NOT NULL;\n"
        "ALTER TABLE library ALTER COLUMN isbn TYPE text, DROP COLUMN title;\n"
        "CREATE INDEX library_shelf_idx ON library (shelf);\n"
    )
    assert lint_sql(tmp_path, sql).findings == []


def test_missing_path_is_invalid_input(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        lint_paths([tmp_path / "nope"], released_file=None, use_squawk=False)


def big_migration(size: int) -> tuple[str, set[tuple[str, int, int]], set[int]]:
    """About `size` characters of SQL using every kind of quoting, with an unsafe statement every 10th block and a
    suppressed one every 7th of those. Returns the text, (rule, line, column) of each unsuppressed error, and the
    lines of the suppressed findings."""
    block = (
        "-- Library tables for school {i}; a semicolon in a comment does not split.\n"
        "CREATE TABLE library_{i} (\n"
        "    id bigint PRIMARY KEY,\n"
        "    title text NOT NULL DEFAULT 'untitled; for now',\n"
        "    class_id uuid REFERENCES classes (id) ON DELETE CASCADE\n"
        ");\n"
        "CREATE FUNCTION touch_{i}() RETURNS trigger LANGUAGE plpgsql AS $$\n"
        "BEGIN NEW.title := 'x; DROP TABLE students;'; RETURN NEW; END $$;\n"
        "/* a block; /* nested; ALTER TABLE students DROP COLUMN x; */ still a comment */\n"
        "ALTER TABLE students ADD COLUMN note_{i} text DEFAULT E'it\\'s; fine';\n"
    )
    parts: list[str] = []
    errors: set[tuple[str, int, int]] = set()
    suppressed: set[int] = set()
    length, line, i = 0, 1, 0
    while length < size:
        text = block.format(i=i)
        if i % 10 == 9:
            unsafe = (i // 10) % 7 == 6
            if unsafe:
                text += f"-- lint:ignore drop-column reason: generated case {i}\n"
            text += f"ALTER TABLE students\n    DROP COLUMN phone_{i};\n"
            drop_line = line + text.count("\n") - 1
            if unsafe:
                suppressed.add(drop_line)
            else:
                errors.add(("drop-column", drop_line, 5))
        parts.append(text)
        length += len(text)
        line += text.count("\n")
        i += 1
    return "".join(parts), errors, suppressed


def test_a_4_mb_file_is_linted_with_every_finding_on_its_line(tmp_path: Path) -> None:
    # The pytest-timeout guards the time: splitting and line lookups were quadratic (a 4 MB file took minutes).
    text, errors, suppressed = big_migration(4 * 1024 * 1024)
    write_migration(tmp_path, text)
    report = lint_paths([tmp_path], released_file=None)  # squawk too, where it is installed
    assert len(errors) > 500 and len(suppressed) > 50
    assert {(f.rule, f.line, f.column) for f in report.errors} == errors
    assert {f.line for f in report.suppressed} == suppressed
    assert all(f.suppression_reason and f.suppression_reason.startswith("generated case") for f in report.suppressed)


# --- suppressions -------------------------------------------------------------------------------------------------


def test_suppression_with_reason_on_the_line_before(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "-- lint:ignore drop-column reason: nothing reads it since v42\nALTER TABLE students\n  DROP COLUMN phone;\n",
    )
    (f,) = report.findings
    assert f.rule == "drop-column" and f.line == 3
    assert f.suppressed and f.suppression_reason == "nothing reads it since v42"
    assert report.ok and report.errors == [] and report.suppressed == [f]
    assert "suppressed" in render_text(report) and render_editor(report) == ""


def test_suppression_at_the_end_of_the_line(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "ALTER TABLE students DROP COLUMN phone;  -- lint:ignore drop-column reason: unused since v42\n"
        "ALTER TABLE students DROP COLUMN email;\n",
    )
    assert flagged(report) == {("drop-column", 2)}
    assert [f.line for f in report.suppressed] == [1]


def test_suppression_covers_only_the_rules_it_names(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "-- lint:ignore rename-column reason: wrong rule\nALTER TABLE students DROP COLUMN phone;\n",
    )
    assert flagged(report) == {("drop-column", 2)}


def test_suppression_without_reason_is_an_error_and_suppresses_nothing(tmp_path: Path) -> None:
    report = lint_sql(tmp_path, "-- lint:ignore drop-column\nALTER TABLE students DROP COLUMN phone;\n")
    assert flagged(report) == {("suppression-without-reason", 1), ("drop-column", 2)}
    assert not report.ok


def test_file_suppression_in_the_first_comment_block(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "-- Drop the old phone columns.\n"
        "-- lint:ignore-file drop-column, rename-column reason: the app stopped using them in v42\n\n"
        "ALTER TABLE students DROP COLUMN phone;\nALTER TABLE teachers DROP COLUMN phone;\n"
        "ALTER TABLE classes RENAME room TO room_code;\n",
    )
    assert len(report.suppressed) == 3 and report.ok


def test_what_fails_on_every_database_cannot_be_suppressed(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "-- lint:ignore concurrently-in-transaction reason: it is fast\nCREATE INDEX CONCURRENTLY a_idx ON t (a);\n",
    )
    assert flagged(report) == {("concurrently-in-transaction", 2)}


def test_file_suppression_after_the_first_statement_is_an_error(tmp_path: Path) -> None:
    report = lint_sql(
        tmp_path,
        "ALTER TABLE students DROP COLUMN phone;\n-- lint:ignore-file drop-column reason: too late\n",
    )
    assert flagged(report) == {("drop-column", 1), ("misplaced-suppression", 2)}


# --- released files -----------------------------------------------------------------------------------------------


def release(directory: Path) -> Path:
    report = lint_paths([directory], released_file=directory / SUM_FILENAME, use_squawk=False, release=True)
    assert report.ok and report.released_recorded, render_text(report)
    return directory / SUM_FILENAME


def test_release_records_every_file_with_a_checked_header(tmp_path: Path) -> None:
    up = write_migration(tmp_path, "CREATE TABLE t (id bigint PRIMARY KEY);\n", down="DROP TABLE t;\n")
    sum_file = release(tmp_path)
    lines = sum_file.read_text().splitlines()
    assert lines[1:] == [f"{DOWN} {digest((tmp_path / DOWN).read_bytes())}", f"{UP} {digest(up.read_bytes())}"]
    assert re.fullmatch(r"sha384:[0-9a-f]{96}", lines[0])
    released = read_released(sum_file)
    assert released.intact and set(released.entries) == {UP, DOWN}
    # Unchanged files lint clean against their record.
    assert lint_paths([tmp_path], released_file=sum_file, use_squawk=False).findings == []


def test_release_is_refused_while_the_lint_fails(tmp_path: Path) -> None:
    write_migration(tmp_path, "ALTER TABLE students DROP COLUMN phone;\n")
    report = lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False, release=True)
    assert not report.ok and report.released_recorded is None
    assert not (tmp_path / SUM_FILENAME).exists()


def test_editing_a_released_file_is_an_error(tmp_path: Path) -> None:
    up = write_migration(tmp_path, "CREATE TABLE t (id bigint PRIMARY KEY);\n")
    sum_file = release(tmp_path)
    up.write_text("CREATE TABLE t (id bigint PRIMARY KEY, name text);\n")
    report = lint_paths([tmp_path], released_file=sum_file, use_squawk=False)
    (f,) = report.findings
    assert (f.rule, f.path, f.line) == ("released-file-edited", up, 1) and not report.ok
    assert "line endings" not in f.message


def test_a_crlf_only_difference_says_so(tmp_path: Path) -> None:
    up = write_migration(tmp_path, "-- t\nCREATE TABLE t (id bigint PRIMARY KEY);\n")
    sum_file = release(tmp_path)
    up.write_bytes(up.read_bytes().replace(b"\n", b"\r\n"))
    report = lint_paths([tmp_path], released_file=sum_file, use_squawk=False)
    edited = next(f for f in report.findings if f.rule == "released-file-edited")
    assert "only in line endings" in edited.message and "now CRLF" in edited.message


def test_editing_a_released_up_cannot_be_suppressed_but_a_down_can(tmp_path: Path) -> None:
    up = write_migration(tmp_path, "SELECT 1;\n", down="SELECT 2;\n")
    sum_file = release(tmp_path)
    reason = "-- lint:ignore-file released-file-edited reason: fixing a typo\n"
    up.write_text(reason + "SELECT 1;\n")
    (tmp_path / DOWN).write_text(reason + "SELECT 2;\n")
    report = lint_paths([tmp_path], released_file=sum_file, use_squawk=False)
    by_file = {f.path.name: f for f in report.findings}
    assert not by_file[UP].suppressed and by_file[DOWN].suppressed


def test_new_unreleased_files_can_be_edited_freely(tmp_path: Path) -> None:
    write_migration(tmp_path, "SELECT 1;\n")
    sum_file = release(tmp_path)
    newer = tmp_path / "20250501000000_newer.sql"
    newer.write_text("SELECT 1;\n")
    newer.write_text("SELECT 2;\n")
    assert lint_paths([tmp_path], released_file=sum_file, use_squawk=False).findings == []


def test_no_sum_file_means_nothing_released(tmp_path: Path) -> None:
    write_migration(tmp_path, "SELECT 1;\n")
    assert lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False).findings == []


def test_hand_edited_sum_and_deleted_released_files(tmp_path: Path) -> None:
    write_migration(tmp_path, "SELECT 1;\n")
    sum_file = release(tmp_path)
    (tmp_path / UP).unlink()
    (tmp_path / DOWN).unlink()
    lines = sum_file.read_text().splitlines()
    sum_file.write_text("\n".join([lines[0], *lines[1:], f"20250101000000_extra.sql {digest(b'x')}"]) + "\n")
    report = lint_paths([tmp_path], released_file=sum_file, use_squawk=False)
    assert flagged(report) == {
        ("released-sum-edited", 1),
        ("released-file-deleted", 2),  # the down, listed first
        ("released-file-deleted", 3),
        ("released-file-deleted", 4),
    }


def test_a_malformed_sum_is_invalid_input(tmp_path: Path) -> None:
    write_migration(tmp_path, "SELECT 1;\n")
    (tmp_path / SUM_FILENAME).write_text("not a checksum\n")
    with pytest.raises(MigrationSourceError):
        lint_paths([tmp_path], released_file=tmp_path / SUM_FILENAME, use_squawk=False)


def test_render_released_is_sorted_and_stable() -> None:
    text = render_released({"b.sql": digest(b"b"), "a.sql": digest(b"a")})
    assert text.splitlines()[1].startswith("a.sql ") and text == render_released(
        {"a.sql": digest(b"a"), "b.sql": digest(b"b")}
    )


# --- squawk -------------------------------------------------------------------------------------------------------


@needs_squawk
def test_squawk_findings_are_merged_with_their_lines(tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "-- Tighten constraints.\n\n"
        "ALTER TABLE classes ADD CONSTRAINT classes_room_not_blank CHECK (room <> '');\n"
        "ALTER TABLE students ALTER COLUMN email SET NOT NULL;\n",
    )
    report = lint_paths([tmp_path], released_file=None)
    squawk = {(f.rule, f.line) for f in report.findings if f.origin == "squawk"}
    assert squawk == {("squawk:constraint-missing-not-valid", 3), ("squawk:adding-not-nullable-field", 4)}
    check = next(f for f in report.findings if f.rule == "squawk:constraint-missing-not-valid")
    assert check.column == 21 and check.severity == "warning" and "NOT VALID" in check.instead
    assert report.ok  # squawk's warnings do not fail the gate


@needs_squawk
def test_squawk_duplicates_of_our_rules_are_dropped(tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "ALTER TABLE students\n  DROP COLUMN phone;\nCREATE INDEX students_email_idx ON students (email);\n"
        "ALTER TABLE students ADD COLUMN nationality text NOT NULL;\n",
    )
    report = lint_paths([tmp_path], released_file=None)
    assert {f.rule for f in report.findings} == {
        "drop-column",
        "index-without-concurrently",
        "add-not-null-without-default",
    }


@needs_squawk
def test_squawk_rules_that_do_not_fit_are_excluded(tmp_path: Path) -> None:
    # int columns, no IF NOT EXISTS, no timeouts: squawk would complain about all three by default.
    write_migration(tmp_path, "CREATE TABLE t (id int PRIMARY KEY);\nALTER TABLE t ADD COLUMN n int;\n")
    assert lint_paths([tmp_path], released_file=None).findings == []


@needs_squawk
def test_squawk_findings_can_be_suppressed(tmp_path: Path) -> None:
    write_migration(
        tmp_path,
        "-- lint:ignore adding-not-nullable-field reason: students has at most 2000 rows per school\n"
        "ALTER TABLE students ALTER COLUMN email SET NOT NULL;\n",
    )
    report = lint_paths([tmp_path], released_file=None)
    assert [f.rule for f in report.suppressed] == ["squawk:adding-not-nullable-field"]


def test_missing_squawk_is_a_warning_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(squawk_module, "find_squawk", lambda: None)
    write_migration(tmp_path, "SELECT 1;\n")
    report = lint_paths([tmp_path], released_file=None)
    (f,) = report.findings
    assert f.rule == "squawk-missing" and f.severity == "warning" and report.ok


def test_failing_squawk_is_a_warning_not_a_crash(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "bin" / "squawk"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'boom' >&2\nexit 3\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(squawk_module, "find_squawk", lambda: fake)
    write_migration(tmp_path / "m", "SELECT 1;\n")
    (f,) = lint_paths([tmp_path / "m"], released_file=None).findings
    assert f.rule == "squawk-failed" and "exit code 3" in f.message and "boom" in f.message


# --- the fixture directory, lint_migrations, the project's own migrations -----------------------------------------

#: what tests/data/unsafe_migrations holds: file -> (rule, line) of each unsuppressed error
UNSAFE_EXPECTED = {
    "20250220000000_add_library.up.sql": {("released-file-edited", 1)},
    "20250301000000_drop_student_phone.up.sql": {("drop-column", 3)},
    "20250302000000_rename_room.up.sql": {("rename-column", 3)},
    "20250303000000_widen_score.up.sql": {("change-column-type", 2)},
    "20250304000000_add_nationality.up.sql": {("add-not-null-without-default", 2)},
    "20250305000000_link_announcements_to_classes.up.sql": {("fk-without-on-delete", 2)},
    "20250306000000_index_student_email.up.sql": {("index-without-concurrently", 2)},
    "20250307000000_index_grades_subject.up.sql": {("concurrently-in-transaction", 2)},
    "20250308000000_drop_announcements.up.sql": {("drop-table", 3)},
    "20250309000000_rename_grades.up.sql": {("rename-table", 2)},
    "20250312000000_drop_teacher_phone.up.sql": {("suppression-without-reason", 1), ("drop-column", 2)},
}


def test_unsafe_fixture_directory(tmp_path: Path) -> None:
    report = lint_paths([UNSAFE_DIR], released_file=UNSAFE_DIR / SUM_FILENAME, use_squawk=False)
    errors: dict[str, set[tuple[str, int]]] = {}
    for f in report.errors:
        errors.setdefault(f.path.name, set()).add((f.rule, f.line))
    assert errors == UNSAFE_EXPECTED
    assert [f.path.name for f in report.suppressed] == ["20250313000000_drop_guardian_email.up.sql"]


def test_lint_migrations_lints_loaded_migrations(tmp_path: Path) -> None:
    write_migration(tmp_path, "-- x\nALTER TABLE students DROP COLUMN phone;\n", down="SELECT 1;\n")
    source = load_migrations(tmp_path)
    report = lint_migrations(source.migrations, directories=[tmp_path], use_squawk=False)
    assert flagged(report) == {("drop-column", 2)}
    assert report.files_checked == [tmp_path / UP, tmp_path / DOWN]


def test_the_projects_own_migrations_lint_clean() -> None:
    directory = ROOT / "migrations"
    if not any(directory.glob("*.sql")):
        pytest.skip("no migrations in migrations/ yet")
    report = lint_paths([directory], released_file=directory / SUM_FILENAME)
    assert report.ok, render_text(report)
    assert report.warnings == [], render_text(report)


# --- the lint cache -----------------------------------------------------------------------------------------------


@pytest.fixture
def rule_runs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times our rules and squawk ran (one item per run): what a cache hit must not do."""
    from orchestrator.lint import rules

    runs: list[int] = []
    real_rules, real_squawk = rules.check_migrations, squawk_module.run_squawk

    def counted_rules(*args: Any, **kwargs: Any) -> Any:
        runs.append(1)
        return real_rules(*args, **kwargs)

    def counted_squawk(*args: Any, **kwargs: Any) -> Any:
        runs.append(2)
        return real_squawk(*args, **kwargs)

    monkeypatch.setattr(rules, "check_migrations", counted_rules)
    monkeypatch.setattr(squawk_module, "run_squawk", counted_squawk)
    return runs


def cache_entries(cache: Path) -> list[str]:
    return sorted(p.name for p in (cache / "lint").iterdir()) if (cache / "lint").exists() else []


def test_the_lint_cache_spares_linting_unchanged_files_and_an_edit_invalidates_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_runs: list[int]
) -> None:
    cache = tmp_path / "cache"
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(cache))
    m = tmp_path / "m"
    write_migration(m, "ALTER TABLE students DROP COLUMN phone;\n")
    first = lint_paths([m], released_file=m / SUM_FILENAME)
    assert rule_runs == [1, 2] and len(cache_entries(cache)) == 1
    again = lint_paths([m], released_file=m / SUM_FILENAME)
    assert rule_runs == [1, 2], "a hit: neither our rules nor squawk ran again"
    assert again.findings == first.findings and again.files_checked == first.files_checked

    # The gate in front of `migrate` (same files, same released.sum): hits too.
    for _ in range(3):
        assert lint_migrations(load_migrations(m).migrations, directories=[m]).findings == first.findings
    assert len(rule_runs) == 2

    (m / UP).write_text("ALTER TABLE students DROP COLUMN email;\n")  # an edit
    edited = lint_paths([m], released_file=m / SUM_FILENAME)
    assert len(rule_runs) == 4 and "email" in edited.errors[0].message
    (m / SUM_FILENAME).write_text(render_released({}))  # released.sum is part of the key too
    lint_paths([m], released_file=m / SUM_FILENAME)
    assert len(rule_runs) == 6
    monkeypatch.setattr("orchestrator.lint.cache.linter_digest", lambda: "another version of the rules")
    lint_paths([m], released_file=m / SUM_FILENAME)
    assert len(rule_runs) == 8, "a new linter never trusts the old one's results"
    assert not any(name.endswith(".tmp") for name in cache_entries(cache))


def test_a_cache_that_cannot_be_used_is_no_cache_and_no_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rule_runs: list[int]
) -> None:
    m = tmp_path / "m"
    write_migration(m, "ALTER TABLE students DROP COLUMN phone;\n")
    (tmp_path / "a_file").write_text("not a directory\n")
    for where in (str(tmp_path / "a_file" / "cache"), str(m / "cache"), ""):  # unwritable, among the files, off
        monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", where)
        before = len(rule_runs)
        for _ in range(2):
            assert flagged(lint_paths([m], released_file=None, use_squawk=False)) == {("drop-column", 1)}
        assert len(rule_runs) == before + 2, where
    assert sorted(p.name for p in m.iterdir()) == sorted([UP, DOWN]), "nothing written among the migrations"

    # A damaged entry is a miss, and is replaced.
    monkeypatch.setenv("ORCHESTRATOR_CACHE_DIR", str(tmp_path / "cache"))
    lint_paths([m], released_file=None, use_squawk=False)
    [entry] = (tmp_path / "cache" / "lint").iterdir()
    entry.write_text('{"findings": [')
    assert flagged(lint_paths([m], released_file=None, use_squawk=False)) == {("drop-column", 1)}
    assert json.loads(entry.read_text())["findings"][0]["rule"] == "drop-column"


def test_processes_linting_at_once_share_the_cache_safely(tmp_path: Path) -> None:
    m = tmp_path / "m"
    write_migration(m, "ALTER TABLE students DROP COLUMN phone;\n")
    env = {**os.environ, "ORCHESTRATOR_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "orchestrator", "lint", str(m), "--format", "editor", "--no-squawk"]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=tmp_path) for _ in range(6)]
    outputs = {proc.communicate(timeout=120)[0] for proc in procs}
    assert len(outputs) == 1 and "drop-column" in outputs.pop()
    assert [p.suffix for p in (tmp_path / "cache" / "lint").iterdir()] == [".json"], "one whole entry, no leftovers"


# --- orchestrator new ---------------------------------------------------------------------------------------------

NOW = datetime(2025, 4, 1, 9, 30, 15, tzinfo=UTC)


def test_new_writes_the_pair_like_sqlx(tmp_path: Path) -> None:
    up, down = new_migration(tmp_path / "migrations", "add library books", now=NOW)
    assert up.name == "20250401093015_add_library_books.up.sql"
    assert down.name == "20250401093015_add_library_books.down.sql"
    assert up.read_text() == UP_CONTENT == "-- Add up migration script here\n"
    assert down.read_text() == DOWN_CONTENT == "-- Add down migration script here\n"
    assert load_migrations(tmp_path / "migrations").versions == [20250401093015]


def test_new_uses_utc(tmp_path: Path) -> None:
    from datetime import timedelta, timezone

    local = datetime(2025, 4, 1, 11, 30, 15, tzinfo=timezone(timedelta(hours=2)))
    up, _ = new_migration(tmp_path, "x", now=local)
    assert up.name.startswith("20250401093015_")


def test_new_refuses_an_existing_version(tmp_path: Path) -> None:
    new_migration(tmp_path, "first", now=NOW)
    with pytest.raises(InvalidInput) as err:
        new_migration(tmp_path, "second", now=NOW)
    assert "20250401093015" in str(err.value) and err.value.hint
    assert len(list(tmp_path.iterdir())) == 2


def test_new_refuses_a_version_taken_under_another_spelling(tmp_path: Path) -> None:
    (tmp_path / "020250401093015_older.sql").write_text("SELECT 1;\n")
    with pytest.raises(MigrationSourceError, match=r"already used by 020250401093015_older\.sql"):
        new_migration(tmp_path, "second", now=NOW)


@pytest.mark.parametrize("description", ["", "   ", "a/b", "../escape", "semi;colon", "new\nline", "_lead"])
def test_new_refuses_unsafe_descriptions(tmp_path: Path, description: str) -> None:
    with pytest.raises(UsageError):
        new_migration(tmp_path, description, now=NOW)
    assert list(tmp_path.iterdir()) == []


# --- CLI ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    register(app)
    return app


def test_cli_lint_fails_on_unsafe_migrations_and_lists_each(cli: typer.Typer) -> None:
    result = CliRunner().invoke(cli, ["lint", str(UNSAFE_DIR), "--no-squawk"])
    assert result.exit_code == 1, result.output
    for name, expected in UNSAFE_EXPECTED.items():
        for rule, line in expected:
            assert re.search(rf"{re.escape(name)}:{line}:\d+ +error +{re.escape(rule)} ", result.output), (name, rule)
    assert "FAILED" in result.output


def test_cli_lint_editor_and_json_formats(cli: typer.Typer) -> None:
    runner = CliRunner()
    editor = runner.invoke(cli, ["lint", str(UNSAFE_DIR), "--no-squawk", "--format", "editor"])
    assert editor.exit_code == 1
    assert f"{UNSAFE_DIR}/20250301000000_drop_student_phone.up.sql:3:22: error: [drop-column] " in editor.output
    as_json = runner.invoke(cli, ["lint", str(UNSAFE_DIR), "--no-squawk", "--format", "json"])
    data = json.loads(as_json.output)
    assert data["schema_version"] == 1 and data["ok"] is False and data["summary"]["errors"] == 12


def test_cli_lint_missing_path_exits_2(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["lint", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "does not exist" in result.output


def test_cli_lint_release_then_edit(cli: typer.Typer, tmp_path: Path) -> None:
    runner = CliRunner()
    up = write_migration(tmp_path, "CREATE TABLE t (id bigint PRIMARY KEY);\n", down="DROP TABLE t;\n")
    released = runner.invoke(cli, ["lint", str(tmp_path), "--release", "--no-squawk"])
    assert released.exit_code == 0 and "recorded as released" in released.output
    assert (tmp_path / SUM_FILENAME).is_file()
    up.write_text("CREATE TABLE t (id bigint PRIMARY KEY, x text);\n")
    edited = runner.invoke(cli, ["lint", str(tmp_path), "--no-squawk"])
    assert edited.exit_code == 1 and f"{UP}:1:1" in edited.output and "released-file-edited" in edited.output


def test_cli_new_prints_both_paths(cli: typer.Typer, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["new", "add", "library", "books", "--migrations", str(tmp_path)])
    assert result.exit_code == 0, result.output
    up, down = result.output.split()
    assert up.endswith("_add_library_books.up.sql") and down.endswith("_add_library_books.down.sql")
    assert Path(up).is_file() and Path(down).is_file()
    bad = CliRunner().invoke(cli, ["new", "a/b", "--migrations", str(tmp_path)])
    assert bad.exit_code == 2 and "what to do:" in bad.output


@pytest.fixture
def main_cli() -> Iterator[typer.Typer]:
    """The real `orchestrator` command, in process."""
    yield main_app
    # Its callback points structlog at the runner's captured stderr, closed once the invocation ends.
    structlog.reset_defaults()


def invoke(app: typer.Typer, *args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"DATABASE_URL": None})


@pytest.mark.parametrize(("entries", "culprit", "says"), INVALID_SOURCES)
def test_lint_migrate_and_audit_refuse_the_same_directory_with_the_same_message(
    main_cli: typer.Typer, tmp_path: Path, entries: dict[str, Entry], culprit: str, says: str
) -> None:
    directory = make(tmp_path / "migrations", entries)
    linted = invoke(main_cli, "lint", str(directory), "--no-squawk")
    # Refused while reading the directory, before any connection: no server listens on port 9.
    school = "postgresql://nobody@127.0.0.1:9/school"
    migrated = invoke(main_cli, "migrate", "-D", school, "--migrations", str(directory))
    audited = invoke(main_cli, "audit", "-D", school, "--migrations", str(directory))
    assert (linted.exit_code, migrated.exit_code, audited.exit_code) == (2, 2, 2), linted.output + migrated.output
    assert linted.stderr == migrated.stderr == audited.stderr
    assert f"{directory}/{culprit}" in linted.stderr and says in linted.stderr
    assert "what to do:" in linted.stderr
    assert linted.stdout == "", "no findings for a directory that cannot be used"


def test_lint_exits_1_for_findings_and_2_when_the_directory_cannot_be_used(
    main_cli: typer.Typer, tmp_path: Path
) -> None:
    write_migration(tmp_path, "ALTER TABLE students DROP COLUMN phone;\n")
    assert invoke(main_cli, "lint", str(tmp_path), "--no-squawk").exit_code == 1
    (tmp_path / "020250401000000_again.sql").write_text("SELECT 1;\n")
    refused = invoke(main_cli, "lint", str(tmp_path), "--no-squawk")
    assert refused.exit_code == 2 and "020250401000000_again.sql" in refused.stderr and "used twice" in refused.stderr
