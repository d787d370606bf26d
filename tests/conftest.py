"""Shared fixtures: throwaway PostgreSQL servers (orchestrator.devserver) and per-test databases.

Servers are session-scoped, so under pytest-xdist every worker starts its own (in its own temporary
directory, on its own free port) and stops them at the end. `pg2` is only started by tests that ask for it.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# `.venv/bin/pytest` does not put the repository root on sys.path; the package may not be installed.
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from pgfixtures import PG_PASSWORD, create_database, drop_database, run_sync, unique_db_name  # noqa: E402

from orchestrator.devserver import DevServer, DevServerError, create_server, free_port  # noqa: E402


def _server(name: str) -> Iterator[DevServer]:
    # Not under pytest's basetemp: pytest re-chmods /tmp/pytest-of-<user> to 0700 when a session starts, which
    # would lock the postgres OS user (root runs the servers as postgres) out of a running server's files.
    base = Path(tempfile.mkdtemp(prefix=f"orchestrator-test-{name}-"))
    datadir = base / "data"
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
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def pg() -> Iterator[DevServer]:
    """The main throwaway server (password PG_PASSWORD)."""
    yield from _server("pg1")


@pytest.fixture(scope="session")
def pg2() -> Iterator[DevServer]:
    """A second, independent server (same password), for fleets spread over several hosts."""
    yield from _server("pg2")


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
    return f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/school_unreachable"
