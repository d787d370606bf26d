"""Bad registries and URLs, end to end: refused with exit code 2 and `file:line` before any connection (nothing is
touched), never silently converted; URLs cannot be retargeted and never show a secret; the server's own refusals
(a template database, a missing privilege) say what they are."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog
from fleetkit import by_id, fleet_registry, make_school, registry_url, run_fleet_job
from pgfixtures import (
    PG_PASSWORD,
    execute_sync,
    fetchval_sync,
    quote_ident,
    run_sync,
    unique_db_name,
    with_database,
)
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.devserver import DevServer
from orchestrator.job import Command, Request, prepare
from orchestrator.junit import JunitCase, render_junit
from orchestrator.operations import SURVEY_MIN_SCHOOLS, Survey, survey_servers
from orchestrator.registry import shard_of

PROJECT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
UUID_OSSP = ("--extension", "uuid-ossp")  # the project's migrations call uuid_generate_v4(); none is the default


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


def write_registry(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


def has_history(url: str) -> bool:
    return fetchval_sync(url, "SELECT to_regclass('_sqlx_migrations')") is not None


@pytest.fixture
def school(pg: DevServer) -> Iterator[str]:
    """An empty school database on `pg`; its name."""
    name = make_school(pg, "school")
    yield name
    execute_sync(pg.url(), f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


# --- values read as written; bad characters ------------------------------------------------------------------------


def test_a_duration_yaml_1_1_would_read_as_base_60_exits_2_and_touches_nothing(
    pg: DevServer, school: str, tmp_path: Path
) -> None:
    registry = write_registry(
        tmp_path, f"tenants:\n  - id: a\n    url: {registry_url(pg, school)}\n    lock_timeout: 12:30\n"
    )

    result = invoke("migrate", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--yes")

    assert result.exit_code == 2
    assert f"{registry}:4: tenant a.lock_timeout: '12:30' is not a duration" in result.stderr
    assert not has_history(pg.url(school))


def test_an_id_yaml_1_1_would_read_as_octal_is_selected_as_written(pg: DevServer, school: str, tmp_path: Path) -> None:
    registry = write_registry(tmp_path, f"tenants:\n  - id: 0123\n    url: {registry_url(pg, school)}\n")

    result = invoke(
        "status", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--tenant", "0123", "--json"
    )

    assert result.exit_code == 0, result.output
    assert [s["id"] for s in json.loads(result.stdout)["schools"]] == ["0123"]


def test_a_control_character_in_the_registry_exits_2_with_its_line(pg: DevServer, school: str, tmp_path: Path) -> None:
    registry = tmp_path / "tenants.yaml"
    registry.write_bytes(f"tenants:\n  - id: a\n    url: {registry_url(pg, school)}\n  - id: b\x00\n".encode())

    result = invoke("migrate", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--yes")

    assert result.exit_code == 2
    assert f"{registry}:4: character U+0000 is not allowed" in result.stderr
    assert "Traceback" not in result.output
    assert not has_history(pg.url(school))


def test_a_database_name_is_shown_as_it_is_never_as_terminal_markup(pg: DevServer) -> None:
    url = pg.url("[bold]school")

    result = invoke("status", "-D", url, "--migrations", str(PROJECT_MIGRATIONS))

    assert result.exit_code == 1  # that database does not exist
    assert "[bold]school on 127.0.0.1" in result.stdout


def test_junit_output_stays_parseable_whatever_characters_a_message_holds() -> None:
    case = JunitCase(
        name="school\x01", classname="migrate.db1", time_s=0.5, failure="bad \x00 byte", details="line\x1b[31m"
    )

    xml = render_junit("orchestrator", [case], duration_s=1.0, timestamp=datetime.now(UTC))

    testcase = ET.fromstring(xml.split("\n", 1)[1]).find("testcase")
    assert testcase is not None
    assert testcase.get("name") == "school\\x01"
    failure = testcase.find("failure")
    assert failure is not None and failure.get("message") == "bad \\x00 byte" and failure.text == "line\\x1b[31m"


# --- databases that are never a school's ---------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgres", "template1"])
def test_d_with_the_maintenance_or_a_template_database_exits_2_and_touches_nothing(
    pg: DevServer, database: str
) -> None:
    result = invoke("migrate", "-D", pg.url(database), "--migrations", str(PROJECT_MIGRATIONS))

    assert result.exit_code == 2
    assert f"database '{database}' is the server's maintenance or template database" in result.stderr
    assert not has_history(pg.url(database))


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


@pytest.mark.parametrize("command", [Command.STATUS, Command.PLAN])
def test_a_server_with_many_schools_is_asked_once_which_are_templates_and_a_template_is_still_refused(
    tmp_path: Path, pg: DevServer, command: Command, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPW", PG_PASSWORD)
    schools = [make_school(pg, "many") for _ in range(SURVEY_MIN_SCHOOLS)]
    registry = fleet_registry(tmp_path / "tenants.yaml", pg, schools)
    execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(schools[3])} IS_TEMPLATE true")
    try:
        job = prepare(Request(command, registry=registry, migrations=PROJECT_MIGRATIONS))
        # One query on the server's maintenance database: every school but the template skips its own lookup.
        assert run_sync(survey_servers(job)).not_templates == {f"s{i}" for i in range(len(schools)) if i != 3}

        results = by_id(run_fleet_job(command, registry, PROJECT_MIGRATIONS))
        refused = results.pop("s3")
        assert refused.error is not None and refused.error.code == "template_database"
        assert all(r.ok for r in results.values()), {i: r.error for i, r in results.items()}
    finally:
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(schools[3])} IS_TEMPLATE false")


def test_a_server_with_few_schools_is_not_asked_first(
    tmp_path: Path, pg: DevServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPW", PG_PASSWORD)
    schools = [make_school(pg, "few") for _ in range(SURVEY_MIN_SCHOOLS - 1)]
    registry = fleet_registry(tmp_path / "tenants.yaml", pg, schools)
    job = prepare(Request(Command.STATUS, registry=registry, migrations=PROJECT_MIGRATIONS))
    # A maintenance session would cost more than the schools' own lookups save.
    assert run_sync(survey_servers(job)) == Survey()


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
    assert invoke("provision", "-D", owner_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP).exit_code == 0

    result = invoke("status", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--json", secrets=("Str4nger",))

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["schools"]
    assert outcome["status"] == "denied"
    assert "permission denied for table _sqlx_migrations" in outcome["error"]["message"]
    assert "needs SELECT" in outcome["error"]["hint"] and "GRANT SELECT" in outcome["error"]["hint"]


def test_an_audit_of_a_school_it_may_not_read_is_not_clean(pg: DevServer, stranger: str) -> None:
    owner_url = with_database(pg.url(), stranger.rsplit("/", 1)[1])
    assert invoke("provision", "-D", owner_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP).exit_code == 0

    result = invoke(
        "audit", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--no-schema", "--json", secrets=("Str4nger",)
    )

    assert result.exit_code == 3, "not audited: neither clean (0) nor drift (1)"
    [school] = json.loads(result.stdout)["schools"]
    assert (school["status"], school["drift"], school["audited"]) == ("denied", False, False)


def test_a_role_without_connect_is_denied_not_unreachable(pg: DevServer, stranger: str) -> None:
    school = stranger.rsplit("/", 1)[1]
    execute_sync(pg.url(), f"REVOKE CONNECT ON DATABASE {quote_ident(school)} FROM PUBLIC")

    result = invoke("status", "-D", stranger, "--migrations", str(PROJECT_MIGRATIONS), "--json", secrets=("Str4nger",))

    assert result.exit_code == 1
    [outcome] = json.loads(result.stdout)["schools"]
    assert outcome["status"] == "denied"
    assert "GRANT CONNECT" in outcome["error"]["hint"]


# --- an empty selection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["migrate", "bootstrap", "status", "audit"])
def test_a_selection_of_no_school_exits_2_and_touches_nothing(
    pg: DevServer, school: str, tmp_path: Path, command: str
) -> None:
    registry = write_registry(tmp_path, f"tenants:\n  - id: a\n    url: {registry_url(pg, school)}\n")
    other_shard = 1 - shard_of("a", 2)

    result = invoke(
        command, "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--shard", f"{other_shard}/2"
    )

    assert result.exit_code == 2
    assert f"no tenant selected: --shard {other_shard}/2 match none of the 1 tenants in {registry}" in result.stderr
    assert "clean" not in result.stdout
    assert not has_history(pg.url(school))


def test_an_empty_tenant_list_exits_2(tmp_path: Path) -> None:
    registry = write_registry(tmp_path, "tenants: []\n")

    result = invoke("audit", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS))

    assert result.exit_code == 2
    assert f"{registry}:1: the registry lists no tenants" in result.stderr


# --- URLs ----------------------------------------------------------------------------------------------------------


def test_a_password_variable_cannot_retarget_a_school_to_another_database(pg: DevServer, tmp_path: Path) -> None:
    target, other = make_school(pg, "target"), make_school(pg, "other")
    registry = write_registry(
        tmp_path, f"tenants:\n  - id: a\n    url: postgresql://postgres:${{PW}}@127.0.0.1:{pg.port}/{target}\n"
    )
    hostile = f"{PG_PASSWORD}@127.0.0.1:{pg.port}/{other}#"

    result = invoke(
        "migrate", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--yes", "--json",
        "--retries", "0", env={"PW": hostile},
    )  # fmt: skip

    assert result.exit_code == 1, "the whole value is the password, and it is the wrong one"
    [outcome] = json.loads(result.stdout)["schools"]
    assert (outcome["database"], outcome["status"]) == (target, "denied")
    assert not has_history(pg.url(other)) and not has_history(pg.url(target))


def test_a_password_in_the_query_string_connects_and_is_never_printed(pg: DevServer, school: str) -> None:
    url = f"postgresql://postgres@127.0.0.1:{pg.port}/{school}?password={PG_PASSWORD}&application_name=x"

    result = invoke("--log-level", "debug", "provision", "-D", url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP)

    assert result.exit_code == 0, result.output
    assert has_history(pg.url(school))


@pytest.mark.parametrize(
    ("second", "line", "problem"),
    [
        ("postgresql://postgres:${{PGPW}}@127.0.0.1:{port}/{second}?application_name=x&oops", 5, "malformed query"),
        (
            "postgresql://postgres:${{PGPW}}@localhost:{port}/{first}",
            4,
            "tenants 'a' (line 2) and 'b' point at the same",
        ),
    ],
    ids=["query-string-asyncpg-refuses", "second-spelling-of-one-database"],
)
def test_a_url_asyncpg_would_read_differently_exits_2_before_any_school_is_touched(
    pg: DevServer, tmp_path: Path, second: str, line: int, problem: str
) -> None:
    schools = {"first": make_school(pg, "first"), "second": make_school(pg, "second")}
    registry = write_registry(
        tmp_path,
        f"tenants:\n  - id: a\n    url: {registry_url(pg, schools['first'])}\n"
        f"  - id: b\n    url: {second.format(port=pg.port, **schools)}\n",
    )

    result = invoke("migrate", "--registry", str(registry), "--migrations", str(PROJECT_MIGRATIONS), "--yes")

    assert result.exit_code == 2
    assert f"{registry}:{line}: " in result.stderr and problem in result.stderr
    assert "Traceback" not in result.output
    assert not any(has_history(pg.url(name)) for name in schools.values())
