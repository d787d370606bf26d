"""Reading a migrations directory with SQLx's rules (and our stricter ones). No database involved."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sourcecases import INVALID_SOURCES, SQL, SQLX_SHAPES, SQLX_SHAPES_RESOLVED, Dir, Entry, Fifo, Link, make

from orchestrator.errors import MigrationSourceError
from orchestrator.source import I64_MAX, I64_MIN, checksum, load_migrations
from orchestrator.sqltext import SqlText, split_statements

PROJECT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


def write(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        data = content.encode() if isinstance(content, str) else content
        (directory / name).write_bytes(data)
    return directory


def refusal(directory: Path) -> MigrationSourceError:
    with pytest.raises(MigrationSourceError) as info:
        load_migrations(directory)
    return info.value


# --- names, versions, descriptions ------------------------------------------------------------------------------


def test_name_splits_on_the_first_underscore_and_underscores_become_spaces(tmp_path: Path) -> None:
    write(tmp_path, {"20250115000000_add_daily_attendance.sql": "SELECT 1;\n"})
    [m] = load_migrations(tmp_path).migrations
    assert m.version == 20250115000000
    assert m.description == "add daily attendance"
    assert m.filename == "20250115000000_add_daily_attendance.sql"
    assert not m.reversible


def test_reversible_pair_description_drops_the_up_and_down_suffixes(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "20250115000000_add_attendance.up.sql": "CREATE TABLE a(id int);\n",
            "20250115000000_add_attendance.down.sql": "DROP TABLE a;\n",
        },
    )
    [m] = load_migrations(tmp_path).migrations
    assert m.description == "add attendance"
    assert m.reversible
    assert m.up_sql == "CREATE TABLE a(id int);\n"
    assert m.down_sql == "DROP TABLE a;\n"
    assert m.down_filename == "20250115000000_add_attendance.down.sql"


def test_leading_zeros_are_allowed_and_version_zero_is_a_version(tmp_path: Path) -> None:
    write(tmp_path, {"0_zero.sql": "SELECT 0;\n", "0007_seven.sql": "SELECT 7;\n"})
    source = load_migrations(tmp_path)
    assert source.versions == [0, 7]
    assert source.get(7) is not None and source.get(7).description == "seven"  # type: ignore[union-attr]
    assert source.latest == 7


def test_migrations_are_ordered_by_numeric_version_not_by_file_name(tmp_path: Path) -> None:
    write(tmp_path, {"10_ten.sql": "SELECT 10;\n", "9_nine.sql": "SELECT 9;\n", "100_hundred.sql": "SELECT 100;\n"})
    assert load_migrations(tmp_path).versions == [9, 10, 100]


def test_non_integer_version_prefix_is_refused_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, {"1_ok.sql": "SELECT 1;\n", "v2_add_things.sql": "SELECT 2;\n"})
    error = refusal(tmp_path)
    assert "v2_add_things.sql" in error.message
    assert "'v2'" in error.message
    assert error.hint


def test_the_signed_64_bit_range_is_accepted_up_to_its_ends(tmp_path: Path) -> None:
    write(tmp_path, {f"{I64_MIN}_lowest.sql": SQL, f"{I64_MAX}_highest.sql": SQL, "-7_negative.sql": SQL})
    assert load_migrations(tmp_path).versions == [I64_MIN, -7, I64_MAX]


@pytest.mark.parametrize(("entries", "culprit", "says"), INVALID_SOURCES)
def test_a_directory_migrate_cannot_use_is_refused_naming_the_file(
    tmp_path: Path, entries: dict[str, Entry], culprit: str, says: str
) -> None:
    error = refusal(make(tmp_path, entries))
    assert f"{tmp_path}/{culprit}" in error.message and says in error.message, error.message
    assert error.hint, "every refusal says what to do"


def test_a_symbolic_link_to_a_regular_file_is_a_migration(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "create.sql").write_text("CREATE TABLE t (id int);\n")
    make(tmp_path / "m", {"1_create.sql": Link("../shared/create.sql")})
    [m] = load_migrations(tmp_path / "m").migrations
    assert m.up_sql == "CREATE TABLE t (id int);\n"
    assert m.checksum == checksum(b"CREATE TABLE t (id int);\n")


def test_files_sqlx_ignores_are_ignored(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "1_real.sql": "SELECT 1;\n",
            "README.md": "not a migration",
            "nounderscore.sql": "SELECT 'no underscore';\n",
            "2_notes.txt": "not sql",
            "3_backup.sql.bak": "SELECT 3;\n",
        },
    )
    make(tmp_path, {"4_a_directory": Dir(), "5_a_pipe.sql.tmp": Fifo(), "6_a_link": Link("/dev/zero")})
    assert load_migrations(tmp_path).versions == [1]


def test_missing_directory_is_refused_with_a_hint(tmp_path: Path) -> None:
    error = refusal(tmp_path / "nope")
    assert "does not exist" in error.message and "nope" in error.message
    assert error.hint and "--migrations" in error.hint


def test_empty_directory_is_an_empty_source(tmp_path: Path) -> None:
    source = load_migrations(tmp_path)
    assert len(source) == 0 and source.latest is None


def test_project_migrations_are_three_reversible_pairs() -> None:
    source = load_migrations(PROJECT_MIGRATIONS)
    assert source.versions == [20250101000000, 20250115000000, 20250201000000]
    assert [m.description for m in source] == ["initial schema", "add attendance", "add grades"]
    assert all(m.reversible for m in source)
    assert source.warnings == ()


# --- checksums --------------------------------------------------------------------------------------------------


def test_checksum_is_sha384_of_the_exact_bytes_known_vector(tmp_path: Path) -> None:
    write(tmp_path, {"1_t.sql": b"CREATE TABLE t(id int);\n"})
    [m] = load_migrations(tmp_path).migrations
    assert len(m.checksum) == 48
    assert m.checksum.hex() == (
        "80e4d7a6fb5c9e301879e151627b9b2022138784af14b63582f424f5f15787941d60dc3298c4373e31df211ff9e23cec"
    )


def test_checksum_is_not_normalised_crlf_and_bom_change_it(tmp_path: Path) -> None:
    lf = b"CREATE TABLE t(id int);\nSELECT 1;\n"
    crlf = lf.replace(b"\n", b"\r\n")
    bom = b"\xef\xbb\xbf" + lf
    write(tmp_path / "lf", {"1_t.sql": lf})
    write(tmp_path / "crlf", {"1_t.sql": crlf})
    write(tmp_path / "bom", {"1_t.sql": bom})
    sums = {name: load_migrations(tmp_path / name).migrations[0].checksum for name in ("lf", "crlf", "bom")}
    assert sums["lf"] == hashlib.sha384(lf).digest() == checksum(lf)
    assert sums["crlf"] == hashlib.sha384(crlf).digest()
    assert sums["bom"] == hashlib.sha384(bom).digest()
    assert len(set(sums.values())) == 3


def test_only_the_up_file_is_checksummed(tmp_path: Path) -> None:
    up = b"CREATE TABLE t(id int);\n"
    write(tmp_path, {"1_t.up.sql": up, "1_t.down.sql": "DROP TABLE t;\n"})
    assert load_migrations(tmp_path).migrations[0].checksum == hashlib.sha384(up).digest()


# --- stricter than SQLx -----------------------------------------------------------------------------------------


def test_two_files_with_the_same_version_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"5_first.sql": "SELECT 1;\n", "05_second.sql": "SELECT 2;\n"})
    error = refusal(tmp_path)
    assert "version 5 is used twice" in error.message
    assert "5_first.sql" in error.message and "05_second.sql" in error.message


def test_a_simple_file_and_an_up_file_with_the_same_version_are_refused(tmp_path: Path) -> None:
    write(tmp_path, {"5_a.sql": "SELECT 1;\n", "5_b.up.sql": "SELECT 2;\n", "5_b.down.sql": "SELECT 3;\n"})
    assert "used twice" in refusal(tmp_path).message


def test_down_file_without_its_up_file_is_refused_before_any_file_is_read(tmp_path: Path) -> None:
    # SQLx counts the version as present (a deleted up goes unnoticed) and runs the down on revert: refused here.
    make(tmp_path, {"1_t.sql": Fifo(), "2_u.down.sql": "DROP TABLE u;\n"})
    error = refusal(tmp_path)
    assert "2_u.down.sql" in error.message and "no up file" in error.message
    assert error.hint and "2_u.up.sql" in error.hint and "sqlx migrate revert" in error.hint


# --- what SQLx accepts, we accept (lint warns about some of it) -------------------------------------------------


def test_every_shape_sqlx_resolves_loads_with_sqlx_versions_and_descriptions(tmp_path: Path) -> None:
    source = load_migrations(make(tmp_path, SQLX_SHAPES))
    assert {m.version: (m.description, m.reversible) for m in source} == SQLX_SHAPES_RESOLVED
    assert sorted(w.path.name for w in source.ignored) == ["10_a_directory.sql", "11_a_pipe.sql", "12_a_device.up.sql"]
    assert [str(w) for w in source.warnings] == [str(w) for w in source.ignored]
    assert "a named pipe (FIFO), not a regular file: SQLx ignores it" in str(source.ignored[1])
    assert "symbolic link to /dev/zero, which is a character device" in str(source.ignored[2])


def test_up_file_without_a_down_file_is_a_migration_that_cannot_be_reverted(tmp_path: Path) -> None:
    write(tmp_path, {"1_t.up.sql": "CREATE TABLE t(id int);\n"})
    [m] = load_migrations(tmp_path).migrations
    assert (m.up_kind, m.reversible, m.down_path) == ("up", False, None)
    assert [f.kind for f in m.files] == ["up"]


def test_a_plain_file_and_a_down_file_of_its_version_pair_as_sqlx_pairs_them(tmp_path: Path) -> None:
    write(tmp_path, {"1_t.sql": "CREATE TABLE t(id int);\n", "1_t.down.sql": "DROP TABLE t;\n"})
    [m] = load_migrations(tmp_path).migrations
    assert m.reversible and m.up_kind == "simple" and m.down_sql == "DROP TABLE t;\n"
    assert [f.kind for f in m.files] == ["simple", "down"]


def test_a_down_file_named_differently_pairs_by_version_and_keeps_its_own_description(tmp_path: Path) -> None:
    write(tmp_path, {"1_add_t.up.sql": "SELECT 1;\n", "1_drop_t.down.sql": "SELECT 2;\n"})
    [m] = load_migrations(tmp_path).migrations
    assert m.description == "add t" and m.down_filename == "1_drop_t.down.sql"
    assert [f.description for f in m.files] == ["add t", "drop t"]


@pytest.mark.parametrize(
    ("name", "version", "description"),
    [
        ("20240101000000_v1.2_init.sql", 20240101000000, "v1.2 init"),
        ("1_a.b.c.up.sql", 1, "a.b.c"),
        ("+42_plus.sql", 42, "plus"),
        ("1_a.sql.sql", 1, "a"),
        ("1_x.down.sql.sql", 1, "x.down"),
        ("1_.up.sql", 1, ""),
        ("1_a_.sql", 1, "a "),
        ("1_up.sql", 1, "up"),
    ],
)
def test_descriptions_are_derived_as_sqlx_derives_them(
    tmp_path: Path, name: str, version: int, description: str
) -> None:
    write(tmp_path, {name: SQL})
    [m] = load_migrations(tmp_path).migrations
    assert (m.version, m.description) == (version, description)


def test_non_utf8_file_name_is_refused(tmp_path: Path) -> None:
    (tmp_path / os.fsdecode(b"1_caf\xe9.sql")).write_text(SQL)
    assert "file name is not valid UTF-8" in refusal(tmp_path).message


def test_non_utf8_file_is_refused_naming_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, {"1_ok.sql": "SELECT 1;\n", "2_latin1.sql": b"SELECT 1;\n-- caf\xe9\nSELECT 2;\n"})
    error = refusal(tmp_path)
    assert "2_latin1.sql:2" in error.message
    assert "UTF-8" in error.message


# --- no-transaction ---------------------------------------------------------------------------------------------


def test_no_transaction_marker_in_the_first_bytes_is_detected(tmp_path: Path) -> None:
    write(tmp_path, {"1_idx.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n"})
    assert load_migrations(tmp_path).migrations[0].no_transaction


@pytest.mark.parametrize(
    "text",
    [
        "-- No-Transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n",  # case-sensitive
        " -- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n",  # not the first bytes
        "\n-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (id);\n",
        "CREATE TABLE t(id int); -- no-transaction\n",
        "--no-transaction\nSELECT 1;\n",
    ],
)
def test_no_transaction_marker_anywhere_else_or_in_another_case_does_not_count(tmp_path: Path, text: str) -> None:
    write(tmp_path, {"1_x.sql": text})
    assert not load_migrations(tmp_path).migrations[0].no_transaction


def test_down_file_has_its_own_no_transaction_marker(tmp_path: Path) -> None:
    write(
        tmp_path,
        {
            "1_idx.up.sql": "CREATE INDEX i ON t (id);\n",
            "1_idx.down.sql": "-- no-transaction\nDROP INDEX CONCURRENTLY i;\n",
        },
    )
    m = load_migrations(tmp_path).migrations[0]
    assert not m.no_transaction and m.down_no_transaction


def test_multi_statement_no_transaction_file_is_refused_at_the_second_statement(tmp_path: Path) -> None:
    text = (
        "-- no-transaction\n"  # 1
        "-- builds the index without blocking writes; step 1 of 2\n"  # 2
        "CREATE INDEX CONCURRENTLY a_idx ON t (a);\n"  # 3
        "\n"  # 4
        "/* and the second; one */\n"  # 5
        "CREATE INDEX CONCURRENTLY b_idx ON t (b);\n"  # 6
    )
    write(tmp_path, {"3_indexes.sql": text})
    error = refusal(tmp_path)
    assert "3_indexes.sql:6" in error.message
    assert "exactly one statement" in error.message and "holds 2" in error.message
    assert error.hint and "own migration" in error.hint


def test_single_statement_no_transaction_file_with_comments_and_trailing_semicolon_is_accepted(
    tmp_path: Path,
) -> None:
    text = "-- no-transaction\n-- why; because\nCREATE INDEX CONCURRENTLY a_idx ON t (a);\n-- done;\n"
    write(tmp_path, {"3_index.sql": text})
    assert load_migrations(tmp_path).migrations[0].no_transaction


# --- warnings ---------------------------------------------------------------------------------------------------


def test_crlf_line_endings_give_a_warning_naming_the_file(tmp_path: Path) -> None:
    write(tmp_path, {"1_crlf.sql": b"SELECT 1;\r\nSELECT 2;\r\n", "2_lf.sql": b"SELECT 3;\n"})
    source = load_migrations(tmp_path)
    assert len(source) == 2
    [warning] = source.warnings
    assert warning.path.name == "1_crlf.sql"
    assert "CRLF" in warning.message and "checksum" in warning.message
    assert "1_crlf.sql" in str(warning)


def test_byte_order_mark_gives_a_warning(tmp_path: Path) -> None:
    write(tmp_path, {"1_bom.sql": b"\xef\xbb\xbfSELECT 1;\n"})
    source = load_migrations(tmp_path)
    [warning] = source.warnings
    assert warning.path.name == "1_bom.sql"
    assert "byte-order mark" in warning.message
    # The BOM is part of the text (and the checksum): SQLx does not strip it either.
    assert source.migrations[0].up_sql.startswith("\ufeff")


def test_clean_files_give_no_warning(tmp_path: Path) -> None:
    write(tmp_path, {"1_a.sql": "SELECT 1;\n"})
    assert load_migrations(tmp_path).warnings == ()


# --- statement splitting ----------------------------------------------------------------------------------------


def test_split_statements_on_top_level_semicolons_with_lines() -> None:
    sql = "CREATE TABLE a(id int);\n\nCREATE TABLE b(id int);\nSELECT 1"
    statements = split_statements(sql)
    assert [s.text for s in statements] == ["CREATE TABLE a(id int)", "CREATE TABLE b(id int)", "SELECT 1"]
    assert [s.line for s in statements] == [1, 3, 4]


def test_split_statements_ignores_semicolons_inside_strings_and_identifiers() -> None:
    sql = (
        "INSERT INTO t VALUES ('a;b', 'it''s; fine');\n"
        "SELECT E'esc\\';still string;';\n"
        'CREATE TABLE "odd;name" (id int);\n'
    )
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[0].text == "INSERT INTO t VALUES ('a;b', 'it''s; fine')"
    assert statements[1].text == "SELECT E'esc\\';still string;'"
    assert statements[2].text == 'CREATE TABLE "odd;name" (id int)'


def test_split_statements_ignores_semicolons_inside_dollar_quotes() -> None:
    sql = (
        "CREATE FUNCTION f() RETURNS int AS $$\n"
        "BEGIN\n"
        "  PERFORM 1; RETURN 2;\n"
        "END;\n"
        "$$ LANGUAGE plpgsql;\n"
        "DO $body$ BEGIN PERFORM 'x'; PERFORM $$inner;$$; END $body$;\n"
        "SELECT 3;\n"
    )
    statements = split_statements(sql)
    assert len(statements) == 3
    assert statements[0].text.startswith("CREATE FUNCTION f()") and statements[0].text.endswith("plpgsql")
    assert statements[1].text.startswith("DO $body$") and statements[1].line == 6
    assert statements[2].text == "SELECT 3" and statements[2].line == 7


def test_split_statements_ignores_semicolons_in_comments_and_drops_comment_only_chunks() -> None:
    sql = (
        "-- header; with a semicolon\n"  # 1
        "/* block; /* nested; */ still comment; */\n"  # 2
        "SELECT 1;\n"  # 3
        "-- trailing comment only;\n"  # 4
    )
    statements = split_statements(sql)
    assert len(statements) == 1
    assert statements[0].line == 3
    assert statements[0].code == "SELECT 1"


def test_statement_code_strips_comments_and_folds_whitespace() -> None:
    [statement] = split_statements("ALTER TABLE t -- why\n   ADD COLUMN /* new */ c int;")
    assert statement.code == "ALTER TABLE t ADD COLUMN c int"


def test_dollar_sign_inside_an_identifier_is_not_a_dollar_quote() -> None:
    statements = split_statements("SELECT a$b$ FROM t; SELECT 2;")
    assert len(statements) == 2


def test_statement_spans_end_at_their_last_code_character() -> None:
    sql = "-- lead\nALTER TABLE t\n  DROP COLUMN c -- why\n;\nSELECT 'x;y'"
    first, second = split_statements(sql)
    assert (first.line, first.last_line) == (2, 3)
    assert sql[first.start : first.end] == "ALTER TABLE t\n  DROP COLUMN c"
    assert (second.line, second.last_line) == (5, 5) and sql[second.start : second.end] == "SELECT 'x;y'"


def test_line_and_column_of_any_offset() -> None:
    sql = SqlText("ab\ncd\n")
    assert [sql.position(offset) for offset in range(7)] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3), (3, 1)]
    assert [sql.line_text(n) for n in (1, 2, 3, 4)] == ["ab", "cd", "", None]


def test_masked_text_blanks_comments_and_literals_but_keeps_length_lines_and_code() -> None:
    sql = SqlText("SELECT 'a;b', \"x\" -- c;\n/* d;\n */ $f$e;$f$;")
    masked = sql.masked
    assert len(masked) == len(sql.text)
    assert [i for i, c in enumerate(masked) if c == "\n"] == [i for i, c in enumerate(sql.text) if c == "\n"]
    assert " ".join(masked.split()) == "SELECT ' ', \"x\" $ $;"
    assert [sql.text[t.start : t.end] for t in sql.line_comments] == ["-- c;"]
