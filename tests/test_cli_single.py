"""The `orchestrator` command on one database (-D URL, or -D - for $DATABASE_URL): output, exit codes, nothing
touched on bad input, and no password in anything it prints.

typer's CliRunner (typer >= 0.20 vendors click) always keeps stdout and stderr apart: `result.stdout` and
`result.stderr` are separate, `result.output` is both interleaved.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
from pgfixtures import PG_PASSWORD, database_exists, fetchval_sync, run_sync
from typer.testing import CliRunner, Result

from orchestrator.cli import app
from orchestrator.devserver import DevServer

PROJECT_MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"
V1, V2, V3 = 20250101000000, 20250115000000, 20250201000000
UUID_OSSP = ("--extension", "uuid-ossp")  # the project's migrations call uuid_generate_v4(); none is the default


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    # The CLI points structlog at the runner's captured stderr, which is closed once the invocation ends; put the
    # defaults back so later tests in this worker do not log into a closed stream.
    yield
    structlog.reset_defaults()


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    runner = CliRunner()
    base_env: dict[str, str | None] = {"DATABASE_URL": None}
    result = runner.invoke(app, list(args), env={**base_env, **(env or {})})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    # Whatever happened, the password is never printed.
    assert PG_PASSWORD not in result.stdout
    assert PG_PASSWORD not in result.stderr
    return result


def report(result: Result) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def exists(pg: DevServer, name: str) -> bool:
    return run_sync(database_exists(pg.url(), name))


# --- success -----------------------------------------------------------------------------------------------------


def test_provision_json_creates_the_database_and_names_the_three_applied_versions(
    pg: DevServer, fresh_url: str, db_name: str
) -> None:
    result = invoke("provision", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP, "--json")

    assert result.exit_code == 0, result.output
    data = report(result)
    assert data["command"] == "provision" and data["ok"] is True
    [school] = data["schools"]
    assert school["database"] == db_name
    assert school["status"] == "applied"
    assert school["applied"] == [V1, V2, V3]
    assert school["created_database"] is True
    assert school["server"] == f"127.0.0.1:{pg.port}"
    assert exists(pg, db_name)
    assert fetchval_sync(fresh_url, "SELECT count(*) FROM _sqlx_migrations") == 3
    # Human output went to stderr, so stdout is pure JSON.
    assert db_name in result.stderr

    again = invoke("provision", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP, "--json")
    assert again.exit_code == 0
    assert report(again)["schools"][0]["status"] == "up_to_date"
    assert report(again)["schools"][0]["applied"] == []


def test_human_output_says_what_was_applied(fresh_url: str) -> None:
    result = invoke("provision", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP)

    assert result.exit_code == 0, result.output
    assert "applied" in result.stdout
    for version, description in ((V1, "initial schema"), (V2, "add attendance"), (V3, "add grades")):
        assert f"applied {version} {description}" in result.stdout


def test_d_dash_takes_the_database_url_from_the_environment(
    pg: DevServer, fresh_url: str, db_name: str, tmp_path: Path
) -> None:
    env: dict[str, str | None] = {"DATABASE_URL": fresh_url}
    result = invoke("provision", "-D", "-", "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP, "--json", env=env)

    assert result.exit_code == 0, result.output
    assert report(result)["schools"][0]["database"] == db_name
    assert report(result)["schools"][0]["applied"] == [V1, V2, V3]
    assert exists(pg, db_name)

    status = invoke("status", "-D", "-", "--migrations", str(PROJECT_MIGRATIONS), "--json", env=env)
    assert status.exit_code == 0
    assert report(status)["schools"][0]["status"] == "up_to_date"


def test_an_exported_database_url_is_ignored_without_d_dash_and_the_warning_names_it(
    pg: DevServer, fresh_url: str, db_name: str, tmp_path: Path
) -> None:
    # sqlx's habit: DATABASE_URL exported. Without -D - the registry is what runs (here one that names no server
    # of ours), and the run says once that the variable was ignored, never showing its value.
    (tmp_path / "tenants.yaml").write_text("tenants:\n  - id: a\n    url: postgresql://u@127.0.0.1:1/a\n")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path)
        result = invoke("status", "--migrations", str(PROJECT_MIGRATIONS), "--json", env={"DATABASE_URL": fresh_url})

    assert result.exit_code == 1, result.output  # the registry's school, unreachable
    assert [s["id"] for s in report(result)["schools"]] == ["a"]
    warning = "DATABASE_URL is set but ignored: the registry tenants.yaml is used; pass -D - to use it"
    assert result.stderr.count(warning) == 1, result.stderr
    assert db_name not in result.stderr
    assert not exists(pg, db_name), "the exported database was not touched"
    explicit = invoke("status", "--registry", str(tmp_path / "tenants.yaml"), "--migrations",
                      str(PROJECT_MIGRATIONS), env={"DATABASE_URL": fresh_url})  # fmt: skip
    assert "DATABASE_URL" not in explicit.stderr, "an explicit --registry is not a surprise: no warning"


def test_d_dash_without_database_url_exits_2_before_any_connection() -> None:
    result = invoke("migrate", "-D", "-", "--migrations", str(PROJECT_MIGRATIONS))

    assert result.exit_code == 2, result.output
    assert "-D - takes the database's URL from $DATABASE_URL, which is not set" in result.stderr


def test_migrate_target_applies_only_up_to_that_version(fresh_url: str) -> None:
    assert invoke("bootstrap", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP).exit_code == 0

    result = invoke("migrate", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), "--target", str(V2), "--json")

    assert result.exit_code == 0, result.output
    assert report(result)["schools"][0]["applied"] == [V1, V2]
    assert fetchval_sync(fresh_url, "SELECT max(version) FROM _sqlx_migrations") == V2


# --- exit code 1: a database did not end ok --------------------------------------------------------------------


def test_migrate_on_a_missing_database_exits_1_and_reports_database_missing(
    pg: DevServer, fresh_url: str, db_name: str
) -> None:
    result = invoke("migrate", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), "--json")

    assert result.exit_code == 1
    school = report(result)["schools"][0]
    assert school["status"] == "no_database"
    assert school["error"]["code"] == "database_missing"
    assert school["error"]["hint"]
    assert "error [database_missing]" in result.stderr  # the rendered line, not a log field
    assert not exists(pg, db_name)


def test_failing_migration_exits_1_with_the_file_line_and_sqlstate(db_url: str, tmp_path: Path) -> None:
    directory = tmp_path / "m"
    directory.mkdir()
    (directory / "1_ok.sql").write_text("CREATE TABLE a (id int);\n")
    (directory / "2_bad.sql").write_text("CREATE TABLE b (id int);\nSELECT * FROM nope;\n")

    result = invoke("migrate", "-D", db_url, "--migrations", str(directory), "--retries", "0")

    assert result.exit_code == 1
    assert "2_bad.sql:2" in result.stdout and "42P01" in result.stdout
    assert fetchval_sync(db_url, "SELECT array_agg(version) FROM _sqlx_migrations") == [1]


def test_unreachable_server_exits_1_without_printing_the_password(unreachable_url: str) -> None:
    result = invoke(
        "migrate", "-D", unreachable_url, "--migrations", str(PROJECT_MIGRATIONS), "--retries", "0",
        "--connect-timeout", "2s", "--json",
    )  # fmt: skip

    assert result.exit_code == 1
    assert report(result)["schools"][0]["status"] == "unreachable"


def test_wrong_password_exits_1_without_printing_either_password(pg: DevServer) -> None:
    wrong = "An0therSecretPw"
    url = DevServer(pg.datadir, pg.port, wrong).url("school_wrong_password")

    result = invoke("status", "-D", url, "--migrations", str(PROJECT_MIGRATIONS), "--json")

    assert result.exit_code == 1
    assert report(result)["schools"][0]["status"] == "denied"
    assert wrong not in result.stdout and wrong not in result.stderr


# --- exit code 2: invalid input, nothing touched ---------------------------------------------------------------


@pytest.mark.parametrize(
    "make_url",
    [
        lambda port, db: f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:99999/{db}",  # port out of range
        lambda port, db: f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/",  # no database
        lambda port, db: f"mysql://postgres:{PG_PASSWORD}@127.0.0.1:{port}/{db}",  # wrong scheme
    ],
    ids=["bad-port", "no-database", "wrong-scheme"],
)
def test_malformed_url_exits_2_with_the_password_redacted(pg: DevServer, db_name: str, make_url: Any) -> None:
    url = make_url(pg.port, db_name)

    result = invoke("provision", "-D", url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP)

    assert result.exit_code == 2
    assert "error [bad_usage]" in result.stderr
    assert "***" in result.stderr
    assert not exists(pg, db_name)


def test_missing_migrations_directory_exits_2_and_creates_no_database(
    pg: DevServer, fresh_url: str, db_name: str, tmp_path: Path
) -> None:
    result = invoke("provision", "-D", fresh_url, "--migrations", str(tmp_path / "nowhere"), "--json")

    assert result.exit_code == 2
    assert "does not exist" in result.stderr and "nowhere" in result.stderr
    assert result.stdout == ""
    assert not exists(pg, db_name)


@pytest.mark.parametrize(
    "bad_file",
    [
        ("v9_not_a_version.sql", b"SELECT 1;\n"),
        ("9_latin1.sql", b"SELECT 'caf\xe9';\n"),
        ("9_orphan.down.sql", b"SELECT 1;\n"),
        ("9_two.sql", b"-- no-transaction\nCREATE INDEX CONCURRENTLY i ON t (a);\nSELECT 2;\n"),
    ],
    ids=["non-integer-version", "not-utf8", "down-without-up", "multi-statement-no-transaction"],
)
def test_bad_migration_file_exits_2_naming_the_file_and_creates_no_database(
    pg: DevServer, fresh_url: str, db_name: str, tmp_path: Path, bad_file: tuple[str, bytes]
) -> None:
    directory = tmp_path / "m"
    shutil.copytree(PROJECT_MIGRATIONS, directory)
    name, content = bad_file
    (directory / name).write_bytes(content)

    result = invoke("provision", "-D", fresh_url, "--migrations", str(directory))

    assert result.exit_code == 2
    assert "error [bad_migration_source]" in result.stderr
    assert name in result.stderr
    assert not exists(pg, db_name)


def test_unknown_target_version_exits_2_and_touches_nothing(db_url: str) -> None:
    result = invoke("migrate", "-D", db_url, "--migrations", str(PROJECT_MIGRATIONS), "--target", "20240101000000")

    assert result.exit_code == 2
    assert "20240101000000" in result.stderr and str(V1) in result.stderr
    assert fetchval_sync(db_url, "SELECT to_regclass('_sqlx_migrations')") is None


def test_unknown_revert_target_exits_2_and_touches_nothing(fresh_url: str) -> None:
    assert invoke("provision", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP).exit_code == 0

    result = invoke("revert", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), "--target", "5")

    assert result.exit_code == 2
    assert "0 to revert everything" in result.stderr
    assert fetchval_sync(fresh_url, "SELECT count(*) FROM _sqlx_migrations") == 3


def test_selection_flags_with_d_exit_2(fresh_url: str, pg: DevServer, db_name: str) -> None:
    result = invoke("provision", "-D", fresh_url, "--migrations", str(PROJECT_MIGRATIONS), *UUID_OSSP, "--tenant", "x")

    assert result.exit_code == 2
    assert not exists(pg, db_name)


def test_a_deleted_applied_file_is_refused_unless_ignore_missing(fresh_url: str, tmp_path: Path) -> None:
    migrations = Path(shutil.copytree(PROJECT_MIGRATIONS, tmp_path / "m"))
    assert invoke("provision", "-D", fresh_url, "--migrations", str(migrations), *UUID_OSSP).exit_code == 0
    for path in migrations.glob("20250201000000_*"):
        path.unlink()
    gated = invoke("migrate", "-D", fresh_url, "--migrations", str(migrations))
    assert gated.exit_code == 2, "the safety gate refuses a deleted released file before connecting"
    assert "released-file-deleted" in gated.stderr
    # Without the release record, the database's own ledger refuses it the way SQLx does.
    (migrations / "released.sum").unlink()
    refused = invoke("migrate", "-D", fresh_url, "--migrations", str(migrations))
    assert refused.exit_code == 1
    assert "migration 20250201000000 was previously applied but is missing" in refused.stdout
    assert "restore the file" in refused.stdout
    accepted = invoke("migrate", "-D", fresh_url, "--migrations", str(migrations), "--ignore-missing")
    assert accepted.exit_code == 0, accepted.stdout
