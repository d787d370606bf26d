"""The lint's verdict on a column type change is PostgreSQL's: a change it lets through (lint/coltypes.py) keeps the
table's and its index's relfilenode on a real server, and every change it reports moves at least one of them, on
every PostgreSQL version of the suite (tests/pgversions.py)."""

from __future__ import annotations

from pathlib import Path

import asyncpg
from pgfixtures import run_sync

from orchestrator.lint import lint_paths
from orchestrator.lint.render import render_text

#: (old type, new type, rewrites the table or rebuilds its index)
CHANGES = [
    ("varchar(10)", "varchar(20)", False),
    ("varchar(10)", "varchar(10)", False),
    ("character varying(10)", "character varying(255)", False),
    ("varchar(10)", "varchar", False),
    ("varchar(10)", "text", False),
    ("varchar", "text", False),
    ("text", "varchar", False),
    ("numeric(5,2)", "numeric(7,2)", False),
    ("numeric(5,2)", "numeric", False),
    ("numeric(5)", "numeric(8)", False),
    ("decimal(5,2)", "decimal(9,2)", False),
    ("timestamp(0)", "timestamp(3)", False),
    ("timestamp(3)", "timestamp", False),
    ("timestamptz(0)", "timestamp(6) with time zone", False),
    ("time(0)", "time(3)", False),
    ("timetz(0)", "time(3) with time zone", False),
    ("varbit(5)", "varbit(10)", False),
    ("varchar(20)", "varchar(10)", True),
    ("text", "varchar(10)", True),
    ("numeric(5,2)", "numeric(7,3)", True),
    ("numeric(5,2)", "numeric(4,2)", True),
    ("numeric", "numeric(10,2)", True),
    ("char(5)", "char(10)", True),
    ("char(5)", "text", True),
    ("char(5)", "varchar(10)", True),
    ("int", "bigint", True),
    ("smallint", "int", True),
    ("timestamp(3)", "timestamp(0)", True),
    ("bit(5)", "bit(10)", True),
    ("varchar(10)[]", "varchar(20)[]", True),
    ("varchar(10)[]", "text[]", True),
    ("timestamp", "timestamptz", True),  # the table stays, the index is rebuilt
]
_FILENODES = "SELECT pg_relation_filenode($1::regclass), pg_relation_filenode($2::regclass)"


async def rewritten_by_postgres(url: str) -> list[bool]:
    """For each change: whether the server wrote a new file for the table or its index."""
    conn = await asyncpg.connect(url)
    try:
        verdicts = []
        for i, (old, new, _) in enumerate(CHANGES):
            await conn.execute(f"CREATE TABLE w{i} (c {old}); CREATE INDEX w{i}_c ON w{i} (c)")
            before = tuple(await conn.fetchrow(_FILENODES, f"w{i}", f"w{i}_c"))
            await conn.execute(f"ALTER TABLE w{i} ALTER COLUMN c TYPE {new}")
            verdicts.append(tuple(await conn.fetchrow(_FILENODES, f"w{i}", f"w{i}_c")) != before)
        return verdicts
    finally:
        await conn.close()


def reported_by_lint(directory: Path) -> list[bool]:
    """For each change: whether `lint` reports it (one migration declares the columns, the next changes them)."""
    directory.mkdir()
    (directory / "1_declare.sql").write_text(
        "".join(f"CREATE TABLE w{i} (c {old});\n" for i, (old, _, _) in enumerate(CHANGES))
    )
    (directory / "2_change.sql").write_text(
        "".join(f"ALTER TABLE w{i} ALTER COLUMN c TYPE {new};\n" for i, (_, new, _) in enumerate(CHANGES))
    )
    report = lint_paths([directory], released_file=None, use_squawk=False)
    assert {f.rule for f in report.findings} <= {"change-column-type"}, render_text(report)
    lines = {f.line for f in report.findings}
    return [i + 1 in lines for i in range(len(CHANGES))]


def test_the_lint_lets_through_exactly_the_type_changes_postgres_makes_without_a_rewrite(
    db_url: str, tmp_path: Path
) -> None:
    expected = [rewrites for _, _, rewrites in CHANGES]
    assert True in expected and False in expected

    by_postgres = run_sync(rewritten_by_postgres(db_url))
    by_lint = reported_by_lint(tmp_path / "m")

    changes = [f"{old} -> {new}" for old, new, _ in CHANGES]
    assert dict(zip(changes, by_postgres, strict=True)) == dict(zip(changes, expected, strict=True))
    assert dict(zip(changes, by_lint, strict=True)) == dict(zip(changes, expected, strict=True))
