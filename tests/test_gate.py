"""The safety gate in front of migrate, and the rehearsal on a scratch database."""

from __future__ import annotations

import json
from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import fetch_sync, fetchval_sync

from orchestrator.devserver import DevServer

SAFE = {
    "1_create_people.up.sql": "CREATE TABLE people (id int PRIMARY KEY, name text NOT NULL DEFAULT '');\n",
    "1_create_people.down.sql": "DROP TABLE people;\n",
}
DESTRUCTIVE = {
    **SAFE,
    "2_drop_name.up.sql": "-- the app stopped reading it\nALTER TABLE people DROP COLUMN name;\n",
    "2_drop_name.down.sql": "ALTER TABLE people ADD COLUMN name text NOT NULL DEFAULT '';\n",
}


def has_history(pg: DevServer, db: str) -> bool:
    return bool(fetchval_sync(pg.url(db), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"))


def fleet(tmp_path: Path, pg: DevServer, n: int, label: str) -> tuple[Path, list[str]]:
    schools = [make_school(pg, f"{label}_{i}") for i in range(n)]
    registry = fleet_registry(tmp_path / "t.yaml", pg, schools)
    return registry, schools


def test_the_gate_stops_a_destructive_file_before_any_school_is_touched(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    registry, schools = fleet(tmp_path, pg, 3, "gate")
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 2, result.stdout
    assert "2_drop_name.up.sql:2:" in result.stderr and "drop-column" in result.stderr
    assert "no school was touched" in result.stderr
    assert not any(has_history(pg, db) for db in schools)


def test_allow_unsafe_lets_it_through_and_the_report_records_it(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "m", DESTRUCTIVE)
    registry, schools = fleet(tmp_path, pg, 2, "unsafe")
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--allow-unsafe", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "--allow-unsafe" in result.stdout
    options = json.loads((tmp_path / "r.json").read_text())["options"]
    assert options["allow_unsafe"] is True
    assert any("drop-column" in line for line in options["unsafe_findings"])
    for db in schools:
        columns = fetch_sync(pg.url(db), "SELECT column_name FROM information_schema.columns WHERE table_name='people'")
        assert [r["column_name"] for r in columns] == ["id"]


def test_a_suppression_with_a_reason_passes_the_gate(tmp_path: Path, pg: DevServer) -> None:
    files = dict(DESTRUCTIVE)
    files["2_drop_name.up.sql"] = (
        "-- lint:ignore drop-column reason: no release reads people.name since v42\n"
        "ALTER TABLE people DROP COLUMN name;\n"
    )
    migrations = make_migrations(tmp_path / "m", files)
    registry, _ = fleet(tmp_path, pg, 1, "suppressed")
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rehearsal_catches_a_failing_down_file_before_any_school(tmp_path: Path, pg: DevServer) -> None:
    files = {
        **SAFE,
        "2_add_city.up.sql": "ALTER TABLE people ADD COLUMN city text NOT NULL DEFAULT '';\n",
        "2_add_city.down.sql": "ALTER TABLE people DROP COLUMN town;\n",  # wrong column: the down file fails
    }
    migrations = make_migrations(tmp_path / "m", files)
    registry, schools = fleet(tmp_path, pg, 2, "rehearse")
    # The fleet stands at version 1; the rollout brings version 2.
    args = ("--registry", str(registry), "--migrations", str(migrations))
    assert cli("migrate", "--yes", *args, "--target", "1").returncode == 0
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--rehearse", "--report", str(tmp_path / "r.json"))  # fmt: skip
    assert result.returncode == 1
    assert "rehearsal" in result.stdout and "2_add_city.down.sql" in result.stdout
    report = json.loads((tmp_path / "r.json").read_text())
    assert {s["status"] for s in report["schools"]} == {"skipped"}
    for db in schools:
        versions = [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations")]
        assert versions == [1], "no school was touched"
    # (Spares that other tests on this server keep ready are not the rehearsal's.)
    leftovers = fetch_sync(
        pg.url(),
        "SELECT datname FROM pg_database WHERE datname LIKE 'orchestrator_%' "
        "AND datname NOT LIKE 'orchestrator_spare_%'",
    )
    assert leftovers == [], "scratch databases are dropped"


def test_a_good_rehearsal_then_rolls_out(tmp_path: Path, pg: DevServer) -> None:
    files = {
        **SAFE,
        "2_add_city.up.sql": "ALTER TABLE people ADD COLUMN city text NOT NULL DEFAULT '';\n",
        "2_add_city.down.sql": "ALTER TABLE people DROP COLUMN city;\n",
    }
    migrations = make_migrations(tmp_path / "m", files)
    registry, schools = fleet(tmp_path, pg, 2, "rehearse_ok")
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--rehearse")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rehearsal: from version nothing: 2 migration(s) up, down and up again: ok" in result.stdout
    for db in schools:
        assert has_history(pg, db)
