"""Through PgBouncer (real, started here): read-only commands work in any pool mode; commands that take SQLx's
lock are refused in transaction mode (the lock would stay on a pooled server connection) and work in session mode
or with the school's `direct_url`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetkit import cli, make_migrations, make_school, write_registry
from pgbouncer import PgBouncer
from pgfixtures import PG_PASSWORD, fetch_sync

from orchestrator.devserver import DevServer


@pytest.fixture
def transaction_pooler(pg: DevServer) -> Iterator[PgBouncer]:
    with PgBouncer(pg, PG_PASSWORD, "transaction") as bouncer:
        yield bouncer


@pytest.fixture
def session_pooler(pg: DevServer) -> Iterator[PgBouncer]:
    with PgBouncer(pg, PG_PASSWORD, "session") as bouncer:
        yield bouncer


def has_history(pg: DevServer, db: str) -> bool:
    return bool(fetch_sync(pg.url(db), "SELECT 1 FROM pg_tables WHERE tablename = '_sqlx_migrations'"))


def test_read_only_commands_work_through_transaction_pooling(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_ro")
    url = transaction_pooler.url(PG_PASSWORD, db)
    for command in ("status", "plan"):
        result = cli(command, "-D", url, "--migrations", str(migrations), "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        status = json.loads(result.stdout)["schools"][0]["status"]
        assert status == ("pending" if command == "status" else "planned")
    audit = cli("audit", "-D", url, "--migrations", str(migrations), "--no-schema", "--json")
    assert json.loads(audit.stdout)["schools"][0]["status"] == "drift", audit.stderr  # 3 pending: drift, read fine
    missing = cli("status", "-D", transaction_pooler.url(PG_PASSWORD, "no_such_school"), "--json")
    assert json.loads(missing.stdout)["schools"][0]["status"] == "no_database"
    assert PG_PASSWORD not in "".join(r.stdout + r.stderr for r in (result, audit, missing))


def test_migrate_through_transaction_pooling_is_refused_naming_the_pooler_and_writes_nothing(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_tx")
    result = cli("migrate", "-D", transaction_pooler.url(PG_PASSWORD, db), "--migrations", str(migrations), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    school = json.loads(result.stdout)["schools"][0]
    assert school["status"] == "pooled"
    assert "connection pooler in transaction mode" in school["error"]["message"]
    assert "direct_url" in school["error"]["hint"]
    assert not has_history(pg, db), "nothing was written"


def test_migrate_through_session_pooling_works(tmp_path: Path, pg: DevServer, session_pooler: PgBouncer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_session")
    result = cli("migrate", "-D", session_pooler.url(PG_PASSWORD, db), "--migrations", str(migrations), "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["schools"][0]["applied"] == [1, 2, 3]


def test_direct_url_carries_the_writes_while_url_stays_the_pooler(
    tmp_path: Path, pg: DevServer, transaction_pooler: PgBouncer
) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    db = make_school(pg, "pooled_direct")
    registry = tmp_path / "t.yaml"
    write_registry(registry, [("school", transaction_pooler.url("${PGPW}", db), [])])
    pooled_only = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert pooled_only.returncode == 1 and "pooled" in pooled_only.stdout
    registry.write_text(
        registry.read_text() + f"    direct_url: postgresql://postgres:${{PGPW}}@127.0.0.1:{pg.port}/{db}\n"
    )
    migrated = cli("migrate", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--no-progress")
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    status = cli("status", "--registry", str(registry), "--migrations", str(migrations), "--no-progress",
                 "--report", str(tmp_path / "s.json"))  # fmt: skip
    assert status.returncode == 0, status.stdout + status.stderr
    [school] = json.loads((tmp_path / "s.json").read_text())["schools"]
    assert school["server"] == f"127.0.0.1:{transaction_pooler.port}", "status reads through the workers' url"
    assert school["status"] == "up_to_date"
