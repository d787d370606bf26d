"""The throwaway-server harness itself: two servers at once, databases reachable, passwords enforced."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest
from pgfixtures import (
    PG_PASSWORD,
    database_exists,
    fetchval_sync,
    run_sync,
    unique_db_name,
    with_database,
)

from orchestrator.devserver import DevServer, DevServerError, create_server, load_server, server_major


def test_two_servers_run_at_once(pg: DevServer, pg2: DevServer) -> None:
    assert pg.port != pg2.port
    assert pg.is_running() and pg2.is_running()
    assert fetchval_sync(pg.url(), "SHOW port") == str(pg.port)
    assert fetchval_sync(pg2.url(), "SHOW port") == str(pg2.port)
    assert fetchval_sync(pg.url(), "SHOW fsync") == "off"
    assert fetchval_sync(pg.url(), "SHOW server_encoding") == "UTF8"


def test_created_database_is_reachable_and_empty(db_url: str, pg: DevServer, db_name: str) -> None:
    assert fetchval_sync(db_url, "SELECT current_database()") == db_name
    assert fetchval_sync(db_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    assert run_sync(database_exists(pg.url(), db_name))


def test_fresh_url_points_at_a_missing_database(fresh_url: str, pg: DevServer, db_name: str) -> None:
    assert fresh_url.endswith("/" + db_name)
    assert not run_sync(database_exists(pg.url(), db_name))
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        fetchval_sync(fresh_url, "SELECT 1")


def test_wrong_password_is_refused_over_tcp(pg: DevServer) -> None:
    wrong = DevServer(pg.datadir, pg.port, "not-the-password")
    with pytest.raises(asyncpg.InvalidPasswordError):
        fetchval_sync(wrong.url(), "SELECT 1")
    assert fetchval_sync(pg.url(), "SELECT current_user") == "postgres"


def test_unreachable_url_refuses_connections(unreachable_url: str) -> None:
    with pytest.raises(OSError):
        fetchval_sync(unreachable_url, "SELECT 1")


def test_db_names_are_unique_short_and_lowercase() -> None:
    names = {unique_db_name("test_Something[param-" + "x" * 100 + "]") for _ in range(3)}
    assert len(names) == 3
    assert all(len(n) <= 63 and n == n.lower() and n.replace("_", "").isalnum() for n in names)
    assert with_database("postgresql://u:p@h:1/a", "b") == "postgresql://u:p@h:1/b"


@pytest.fixture
def own_dir() -> Iterator[Path]:
    """A directory for a cluster, not under pytest's basetemp: another pytest session starting on this machine
    re-chmods /tmp/pytest-of-<user> to 0700, which locks the postgres OS user (root runs servers as postgres) out."""
    path = Path(tempfile.mkdtemp(prefix="orchestrator-test-devserver-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_existing_datadir_keeps_its_port_and_restarts(own_dir: Path) -> None:
    datadir = own_dir / "data"
    with create_server(datadir, password=PG_PASSWORD) as server:
        assert server.is_running()
        server.start()  # idempotent
    assert not server.is_running()
    server.stop()  # idempotent
    again = create_server(datadir, password=PG_PASSWORD)
    assert again.port == server.port == load_server(datadir).port
    with again:
        assert fetchval_sync(with_database(again.url(), "template1"), "SELECT 1") == 1
    with pytest.raises(DevServerError, match="another password"):
        create_server(datadir, password="something-else")


def test_a_postgresql_18_server_comes_from_the_wheel_with_the_same_setup(pg18: DevServer) -> None:
    assert pg18.major == 18 and server_major(pg18.bindir) == 18
    assert fetchval_sync(pg18.url(), "SELECT current_setting('server_version_num')::int / 10000") == 18
    assert fetchval_sync(pg18.url(), "SHOW fsync") == "off"
    with pytest.raises(asyncpg.InvalidPasswordError):
        fetchval_sync(DevServer(pg18.datadir, pg18.port, "not-the-password").url(), "SELECT 1")


def test_an_existing_cluster_keeps_its_version(own_dir: Path) -> None:
    datadir = own_dir / "data"
    create_server(datadir, password=PG_PASSWORD, major=18)  # initdb only
    assert load_server(datadir).major == 18
    with pytest.raises(DevServerError, match="holds a PostgreSQL 18 cluster, not 7"):
        create_server(datadir, password=PG_PASSWORD, major=7)
    with pytest.raises(DevServerError, match="no PostgreSQL 7 server binaries found"):
        create_server(own_dir / "other", password=PG_PASSWORD, major=7)
