"""The platform as it is: schools registered before their database exists, databases that were lost, and a live
SQLx fleet adopted mid-life (its early files break today's lint rules but are applied everywhere)."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from fleetkit import SQLX, cli, fleet_registry, make_migrations, make_school, registry_url, sqlx_info, write_registry
from pgfixtures import PG_PASSWORD, database_exists, execute_sync, fetch_sync, run_sync, unique_db_name

from orchestrator.devserver import DevServer


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


# --- missing databases, on purpose --------------------------------------------------------------------------------


def test_a_missing_database_is_no_database_and_is_created_only_when_asked(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    existing, new = make_school(pg, "known"), unique_db_name("new_school")
    registry = write_registry(
        tmp_path / "t.yaml",
        [("known", registry_url(pg, existing), []), ("new", registry_url(pg, new), [])],
    )
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    for command in ("status", "plan"):
        cli(command, *args, "--report", str(tmp_path / f"{command}.json"))
        statuses = {s["id"]: s["status"] for s in json.loads((tmp_path / f"{command}.json").read_text())["schools"]}
        assert statuses["new"] == "no_database", command
    plain = cli("migrate", "--yes", *args, "--report", str(tmp_path / "r.json"))
    assert plain.returncode == 1
    new_school = next(s for s in json.loads((tmp_path / "r.json").read_text())["schools"] if s["id"] == "new")
    assert new_school["status"] == "no_database"
    assert "restore it from backup" in new_school["error"]["hint"] and "--create-missing" in new_school["error"]["hint"]
    assert not run_sync(database_exists(pg.url(), new)), "a lost database is never quietly re-created"

    created = cli("migrate", "--yes", *args, "--create-missing", "--report", str(tmp_path / "c.json"))
    assert created.returncode == 0, created.stdout + created.stderr
    new_school = next(s for s in json.loads((tmp_path / "c.json").read_text())["schools"] if s["id"] == "new")
    assert new_school["status"] == "applied" and new_school["created_database"] is True
    assert f"created database {new}" in new_school["notes"]
    assert versions(pg, new) == [1, 2, 3] and versions(pg, existing) == [1, 2, 3]
    # Bootstrapped too, and no extension nobody asked for: the school `sqlx migrate run` would have built.
    assert fetch_sync(pg.url(new), "SELECT extname FROM pg_extension")[0]["extname"] == "plpgsql"
    assert len(fetch_sync(pg.url(new), "SELECT extname FROM pg_extension")) == 1
    audit = cli("audit", *args, "--no-schema")
    assert audit.returncode == 0, audit.stdout


# --- adopting a live SQLx fleet ---------------------------------------------------------------------------------

# SQLx's own test migrations have this shape: an early file with a foreign key without ON DELETE.
ADOPTED = {
    "1_users.sql": "CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL DEFAULT '');\n",
    "2_posts.sql": "CREATE TABLE posts (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id));\n",
}


@pytest.mark.sqlx
def test_an_sqlx_fleet_whose_applied_files_break_lint_rules_is_adopted(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", ADOPTED)
    schools = [make_school(pg, f"adopt_{i}") for i in range(2)]
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for db in schools:  # applied by the workers themselves, long before this tool
        subprocess.run(
            [str(SQLX), "migrate", "run", "--no-dotenv", "--source", str(migrations), "-D", pg.url(db)],
            check=True, capture_output=True, env=env, timeout=60,
        )  # fmt: skip
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")

    nothing_pending = cli("migrate", "--yes", *args)
    assert nothing_pending.returncode == 0, nothing_pending.stdout + nothing_pending.stderr

    (migrations / "3_comments.sql").write_text(
        "CREATE TABLE comments (id bigint PRIMARY KEY, post_id bigint REFERENCES posts (id) ON DELETE CASCADE);\n"
    )
    safe = cli("migrate", "--yes", *args)
    assert safe.returncode == 0, safe.stdout + safe.stderr
    assert all(versions(pg, db) == [1, 2, 3] for db in schools)

    (migrations / "4_drop_name.sql").write_text("ALTER TABLE users DROP COLUMN name;\n")
    unsafe = cli("migrate", "--yes", *args)
    assert unsafe.returncode == 2, unsafe.stdout + unsafe.stderr
    assert "4_drop_name.sql" in unsafe.stderr and "drop-column" in unsafe.stderr
    assert "2_posts.sql" not in unsafe.stderr, "only the file that would run is named"
    assert all(versions(pg, db) == [1, 2, 3] for db in schools), "nothing written"
    (migrations / "4_drop_name.sql").unlink()

    # lint refuses the applied file, and never advises a suppression comment in it: --baseline records it as is
    # (reading the fleet: the schools applied it).
    linted = cli("lint", str(migrations))
    assert linted.returncode == 1 and "2_posts.sql" in linted.stdout and "--baseline" in linted.stdout
    baseline = cli("lint", str(migrations), "--baseline", "--registry", str(registry))
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    assert "accepted by `lint --baseline`" in baseline.stdout
    assert cli("lint", str(migrations)).returncode == 0, "released files are checked only for edits"


# A real SQLx project's history: a pg_dump-style first file, ups without downs among pairs, a file that wraps itself
# in BEGIN; ... COMMIT;, a description with dots, an index built without CONCURRENTLY long ago.
REAL_PROJECT = {
    "20240101000000_initial.sql": "CREATE TABLE public.students (\n    id bigint NOT NULL,\n"
    "    name character varying(50) NOT NULL DEFAULT '',\n    fee numeric(6,2)\n);\n",
    "20240115000000_index_names.sql": "CREATE INDEX students_name_idx ON students (name);\n",
    "20240201000000_v1.2_guardians.up.sql": "BEGIN;\nCREATE TABLE guardians (id bigint PRIMARY KEY);\nCOMMIT;\n",
    "20240301000000_backfill.up.sql": "UPDATE students SET name = trim(name);\n",  # no down file
    "20240401000000_add_notes.up.sql": "ALTER TABLE students ADD COLUMN notes text;\n",
    "20240401000000_add_notes.down.sql": "ALTER TABLE students DROP COLUMN notes;\n",
}
# What is written after adoption: widening changes, which rewrite nothing.
WIDENING = {
    "20250101000000_longer_names.up.sql": "ALTER TABLE students ALTER COLUMN name TYPE varchar(200);\n",
    "20250101000000_longer_names.down.sql": "ALTER TABLE students ALTER COLUMN name TYPE varchar(50);\n",
    "20250102000000_bigger_fees.sql": "ALTER TABLE students ALTER COLUMN fee TYPE numeric(9,2), "
    "ALTER COLUMN name TYPE text;\n",
}


@pytest.mark.sqlx
def test_a_real_sqlx_project_is_adopted_as_it_is_and_its_widening_changes_pass_the_gate(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations", REAL_PROJECT)
    live, new = make_school(pg, "live"), unique_db_name("new_school")
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    subprocess.run(
        [str(SQLX), "migrate", "run", "--no-dotenv", "--source", str(migrations), "-D", pg.url(live)],
        check=True, capture_output=True, env=env, timeout=60,
    )  # fmt: skip
    # Adoption: today's files, which the live school applied, recorded as released, their findings accepted (lint
    # names them: nothing to edit).
    baseline = cli("lint", str(migrations), "--baseline", "--no-squawk", "-D", pg.url(live))
    assert baseline.returncode == 0, baseline.stdout + baseline.stderr
    for rule, file in [
        ("index-without-concurrently", "20240115000000_index_names.sql"),
        ("up-without-down", "20240201000000_v1.2_guardians.up.sql"),
        ("up-without-down", "20240301000000_backfill.up.sql"),
    ]:
        assert re.search(rf"{file}:\d+:\d+ +suppressed +{rule} ", baseline.stdout), (rule, baseline.stdout)
    make_migrations(migrations, WIDENING)
    registry = write_registry(
        tmp_path / "t.yaml", [("live", registry_url(pg, live), []), ("new", registry_url(pg, new), [])]
    )
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress", "--yes")

    # No renaming, no editing, no --allow-unsafe: the widening files pass the gate, the new school gets everything.
    migrated = cli("migrate", *args, "--create-missing")

    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    everything = [int(name.split("_")[0]) for name in sorted({**REAL_PROJECT, **WIDENING}) if ".down." not in name]
    assert versions(pg, live) == everything and versions(pg, new) == everything
    for db in (live, new):
        assert set(sqlx_info(migrations, pg.url(db)).values()) == {"installed"}
    linted = cli("lint", str(migrations), "--format", "editor", "--no-squawk")
    assert linted.returncode == 0 and linted.stdout == "", linted.stdout + linted.stderr

    # Revert refuses to pass the files without a down file, on every school, touching none; it names them all.
    reverted = cli("revert", *args, "--target", "20240101000000")
    assert reverted.returncode == 1, reverted.stdout + reverted.stderr
    # Said once for each school, in its result (the plan pass's preview counts them: "2 failed").
    assert reverted.stdout.count("have no down file; cannot revert past them") == 2, reverted.stdout
    assert "  2 failed" in reverted.stdout
    assert "20240301000000 (20240301000000_backfill.up.sql)" in reverted.stdout
    assert "revert to 20250102000000 or later" in reverted.stdout
    assert versions(pg, live) == everything and versions(pg, new) == everything


# --- the registry in the admin database -------------------------------------------------------------------------


def admin_database(pg: DevServer, rows: list[tuple[str, str, list[str], bool, str | None]]) -> str:
    """An admin service's database: a `schools` table (slug, db_url, labels, active, lock_timeout)."""
    admin = make_school(pg, "admin")
    execute_sync(
        pg.url(admin),
        "CREATE TABLE schools (slug text, db_url text, labels text[], active boolean, lock_timeout interval)",
    )
    for row in rows:
        execute_sync(pg.url(admin), "INSERT INTO schools VALUES ($1, $2, $3, $4, $5::text::interval)", *row)
    return admin


def passwordless_url(pg: DevServer, db: str) -> str:
    return f"postgresql://postgres@127.0.0.1:{pg.port}/{db}"


def source_registry(path: Path, admin_url: str, where: str = "WHERE active") -> Path:
    path.write_text(
        "source:\n"
        "  url: ${ADMIN_DATABASE_URL}\n"
        f"  query: SELECT slug AS id, db_url AS url, labels AS tags, lock_timeout FROM schools {where} ORDER BY slug\n"
        "defaults:\n  per_server: 2\n"
    )
    os.environ["ADMIN_DATABASE_URL"] = admin_url
    return path


def test_a_source_registry_migrates_exactly_the_active_schools_of_the_admin_database(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    a, b, closed = (make_school(pg, f"src_{n}") for n in ("a", "b", "closed"))
    admin = admin_database(pg, [
        ("school-a", passwordless_url(pg, a), ["canary"], True, "2 seconds"),
        ("school-b", passwordless_url(pg, b), [], True, None),
        ("school-closed", passwordless_url(pg, closed), [], False, None),
    ])  # fmt: skip
    registry = source_registry(tmp_path / "t.yaml", passwordless_url(pg, admin))
    env = {"PGPASSWORD": PG_PASSWORD}  # URLs from the admin database carry no password: libpq's variable works
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    result = cli("migrate", "--yes", *args, "--report", str(tmp_path / "r.json"), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads((tmp_path / "r.json").read_text())
    assert {s["id"]: s["wave"] for s in data["schools"]} == {"school-a": "canary", "school-b": "main"}
    assert versions(pg, a) == versions(pg, b) == [1, 2, 3]
    assert not fetch_sync(pg.url(closed), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'")
    only_b = cli("status", *args, "--tenant", "school-b", "--report", str(tmp_path / "s.json"), env=env)
    assert only_b.returncode == 0, only_b.stdout + only_b.stderr
    assert [s["id"] for s in json.loads((tmp_path / "s.json").read_text())["schools"]] == ["school-b"]


def test_bad_source_rows_are_all_named_and_nothing_is_touched(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    good = make_school(pg, "src_good")
    admin = admin_database(pg, [
        ("school-good", passwordless_url(pg, good), [], True, None),
        ("Bad Id", passwordless_url(pg, good + "_x"), [], True, None),
        ("school-nourl", "", [], True, None),
    ])  # fmt: skip
    registry = source_registry(tmp_path / "t.yaml", passwordless_url(pg, admin))
    result = cli(
        "migrate", "--registry", str(registry), "--migrations", str(migrations), env={"PGPASSWORD": PG_PASSWORD}
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "source row id='Bad Id': tenant id 'Bad Id' is not a slug" in result.stderr
    assert "source row id='school-nourl': url must be a non-empty string" in result.stderr
    assert not fetch_sync(pg.url(good), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'")


def test_an_admin_database_that_does_not_answer_exits_2_naming_the_source_without_its_password(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    secret = "adm1n-s3cret"
    registry = source_registry(tmp_path / "t.yaml", f"postgresql://admin:{secret}@127.0.0.1:1/admin")
    result = cli("status", "--registry", str(registry), "--migrations", str(migrations))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the registry source postgresql://admin:***@127.0.0.1:1/admin did not answer" in result.stderr
    assert secret not in result.stdout + result.stderr


def test_a_multi_line_source_query_with_tabs_is_read_from_the_admin_database(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    school = make_school(pg, "src_ml")
    admin = admin_database(pg, [
        ("school-ml", passwordless_url(pg, school), [], True, None),
        ("school-off", passwordless_url(pg, school + "_off"), [], False, None),
    ])  # fmt: skip
    registry = tmp_path / "t.yaml"
    registry.write_text(
        "source:\n"
        "  url: ${ADMIN_DATABASE_URL}\n"
        "  query: |\n"
        "    SELECT slug AS id,\n"
        "    \tdb_url AS url  -- a comment, and a tab before this line\n"
        "    FROM schools\n"
        "    WHERE active\n"
    )
    os.environ["ADMIN_DATABASE_URL"] = passwordless_url(pg, admin)
    result = cli("status", "--registry", str(registry), "--migrations", str(migrations), "--report",
                 str(tmp_path / "r.json"), env={"PGPASSWORD": PG_PASSWORD})  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr  # status: pending files are not a failure
    assert [s["id"] for s in json.loads((tmp_path / "r.json").read_text())["schools"]] == ["school-ml"]


def test_a_source_query_with_another_control_character_is_refused(tmp_path: Path) -> None:
    registry = tmp_path / "t.yaml"
    registry.write_text('source:\n  url: postgresql://u@127.0.0.1:1/admin\n  query: "SELECT 1 AS id\\x01, 2 AS url"\n')
    result = cli("status", "--registry", str(registry), "--migrations", str(make_migrations(tmp_path / "m")))
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"{registry}:3: source.query contains a control character (U+0001)" in " ".join(result.stderr.split())
    assert "did not answer" not in result.stderr, "refused before any connection"
