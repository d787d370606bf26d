"""A refused login (a wrong password, a role that does not exist) is `denied`, on a real server: it says what to
check, is tried once, and never counts as a server that does not answer (the other schools of the server run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetkit import cli, make_migrations, make_school, registry_url, write_registry
from pgfixtures import PG_PASSWORD, execute_sync, fetchval_sync, ledger, unique_db_name

from orchestrator.devserver import DevServer

WRONG_PASSWORD = "N0t-the-Passw0rd"


REFUSED = ("wrong_a", "wrong_b", "no_role", "no_login")


@pytest.fixture
def no_login_role(pg: DevServer) -> Iterator[str]:
    """A role that exists, with a password, but may not log in: the server says 28000, not 28P01."""
    role = unique_db_name("nologin")
    execute_sync(pg.url(), f"CREATE ROLE {role} NOLOGIN PASSWORD '{PG_PASSWORD}'")
    yield role
    execute_sync(pg.url(), f"DROP ROLE {role}")


def refused_fleet(tmp_path: Path, pg: DevServer, no_login_role: str) -> tuple[Path, dict[str, str]]:
    """Four schools whose logins the server refuses (listed first, so they are tried first), then a good one."""
    schools = {sid: make_school(pg, f"login_{sid}") for sid in (*REFUSED, "good")}
    wrong = f"postgresql://postgres:{WRONG_PASSWORD}@127.0.0.1:{pg.port}/"
    server = f"${{PGPW}}@127.0.0.1:{pg.port}"
    urls = {
        "wrong_a": wrong + schools["wrong_a"],
        "wrong_b": wrong + schools["wrong_b"],
        "no_role": f"postgresql://nobody_here:{server}/{schools['no_role']}",  # 28P01: SCRAM hides that it is absent
        "no_login": f"postgresql://{no_login_role}:{server}/{schools['no_login']}",  # 28000
        "good": registry_url(pg, schools["good"]),
    }
    registry = write_registry(tmp_path / "t.yaml", [(sid, url, []) for sid, url in urls.items()])
    return registry, schools


@pytest.mark.parametrize("command", ["migrate", "status"])
def test_a_refused_login_is_denied_and_does_not_trip_the_server_down_breaker(
    tmp_path: Path, pg: DevServer, no_login_role: str, command: str
) -> None:
    registry, schools = refused_fleet(tmp_path, pg, no_login_role)
    migrations = make_migrations(tmp_path / "migrations")
    # One school at a time and a breaker that trips after one attempt without an answer: if a refused login counted
    # as a server down, the good school would end `unreachable` without an attempt.
    confirm = ["--yes"] if command == "migrate" else []
    result = cli(command, "--registry", str(registry), "--migrations", str(migrations), "--concurrency", "1",
                 "--server-down-after", "1", "--retries", "2", "--no-progress", "--json", *confirm)  # fmt: skip

    assert result.returncode == 1, result.stdout + result.stderr
    report = {s["id"]: s for s in json.loads(result.stdout)["schools"]}
    for sid in REFUSED:
        school = report[sid]
        assert school["status"] == "denied", school
        assert school["error"]["code"] == "auth_failed"
        assert school["attempts"] == 1, "a refused login is not retried: repeated failures can lock the account"
        assert "check the role and password" in school["error"]["hint"]
    assert "password authentication failed" in report["wrong_a"]["error"]["message"]
    assert 'for user "nobody_here"' in report["no_role"]["error"]["message"]
    assert "is not permitted to log in" in report["no_login"]["error"]["message"]
    good = report["good"]
    assert good["status"] == ("applied" if command == "migrate" else "pending"), good
    if command == "migrate":
        assert [row[0] for row in ledger(pg.url(schools["good"]))] == [1, 2, 3]
    for sid in REFUSED if command == "migrate" else schools:
        assert not fetchval_sync(pg.url(schools[sid]), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL"), sid
    assert WRONG_PASSWORD not in result.stdout + result.stderr
    assert PG_PASSWORD not in result.stdout + result.stderr


def test_a_login_a_pooler_refuses_is_denied_too(tmp_path: Path, pg: DevServer) -> None:
    """PgBouncer refuses a wrong password with ERROR 08P01 (a protocol violation to the driver), where PostgreSQL
    says FATAL 28P01: still `denied`, tried once, not `unreachable` (which reads as an outage)."""
    from pgbouncer import PgBouncer

    school = make_school(pg, "login_pooled")
    migrations = make_migrations(tmp_path / "migrations")
    with PgBouncer(pg, PG_PASSWORD, "session") as bouncer:
        result = cli("status", "-D", bouncer.url(WRONG_PASSWORD, school), "--migrations", str(migrations), "--json")

    assert result.returncode == 1, result.stdout + result.stderr
    [report] = json.loads(result.stdout)["schools"]
    assert (report["status"], report["error"]["code"], report["attempts"]) == ("denied", "auth_failed", 1), report
    assert "pooler's auth_file" in report["error"]["hint"]
    assert WRONG_PASSWORD not in result.stdout + result.stderr
