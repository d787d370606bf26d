"""Adversary: `resolve --restamp` must refuse a file holding what the schema comparison cannot see.

PostgreSQL ends a `--` comment at a carriage return as well as at a line feed (scan.l: non_newline is [^\\n\\r]),
so in `-- note\\rINSERT ...` the INSERT runs. If our SQL reader takes the whole line as comment, the INSERT is
invisible to the coverage check (restamp re-stamps an edit to the rows it inserts) and to our lint rules.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import execute_sync, fetch_sync

from orchestrator.audit.coverage import unseen
from orchestrator.devserver import DevServer
from orchestrator.lint import lint_paths

SEEDED = {
    "1_grades.sql": "CREATE TABLE grades (id int PRIMARY KEY, label text NOT NULL);\n",
    "2_seed.sql": "-- the grading scale\nINSERT INTO grades VALUES (1, 'A'), (2, 'B');\n",
}


def test_adversary_a_carriage_return_ends_a_line_comment_for_the_coverage_check() -> None:
    assert [u.what for u in unseen("-- seed\rINSERT INTO grades VALUES (1, 'A');\n")] == ["INSERT"]


def test_adversary_a_carriage_return_ends_a_line_comment_for_the_lint(tmp_path: Path) -> None:
    (tmp_path / "1_drop.sql").write_text("-- harmless\rDROP TABLE students;\n", newline="")
    report = lint_paths([tmp_path], released_file=None, use_squawk=False)
    assert "drop-table" in {f.rule for f in report.findings}


def test_adversary_restamp_refuses_rows_hidden_behind_a_carriage_return(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", SEEDED)
    school = make_school(pg, "adv_restamp_cr")
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, [school])), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", *args).returncode == 0
    applied = fetch_sync(pg.url(school), "SELECT checksum FROM _sqlx_migrations WHERE version = 2")[0]["checksum"]
    seed = migrations / "2_seed.sql"
    # Other rows for every school onboarded from the files from now on; the comment hides the edit.
    seed.write_bytes(b"-- the grading scale\rINSERT INTO grades VALUES (1, 'A'), (2, 'B+');\n")
    # PostgreSQL runs what follows the CR:
    probe = make_school(pg, "adv_restamp_cr_probe")
    execute_sync(pg.url(probe), "CREATE TABLE grades (id int PRIMARY KEY, label text NOT NULL)")
    execute_sync(pg.url(probe), seed.read_bytes().decode())
    assert len(fetch_sync(pg.url(probe), "SELECT * FROM grades")) == 2

    result = cli("resolve", "--yes", "--no-progress", "--restamp", "2", *args)

    assert result.returncode == 1, result.stdout + result.stderr
    recorded = fetch_sync(pg.url(school), "SELECT checksum FROM _sqlx_migrations WHERE version = 2")[0]["checksum"]
    assert bytes(recorded) == bytes(applied) != hashlib.sha384(seed.read_bytes()).digest()


NO_TX = {
    "1_people.sql": "CREATE TABLE people (id int PRIMARY KEY, email text);\n",
    "2_people_email.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY people_email ON people (email);\n",
}


def test_adversary_resolve_applied_keeps_the_checksum_of_the_file_that_ran(tmp_path: Path, pg: DevServer) -> None:
    """File 2 was interrupted (its row: success = false, the checksum of the bytes that ran), then edited. `resolve
    --applied 2` says "what ran took effect": recording the edited file's checksum instead claims the new bytes
    ran, and hides the edit from every later check (status then says up_to_date, not modified)."""
    migrations = make_migrations(tmp_path / "migrations", NO_TX)
    school = make_school(pg, "adv_resolve_edit")
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, [school])), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", *args).returncode == 0
    execute_sync(pg.url(school), "UPDATE _sqlx_migrations SET success = false WHERE version = 2")  # the kill -9
    ran = hashlib.sha384(NO_TX["2_people_email.sql"].encode()).digest()
    edited = NO_TX["2_people_email.sql"].replace("(email)", "(email, id)")
    (migrations / "2_people_email.sql").write_text(edited)

    cli("resolve", "--yes", "--no-progress", "--applied", "2", *args)

    row = fetch_sync(pg.url(school), "SELECT success, checksum FROM _sqlx_migrations WHERE version = 2")[0]
    assert bytes(row["checksum"]) == ran, "the ledger claims the edited file ran"
    assert cli("status", "--no-progress", *args).returncode == 1, "the edit must still show (modified)"


def test_adversary_restamp_refuses_an_edit_that_removed_rows(tmp_path: Path, pg: DevServer) -> None:
    """The check reads the current file only: an edit that took the INSERT out leaves nothing "unseen", the schema
    still matches, and the ledger then vouches for a file that inserts nothing while the school holds its rows
    (and every school built from the files from now on holds none). What the applied bytes did is unknown here."""
    migrations = make_migrations(tmp_path / "migrations", SEEDED)
    school = make_school(pg, "adv_restamp_removed")
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, [school])), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", *args).returncode == 0
    applied = fetch_sync(pg.url(school), "SELECT checksum FROM _sqlx_migrations WHERE version = 2")[0]["checksum"]
    (migrations / "2_seed.sql").write_text("-- the grading scale (now kept by the admin service)\n")

    result = cli("resolve", "--yes", "--no-progress", "--restamp", "2", *args)

    recorded = fetch_sync(pg.url(school), "SELECT checksum FROM _sqlx_migrations WHERE version = 2")[0]["checksum"]
    assert bytes(recorded) == bytes(applied), result.stdout


def test_adversary_an_identity_columns_restart_is_unseen_as_a_sequences_is() -> None:
    # ALTER SEQUENCE ... RESTART is reported (a sequence's current value is not compared); the same change to an
    # identity column's sequence, through ALTER TABLE, was not.
    assert unseen("ALTER SEQUENCE grades_id_seq RESTART WITH 1000;\n")
    assert unseen("ALTER TABLE grades ALTER COLUMN id RESTART WITH 1000;\n")


def test_adversary_schema_evidence_never_records_a_file_whose_effect_the_schema_cannot_show(
    tmp_path: Path, pg: DevServer
) -> None:
    """File 2 only inserts rows: the live schema is the same whether it ran or not, so it is no evidence that it
    ran. Recording it would make every later run skip a file that never ran (the school has no grading scale)."""
    migrations = make_migrations(tmp_path / "migrations", SEEDED)
    school = make_school(pg, "adv_evidence_rows")
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, [school])), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", "--target", "1", *args).returncode == 0

    cli("resolve", "--yes", "--no-progress", "--applied", "2", "--schema-evidence", *args)

    versions = [r["version"] for r in fetch_sync(pg.url(school), "SELECT version FROM _sqlx_migrations ORDER BY 1")]
    assert versions == [1], "version 2 recorded as applied on schema evidence, its rows never inserted"
