"""One file, one checksum across the fleet: after a partial failure, an edited file is never applied to the rest
while other schools hold its original bytes (that would leave SQLx workers refusing to start on those)."""

from __future__ import annotations

import json
from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import execute_sync, fetch_sync

from orchestrator.devserver import DevServer


def partly_failed_fleet(tmp_path: Path, pg: DevServer) -> tuple[Path, Path, dict[str, str], Path]:
    """s0 and s1 applied all three files; s2 failed at file 2 (its table already existed)."""
    migrations = make_migrations(tmp_path / "migrations")
    schools = {f"s{i}": make_school(pg, f"split_{i}") for i in range(3)}
    execute_sync(pg.url(schools["s2"]), "CREATE TABLE two (id int)")
    registry = fleet_registry(tmp_path / "tenants.yaml", pg, list(schools.values()))
    report = tmp_path / "first.json"
    first = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                "--report", str(report), "--concurrency", "1")  # fmt: skip
    assert first.returncode == 1, first.stdout + first.stderr
    # The tempting fix: edit the failing file so that it passes on s2.
    edited = migrations / "2_slow_step.sql"
    edited.write_text(edited.read_text().replace("CREATE TABLE two", "CREATE TABLE IF NOT EXISTS two"))
    return migrations, registry, schools, report


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def test_resume_refuses_to_apply_an_edited_file_that_other_schools_hold(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools, report = partly_failed_fleet(tmp_path, pg)
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--resume", str(report))  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "2_slow_step.sql: edited since 2 school(s) of that run applied it (s0, s1)" in result.stderr
    assert "new migration" in result.stderr and "split the fleet" in result.stderr
    assert versions(pg, schools["s2"]) == [1], "nothing was touched"


def test_the_plan_pass_refuses_before_any_write(tmp_path: Path, pg: DevServer) -> None:
    migrations, registry, schools, _ = partly_failed_fleet(tmp_path, pg)
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--preflight", "--yes")  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    assert "version 2: the file differs from what 2 school(s) applied (s0, s1)" in result.stderr
    assert versions(pg, schools["s2"]) == [1], "nothing was written"


def test_without_a_plan_pass_the_first_school_holding_other_bytes_halts_the_rollout(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations, registry, schools, _ = partly_failed_fleet(tmp_path, pg)
    report = tmp_path / "second.json"
    result = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--concurrency", "1", "--per-server", "1", "--report", str(report))  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    data = json.loads(report.read_text())
    by_id = {s["id"]: s["status"] for s in data["schools"]}
    assert by_id == {"s0": "modified", "s1": "skipped", "s2": "skipped"}
    assert "no new school was started" in data["halted"]
    assert versions(pg, schools["s2"]) == [1]
