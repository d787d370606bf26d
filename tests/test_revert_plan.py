"""revert over a fleet shows its plan before it writes: --dry-run (read-only), and a plan pass with --preflight
(on a terminal it then asks), as migrate does."""

from __future__ import annotations

import json
from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import fetch_sync

from orchestrator.devserver import DevServer

REVERSIBLE = {
    "1_a.up.sql": "CREATE TABLE a (id int);\n",
    "1_a.down.sql": "DROP TABLE a;\n",
    "2_b.up.sql": "CREATE TABLE b (id int);\n",
    "2_b.down.sql": "DROP TABLE b;\n",
    "3_c.up.sql": "CREATE TABLE c (id int);\n",
    "3_c.down.sql": "-- nothing to undo by hand\nDROP TABLE c;\n",
}


def migrated_fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, list[str]]:
    migrations = make_migrations(tmp_path / "migrations", REVERSIBLE)
    schools = [make_school(pg, f"revplan_{i}") for i in range(2)]
    registry = fleet_registry(tmp_path / "tenants.yaml", pg, schools)
    result = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert result.returncode == 0, result.stdout + result.stderr
    return migrations, registry, schools


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def test_revert_dry_run_says_what_would_be_reverted_and_changes_nothing(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools = migrated_fleet(tmp_path, pg)
    report = tmp_path / "r.json"
    result = cli("revert", "--target", "1", "--dry-run", "--registry", str(registry), "--migrations",
                 str(migrations), "--no-progress", "--report", str(report))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    data = json.loads(report.read_text())
    assert data["options"]["dry_run"] is True
    for school in data["schools"]:
        assert school["status"] == "planned"
        assert [(s["version"], s["direction"]) for s in school["steps"]] == [(3, "down"), (2, "down")]
    assert all(versions(pg, db) == [1, 2, 3] for db in schools)


def test_revert_with_preflight_shows_the_plan_then_reverts(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools = migrated_fleet(tmp_path, pg)
    result = cli("revert", "--target", "1", "--preflight", "--yes", "--registry", str(registry), "--migrations",
                 str(migrations), "--no-progress")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 school(s) would revert 2 migration(s): 3, 2" in result.stdout
    assert all(versions(pg, db) == [1] for db in schools)
