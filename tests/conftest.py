"""Shared fixtures: throwaway PostgreSQL servers (orchestrator.devserver) and per-test databases.

Servers are session-scoped, so under pytest-xdist every worker starts its own (in its own temporary
directory, on its own free port) and stops them at the end. `pg2` is only started by tests that ask for it.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# `.venv/bin/pytest` does not put the repository root on sys.path; the package may not be installed.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pgfixtures import PG_PASSWORD, create_database, drop_database, run_sync, unique_db_name  # noqa: E402

from orchestrator.devserver import DevServer, DevServerError, create_server, free_port  # noqa: E402


def _server(tmp_path_factory: pytest.TempPathFactory, name: str) -> Iterator[DevServer]:
    datadir = tmp_path_factory.mktemp(name) / "data"
    server = create_server(datadir, password=PG_PASSWORD)
    try:
        server.start()
    except DevServerError:
        # Another xdist worker may grab our free port before the server binds it: try once more.
        server = create_server(datadir, port=free_port(), password=PG_PASSWORD)
        server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """The main throwaway server (password PG_PASSWORD)."""
    yield from _server(tmp_path_factory, "pg1")


@pytest.fixture(scope="session")
def pg2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A second, independent server (same password), for fleets spread over several hosts."""
    yield from _server(tmp_path_factory, "pg2")


@pytest.fixture
def db_name(request: pytest.FixtureRequest) -> str:
    """A database name unique to this test: `t_<test name>_<n>`, lowercase, at most 63 characters."""
    return unique_db_name(request.node.name)


@pytest.fixture
def fresh_url(pg: DevServer, db_name: str) -> Iterator[str]:
    """URL on `pg` of a database that does not exist yet (dropped afterwards if the test created it)."""
    yield pg.url(db_name)
    run_sync(drop_database(pg.url(), db_name))


@pytest.fixture
def db_url(pg: DevServer, db_name: str) -> Iterator[str]:
    """URL on `pg` of a freshly created, empty database (dropped afterwards)."""
    url = run_sync(create_database(pg.url(), db_name))
    yield url
    # Dropped so a long session does not pile up thousands of databases on disk.
    run_sync(drop_database(pg.url(), db_name))


@pytest.fixture
def unreachable_url() -> str:
    """A URL on 127.0.0.1 where nothing listens (connection refused)."""
    return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/postgres"
