"""`orchestrator resolve`: the way out of `dirty`, fleet-wide, after an operator checked what an interrupted
`-- no-transaction` file left behind."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from fleetkit import cli, fleet_registry, git_commit, make_migrations, make_school, write_registry
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
    notes = json.loads((tmp_path / "r.json").read_text())["schools"][0]["notes"]
    assert any("held no checksum" in n and "which bytes ran is unknown" in n for n in notes), notes
    migrated = cli("migrate", "--yes", *args)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert all(rows(pg, db) == [(1, True), (2, True), (3, True)] for db in schools)


def test_resolve_applied_settles_our_own_in_progress_mark(tmp_path: Path, pg: DevServer) -> None:
    # Our mark of a `-- no-transaction` file holds the file's checksum: unchanged file, resolved, no note about it.
    args, [school] = fleet_at(tmp_path, pg, target=2, n=1)
    execute_sync(pg.url(school), "UPDATE _sqlx_migrations SET success = false WHERE version = 2")  # the kill -9
    report = tmp_path / "r.json"

    resolved = cli("resolve", "--yes", "--applied", "2", *args, "--report", str(report))

    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert schools_of(report)["s0"]["notes"] == ["recorded 2_people_email.sql as applied"]
    assert rows(pg, school) == [(1, True), (2, True)]


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
    git_commit(migrations)  # the applied bytes, where resolve finds them
    edited = migrations / "3_more.sql"
    edited.write_text("-- a comment added after the release\n" + edited.read_text())
    before = fetch_sync(pg.url(same), "SELECT checksum FROM _sqlx_migrations WHERE version = 3")[0]["checksum"]

    result = cli("resolve", "--yes", "--restamp", "3", *args, "--report", str(tmp_path / "r.json"))
    assert result.returncode == 1, result.stdout + result.stderr
    statuses = {s["id"]: s["status"] for s in json.loads((tmp_path / "r.json").read_text())["schools"]}
    assert statuses == {"s0": "applied", "s1": "modified"}
    assert "applied bytes found in git at " in json.loads((tmp_path / "r.json").read_text())["schools"][0]["notes"][1]
    after = fetch_sync(pg.url(same), "SELECT checksum FROM _sqlx_migrations WHERE version = 3")[0]["checksum"]
    assert after != before and bytes(after) == hashlib.sha384(edited.read_bytes()).digest()
    assert cli("status", *args, "--tenant", "s0").returncode == 0, "SQLx accepts the re-stamped school"


# --- only what is true: schools with nothing to resolve are left alone --------------------------------------------


def fleet_at(tmp_path: Path, pg: DevServer, target: int, n: int = 3) -> tuple[tuple[str, ...], list[str]]:
    """`n` schools migrated up to `target`: the CLI args for them, and their database names (ids s0, s1, ...)."""
    migrations = make_migrations(tmp_path / "migrations", FILES)
    schools = [make_school(pg, f"resolve_{i}") for i in range(n)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args, "--target", str(target)).returncode == 0
    return args, schools


def schools_of(report: Path) -> dict[str, dict[str, Any]]:
    return {s["id"]: s for s in json.loads(report.read_text())["schools"]}


def has_table(pg: DevServer, db: str, table: str) -> bool:
    return bool(fetch_sync(pg.url(db), "SELECT to_regclass($1) IS NOT NULL AS t", table)[0]["t"])


def test_applied_on_a_pending_version_writes_nothing_and_migrate_still_runs_it(tmp_path: Path, pg: DevServer) -> None:
    # The reproduced bug: every school up to date but for a pending 3 (no row): `--applied 3 --yes` recorded 3 as
    # applied everywhere, its table never created, and no later migrate would run it.
    args, schools = fleet_at(tmp_path, pg, target=2)
    report = tmp_path / "r.json"

    resolved = cli("resolve", "--yes", "--applied", "3", "--yes", *args, "--report", str(report))

    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    assert json.loads(report.read_text())["ok"] is True
    for school in schools_of(report).values():
        assert (school["status"], school["ok"]) == ("skipped", True)
        assert school["notes"] == [
            "version 3 is pending here (no history row): `orchestrator migrate` runs it; nothing recorded"
        ]
    assert "nothing was written" in resolved.stdout
    assert all(rows(pg, db) == [(1, True), (2, True)] for db in schools)
    migrated = cli("migrate", "--yes", *args)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    assert all(rows(pg, db) == [(1, True), (2, True), (3, True)] and has_table(pg, db, "more") for db in schools)


def test_applied_resolves_only_the_dirty_school_of_a_fleet(tmp_path: Path, pg: DevServer) -> None:
    args, schools = fleet_at(tmp_path, pg, target=1, n=4)
    dirty = schools[2]
    execute_sync(pg.url(dirty), "CREATE INDEX people_email ON people (email)")
    execute_sync(
        pg.url(dirty),
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
        "VALUES (2, 'people email', false, '\\x00'::bytea, -1)",
    )
    report = tmp_path / "r.json"

    resolved = cli("resolve", "--yes", "--applied", "2", *args, "--report", str(report))

    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    statuses = {sid: s["status"] for sid, s in schools_of(report).items()}
    assert statuses == {"s0": "skipped", "s1": "skipped", "s2": "applied", "s3": "skipped"}
    assert rows(pg, dirty) == [(1, True), (2, True)]
    assert all(rows(pg, db) == [(1, True)] for db in schools if db != dirty)
    assert cli("migrate", "--yes", *args).returncode == 0
    assert all(rows(pg, db) == [(1, True), (2, True), (3, True)] for db in schools)


def test_not_applied_forgets_only_unfinished_rows(tmp_path: Path, pg: DevServer) -> None:
    args, schools = fleet_at(tmp_path, pg, target=1, n=3)
    dirty, done, pending = schools
    execute_sync(
        pg.url(dirty),
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
        "VALUES (2, 'people email', false, '\\x00'::bytea, -1)",
    )
    assert cli("migrate", "--yes", *args, "--tenant", "s1", "--target", "2").returncode == 0
    report = tmp_path / "r.json"

    resolved = cli("resolve", "--yes", "--not-applied", "2", *args, "--report", str(report))

    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    result = schools_of(report)
    assert [result[sid]["status"] for sid in ("s0", "s1", "s2")] == ["applied", "skipped", "skipped"]
    assert "recorded as applied here" in result["s1"]["notes"][0] and "revert" in result["s1"]["notes"][0]
    assert "no history row" in result["s2"]["notes"][0]
    assert rows(pg, dirty) == [(1, True)]
    assert rows(pg, done) == [(1, True), (2, True)], "an applied row is never forgotten"
    assert rows(pg, pending) == [(1, True)]


def test_schema_evidence_records_a_version_run_by_hand_and_nothing_else(tmp_path: Path, pg: DevServer) -> None:
    args, schools = fleet_at(tmp_path, pg, target=2, n=3)
    by_hand, wrong, untouched = schools
    execute_sync(pg.url(by_hand), "CREATE TABLE more (id int)")  # 3_more.sql's SQL, run by hand
    execute_sync(pg.url(wrong), "CREATE TABLE more (id bigint)")  # something else
    report = tmp_path / "r.json"

    plain = cli("resolve", "--yes", "--applied", "3", *args, "--report", str(report))
    assert plain.returncode == 0 and {s["status"] for s in schools_of(report).values()} == {"skipped"}
    assert rows(pg, by_hand) == [(1, True), (2, True)], "no evidence asked for: nothing recorded"

    resolved = cli("resolve", "--yes", "--applied", "3", "--schema-evidence", *args, "--report", str(report))

    assert resolved.returncode == 0, resolved.stdout + resolved.stderr
    data = json.loads(report.read_text())
    assert data["options"]["resolve"] == {
        "action": "applied",
        "version": 3,
        "schema_evidence": True,
        "allow_unverified": False,
    }
    result = schools_of(report)
    assert result["s0"]["status"] == "applied"
    assert result["s0"]["notes"] == ["recorded on evidence: live schema matches files through 3"]
    assert [result[sid]["status"] for sid in ("s1", "s2")] == ["skipped", "skipped"]
    assert "the live schema is not what its applied files and version 3 produce" in result["s1"]["notes"][0]
    assert rows(pg, by_hand) == [(1, True), (2, True), (3, True)]
    checksum = fetch_sync(pg.url(by_hand), "SELECT checksum FROM _sqlx_migrations WHERE version = 3")[0]["checksum"]
    assert bytes(checksum) == hashlib.sha384(FILES["3_more.sql"].encode()).digest()
    assert rows(pg, wrong) == rows(pg, untouched) == [(1, True), (2, True)]
    assert cli("status", *args, "--tenant", "s0").returncode == 0, "SQLx accepts the recorded school"
    assert cli("migrate", "--yes", *args, "--tenant", "s2").returncode == 0
    assert has_table(pg, untouched, "more") and rows(pg, untouched)[-1] == (3, True)


# --- re-stamping only what the schema comparison can vouch for --------------------------------------------------

SEEDED = {
    "1_grades.sql": "CREATE TABLE grades (id int PRIMARY KEY, label text NOT NULL);\n",
    "2_seed.sql": "-- the grading scale\nINSERT INTO grades VALUES (1, 'A'), (2, 'B');\n",
}


def seeded_fleet(tmp_path: Path, pg: DevServer) -> tuple[tuple[str, ...], list[str], Path]:
    migrations = make_migrations(tmp_path / "migrations", SEEDED)
    schools = [make_school(pg, f"restamp_{i}") for i in range(2)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args).returncode == 0
    return args, schools, migrations / "2_seed.sql"


def checksum_of(pg: DevServer, db: str, version: int) -> bytes:
    rows = fetch_sync(pg.url(db), "SELECT checksum FROM _sqlx_migrations WHERE version = $1", version)
    return bytes(rows[0]["checksum"])


def test_restamp_refuses_a_file_whose_rows_the_schema_cannot_show(tmp_path: Path, pg: DevServer) -> None:
    args, schools, seed = seeded_fleet(tmp_path, pg)
    applied = checksum_of(pg, schools[0], 2)
    rev = git_commit(seed.parent)
    seed.write_text(seed.read_text().replace("'B'", "'B+'"))  # same schema, other rows on new schools
    report = tmp_path / "r.json"

    refused = cli("resolve", "--yes", "--restamp", "2", *args, "--report", str(report))

    assert refused.returncode == 1, refused.stdout + refused.stderr
    for school in schools_of(report).values():
        assert school["status"] == "modified"
        hint = school["error"]["hint"]
        assert f"applied bytes found in git at {rev}" in hint and "--allow-unverified --tenant" in hint
        assert "applied file line 2: INSERT (changes rows" in hint and "current file line 2: INSERT" in hint
    assert all(checksum_of(pg, db, 2) == applied for db in schools)
    assert fetch_sync(pg.url(schools[0]), "SELECT label FROM grades ORDER BY id")[1]["label"] == "B"


def test_restamp_of_an_edit_to_comments_and_whitespace_goes_through(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    school = make_school(pg, "restamp_ws")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [school])
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args).returncode == 0
    git_commit(migrations)
    edited = migrations / "1_people.sql"
    edited.write_text("-- who is who\nCREATE TABLE people (\n    id int PRIMARY KEY,\n    email text\n);\n")

    result = cli("resolve", "--yes", "--restamp", "1", *args)

    assert result.returncode == 0, result.stdout + result.stderr
    assert checksum_of(pg, school, 1) == hashlib.sha384(edited.read_bytes()).digest()
    assert cli("status", *args).returncode == 0


def test_restamp_of_a_function_body_is_left_to_the_schema_comparison(tmp_path: Path, pg: DevServer) -> None:
    # A function's body is in the fingerprint: an edit to it shows as a schema difference, not as "unseen".
    body = "CREATE FUNCTION grade_of(n int) RETURNS text LANGUAGE sql AS $$ SELECT 'A' $$;\n"
    migrations = make_migrations(tmp_path / "migrations", {"1_grade_of.sql": body})
    school = make_school(pg, "restamp_fn")
    registry = fleet_registry(tmp_path / "t.yaml", pg, [school])
    args = ("--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert cli("migrate", "--yes", *args).returncode == 0
    applied = checksum_of(pg, school, 1)
    git_commit(migrations)
    (migrations / "1_grade_of.sql").write_text(body.replace("'A'", "'B'"))
    report = tmp_path / "r.json"

    refused = cli("resolve", "--yes", "--restamp", "1", *args, "--report", str(report))

    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "schema differs" in schools_of(report)["s0"]["error"]["hint"]
    assert checksum_of(pg, school, 1) == applied


def test_restamp_of_a_comment_beside_unchanged_rows_goes_through(tmp_path: Path, pg: DevServer) -> None:
    # The applied bytes are in git and hold the same INSERT as the current file: only the comment changed.
    args, schools, seed = seeded_fleet(tmp_path, pg)
    rev = git_commit(seed.parent)
    seed.write_text(seed.read_text().replace("-- the grading scale", "-- the grading scale (A best)"))
    report = tmp_path / "r.json"

    result = cli("resolve", "--yes", "--restamp", "2", *args, "--report", str(report))

    assert result.returncode == 0, result.stdout + result.stderr
    for school in schools_of(report).values():
        assert school["status"] == "applied" and f"applied bytes found in git at {rev}" in school["notes"]
    assert all(checksum_of(pg, db, 2) == hashlib.sha384(seed.read_bytes()).digest() for db in schools)


def test_restamp_without_the_applied_bytes_refuses_even_a_comment(tmp_path: Path, pg: DevServer) -> None:
    # No git history: what the edit removed cannot be known (an INSERT taken out leaves nothing unseen).
    migrations = make_migrations(tmp_path / "migrations", FILES)
    school = make_school(pg, "restamp_nogit")
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, [school])), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", *args).returncode == 0
    applied = checksum_of(pg, school, 1)
    (migrations / "1_people.sql").write_text("-- who is who\n" + FILES["1_people.sql"])
    report = tmp_path / "r.json"

    refused = cli("resolve", "--yes", "--no-progress", "--restamp", "1", *args, "--report", str(report))

    assert refused.returncode == 1, refused.stdout + refused.stderr
    hint = schools_of(report)["s0"]["error"]["hint"]
    assert "applied bytes not found" in hint and "--allow-unverified --tenant" in hint
    assert checksum_of(pg, school, 1) == applied


def test_restamp_of_unseen_statements_needs_the_named_schools_and_the_flag(tmp_path: Path, pg: DevServer) -> None:
    args, schools, seed = seeded_fleet(tmp_path, pg)  # no git history: the applied bytes are not found
    applied = checksum_of(pg, schools[0], 2)
    seed.write_text(seed.read_text().replace("-- the grading scale", "-- the grading scale (A best)"))
    report = tmp_path / "r.json"

    result = cli(
        "resolve", "--yes", "--restamp", "2", "--allow-unverified", "--tenant", "s0", *args, "--report", str(report)
    )

    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["options"]["resolve"]["allow_unverified"] is True
    [school] = data["schools"]
    assert school["id"] == "s0" and school["status"] == "applied"
    assert "applied bytes not found" in school["notes"]
    assert any(n.startswith("--allow-unverified: re-stamped although") and "INSERT" in n for n in school["notes"])
    assert checksum_of(pg, schools[0], 2) == hashlib.sha384(seed.read_bytes()).digest()
    assert checksum_of(pg, schools[1], 2) == applied, "a school not named is not touched"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (("--restamp", "2", "--allow-unverified"), "add --tenant ID"),
        (("--applied", "2", "--allow-unverified", "--tenant", "s0"), "--allow-unverified goes with --restamp"),
        (("--restamp", "2", "--schema-evidence"), "--schema-evidence goes with --applied"),
        (("--not-applied", "2", "--schema-evidence", "--dry-run"), "--schema-evidence goes with --applied"),
        (("--schema-evidence",), "exactly one"),
    ],
    ids=["unverified-without-tenant", "unverified-with-applied", "evidence-with-restamp", "dry-run", "no-action"],
)
def test_resolve_flag_combinations_are_refused_before_any_connection(
    tmp_path: Path, unreachable_url: str, flags: tuple[str, ...], message: str
) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    registry = write_registry(tmp_path / "t.yaml", [("s0", unreachable_url, [])])

    result = cli("resolve", "--yes", *flags, "--registry", str(registry), "--migrations", str(migrations))

    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
