"""The server's own refusals say what they are: a database marked as a template is never worked on, and a missing
privilege is `denied`, naming the grant, not a generic failure."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from fleetkit import make_school
from pgfixtures import PG_PASSWORD, execute_sync, fetchval_sync, quote_ident, unique_db_name, with_database
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.devserver import DevServer

PROJECT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # the CLI pointed structlog at the runner's stream, closed by now


def invoke(*args: str, env: dict[str, str | None] | None = None, secrets: tuple[str, ...] = ()) -> Result:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": None, "PGPW": PG_PASSWORD, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    for secret in (PG_PASSWORD, *secrets):
        assert secret not in result.output, "a secret was printed"
    return result


def has_history(url: str) -> bool:
    return fetchval_sync(url, "SELECT to_regclass('_sqlx_migrations')") is not None


@pytest.fixture
def school(pg: DevServer) -> Iterator[str]:
    """An empty school database on `pg`; its name."""
    name = make_school(pg, "school")
    yield name
    execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


@pytest.mark.parametrize("command", ["migrate", "provision", "bootstrap", "status", "plan"])
def test_a_database_marked_as_template_is_refused_by_the_engine(pg: DevServer, school: str, command: str) -> None:
    url = pg.url(school)
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(school)} IS_TEMPLATE true")
    try:
        result = invoke(command, "-D", url, "--migrations", str(PROJECT_MIGRATIONS), "--json")

        assert result.exit_code == 1
        [outcome] = json.loads(result.stdout)["schools"]
        assert outcome["status"] == "failed"
        assert outcome["error"]["code"] == "template_database"
        assert "is a template database" in outcome["error"]["message"]
        assert not has_history(url)
        assert fetchval_sync(url, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'") == 0
    finally:
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(school)} IS_TEMPLATE false")


# --- permission errors -------------------------------------------------------------------------------------------


@pytest.fixture
def stranger(pg: DevServer, school: str) -> Iterator[str]:
    """The URL of `school` for a login role that does not own it (PostgreSQL 15+: no CREATE on schema public)."""
    role, password = unique_db_name("stranger"), "Str4ngerPw77"
    execute_sync(pg.url(), f"CREATE ROLE {quote_ident(role)} LOGIN PASSWORD '{password}'")
    yield f"postgresql://{role}:{password}@127.0.0.1:{pg.port}/{school}"
    execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(school)} WITH (FORCE)")
    execute_sync(pg.url(), f"DROP ROLE {quote_ident(role)}")


def test_a_role_without_create_on_the_schema_is_denied_naming_the_grant(pg: DevServer, stranger: str) -> None:
    result = invoke("migrate", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--json", secrets=("Str4nger",))

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["schools"]
    assert outcome["status"] == "denied"
    assert outcome["attempts"] == 1, "a permission error is not retried"
    error = outcome["error"]
    assert error["code"] == "permission_denied"
    assert "permission denied for schema public [SQLSTATE 42501]" in error["message"]
    assert "needs USAGE and CREATE on schema public" in error["hint"]
    assert "GRANT USAGE, CREATE ON SCHEMA public TO" in error["hint"]
    assert "see the server log" not in error["hint"]
    assert not has_history(with_database(pg.url(), stranger.rsplit("/", 1)[1]))


def test_status_for_a_role_that_cannot_read_the_history_says_denied(pg: DevServer, stranger: str) -> None:
    owner_url = with_database(pg.url(), stranger.rsplit("/", 1)[1])
    assert invoke("provision", "-D", owner_url, "--migrations", str(PROJECT_MIGRATIONS)).exit_code == 0

    result = invoke("status", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--json", secrets=("Str4nger",))

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["schools"]
    assert outcome["status"] == "denied"
    assert "permission denied for table _sqlx_migrations" in outcome["error"]["message"]
    assert "needs SELECT" in outcome["error"]["hint"] and "GRANT SELECT" in outcome["error"]["hint"]


def test_a_role_without_connect_is_denied_not_unreachable(pg: DevServer, stranger: str) -> None:
    school = stranger.rsplit("/", 1)[1]
    execute_sync(pg.url(), f"REVOKE CONNECT ON DATABASE {quote_ident(school)} FROM PUBLIC")

    result = invoke("status", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--json", secrets=("Str4nger",))

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["schools"]
    assert outcome["status"] == "denied"
    assert "GRANT CONNECT" in outcome["error"]["hint"]
