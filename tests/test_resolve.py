"""`orchestrator resolve`: the way out of `dirty`, fleet-wide, after an operator checked what an interrupted
`-- no-transaction` file left behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import execute_sync, fetch_sync

from orchestrator.devserver import DevServer

FILES = {
    "1_people.sql": "CREATE TABLE people (id int PRIMARY KEY, email text);\n",
    "2_people_email.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY people_email ON people (email);\n",
    "3_more.sql": "CREATE TABLE more (id int);\n",
}


def interrupted_fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, list[str]]:
    """Two schools where file 2 ran but its row still says success = false (the kill -9 case): both dirty."""
    migrations = make_migrations(tmp_path / "migrations", FILES)
    schools = [make_school(pg, f"resolve_{i}") for i in range(2)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args, "--target", "1").returncode == 0
    for db in schools:
        execute_sync(pg.url(db), "CREATE INDEX people_email ON people (email)")
        execute_sync(
            pg.url(db),
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
            "VALUES (2, 'people email', false, '\\x00'::bytea, -1)",
        )
    dirty = cli("status", *args, "--report", str(tmp_path / "s.json"))
    assert {s["status"] for s in json.loads((tmp_path / "s.json").read_text())["schools"]} == {"dirty"}, dirty.stdout
    return migrations, registry, schools


def rows(pg: DevServer, db: str) -> list[tuple[int, bool]]:
    return [
        (r["version"], r["success"])
        for r in fetch_sync(pg.url(db), "SELECT version, success FROM _sqlx_migrations ORDER BY 1")
    ]


def test_resolve_applied_records_the_file_and_the_rollout_carries_on(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools = interrupted_fleet(tmp_path, pg)
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    resolved = cli("resolve", "--yes", "--applied", "2", *args, "--report", str(tmp_path / "r.json"))
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert json.loads((tmp_path / "r.json").read_text())["command"] == "resolve"
    assert all(rows(pg, db) == [(1, True), (2, True)] for db in schools)
    migrated = cli("migrate", "--yes", *args)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert all(rows(pg, db) == [(1, True), (2, True), (3, True)] for db in schools)


def test_resolve_not_applied_drops_the_row_so_the_file_runs_again(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools = interrupted_fleet(tmp_path, pg)
    for db in schools:
        execute_sync(pg.url(db), "DROP INDEX people_email")  # the operator undid the half-done part
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    resolved = cli("resolve", "--yes", "--not-applied", "2", *args)
    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert all(rows(pg, db) == [(1, True)] for db in schools)
    assert cli("migrate", "--yes", *args).returncode == 0
    assert all(rows(pg, db) == [(1, True), (2, True), (3, True)] for db in schools)


def test_resolve_needs_exactly_one_action_and_a_known_version(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    registry = fleet_registry(tmp_path / "t.yaml", pg, [make_school(pg, "resolve_bad")])
    args = ("--registry", str(registry), "--migrations", str(migrations))
    assert cli("resolve", "--yes", *args).returncode == 2
    both = cli("resolve", "--yes", "--applied", "2", "--not-applied", "2", *args)
    assert both.returncode == 2 and "exactly one" in both.stderr
    unknown = cli("resolve", "--yes", "--applied", "7", *args)
    assert unknown.returncode == 2 and "version 7 is not a migration" in unknown.stderr


def test_restamp_records_an_edit_that_changed_nothing_only_where_the_schema_matches(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    same, different = make_school(pg, "restamp_same"), make_school(pg, "restamp_diff")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [same, different])
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args).returncode == 0
    execute_sync(pg.url(different), "ALTER TABLE more ADD COLUMN extra int")  # this school really differs
    edited = migrations / "3_more.sql"
    edited.write_text("-- a comment added after the release\n" + edited.read_text())
    before = fetch_sync(pg.url(same), "SELECT checksum FROM _sqlx_migrations WHERE version = 3")[0]["checksum"]

    result = cli("resolve", "--yes", "--restamp", "3", *args, "--report", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    statuses = {s["id"]: s["status"] for s in json.loads((tmp_path / "r.json").read_text())["schools"]}
    assert statuses == {"s0": "applied", "s1": "modified"}
    after = fetch_sync(pg.url(same), "SELECT checksum FROM _sqlx_migrations WHERE version = 3")[0]["checksum"]
    assert after != before and bytes(after) == hashlib.sha384(edited.read_bytes()).digest()
    assert cli("status", *args, "--tenant", "s0").returncode == 0, "SQLx accepts the re-stamped school"
