"""Adversary: writes over a registry without a terminal and without --yes.

`migrate --tenant X` with pending files is refused without a terminal (exit 2); `provision --tenant X` on the same
existing school applies the same files without being asked. `--shard 0/1` selects every school of the registry
but counts as a narrowing selection, so the whole-registry confirmation (bootstrap, provision, template) is skipped.
"""

from __future__ import annotations

from pathlib import Path

from fleetkit import cli, fleet_registry, make_migrations, make_school
from pgfixtures import fetch_sync

from orchestrator.devserver import DevServer

FILES = {"1_one.sql": "CREATE TABLE one (id int);\n", "2_two.sql": "CREATE TABLE two (id int);\n"}


def versions(pg: DevServer, db: str) -> list[int]:
    return [r["version"] for r in fetch_sync(pg.url(db), "SELECT version FROM _sqlx_migrations ORDER BY 1")]


def test_adversary_provision_of_an_existing_school_applies_files_only_once_confirmed(
    tmp_path: Path, pg: DevServer
) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    schools = [make_school(pg, f"adv_confirm_{i}") for i in range(2)]
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, schools)), "--migrations", str(migrations))
    assert cli("migrate", "--yes", "--no-progress", "--target", "1", *args).returncode == 0

    migrate = cli("migrate", "--no-progress", "--tenant", "s0", *args)
    assert migrate.returncode == 2 and versions(pg, schools[0]) == [1], "migrate asks first"
    provision = cli("provision", "--no-progress", "--tenant", "s0", *args)

    assert provision.returncode == 2, provision.stdout + provision.stderr
    assert versions(pg, schools[0]) == [1]


def test_adversary_a_shard_of_one_is_the_whole_registry(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations", FILES)
    schools = [make_school(pg, f"adv_shard_{i}") for i in range(2)]
    args = ("--registry", str(fleet_registry(tmp_path / "t.yaml", pg, schools)), "--migrations", str(migrations))

    result = cli("bootstrap", "--no-progress", "--shard", "0/1", *args)

    assert result.returncode == 2, result.stdout + result.stderr
    assert not fetch_sync(pg.url(schools[0]), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'")
