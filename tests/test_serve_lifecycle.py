"""`orchestrator serve` starting, reloading and stopping: refused without a token or on bad input (exit 2, before
listening); the files read again when they change (a new file is applied, an unsafe one refused with 422, an edited
one refused with 409, nothing written); a new registry entry found without a restart; SIGTERM while a school is
being onboarded lets it finish, then exit 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
import asyncpg
import pytest
from fleetkit import ROOT, cli, make_migrations, registry_url, write_registry
from pgbouncer import PgBouncer
from pgfixtures import (
    PG_PASSWORD,
    database_exists,
    drop_database,
    execute_sync,
    ledger,
    quote_ident,
    run_sync,
    spares_of,
    unique_db_name,
)
from servekit import Answer, Service, start

from orchestrator.devserver import DevServer
from orchestrator.sqlx import advisory_lock_key


@pytest.fixture
def schools(pg: DevServer) -> Iterator[list[str]]:
    """Database names a test creates (dropped afterwards)."""
    names: list[str] = []
    yield names
    for name in names:
        run_sync(drop_database(pg.url(), name))


def serve(tmp_path: Path, pg: DevServer, *more: str, tenants: list[tuple[str, str]] | None = None) -> Service:
    migrations = tmp_path / "migrations"
    if not migrations.exists():
        make_migrations(migrations)
    listed = tenants or [("listed", "serve_listed_never_made")]  # a registry lists at least one school
    registry = write_registry(tmp_path / "tenants.yaml", [(i, registry_url(pg, db), []) for i, db in listed])
    return start(
        tmp_path / "serve.log", "--registry", str(registry), "--migrations", str(migrations), "--spares", "0",
        "--retries", "0", "--log-format", "json", "--log-level", "info", *more,
    )  # fmt: skip


def one_school(tmp_path: Path, pg: DevServer, schools: list[str], label: str = "serve_life") -> tuple[str, str]:
    name = unique_db_name(label)
    schools.append(name)
    return name, registry_url(pg, name)


def test_refuses_to_start_without_a_token_or_with_bad_input(tmp_path: Path, pg: DevServer) -> None:
    registry = write_registry(tmp_path / "tenants.yaml", [("a", registry_url(pg, "serve_never"), [])])
    migrations = make_migrations(tmp_path / "migrations")
    base = ("serve", "--registry", str(registry), "--migrations", str(migrations), "--listen", "127.0.0.1:1")
    no_token = cli(*base, env={"ORCHESTRATOR_API_TOKEN": ""})
    assert no_token.returncode == 2 and "ORCHESTRATOR_API_TOKEN" in no_token.stderr, no_token.stderr
    token_file = tmp_path / "token"
    token_file.write_text("short\n")
    assert cli(*base, "--token-file", str(token_file)).returncode == 2
    missing = cli(*base, "--token-file", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "--token-file" in missing.stderr
    token = {"ORCHESTRATOR_API_TOKEN": "a-token-long-enough-1234"}
    single = cli("serve", "-D", pg.url("serve_never"), "--listen", "127.0.0.1:1", env=token)
    assert single.returncode == 2 and "registry" in single.stderr
    assert PG_PASSWORD not in single.stderr
    assert cli(*base[:-2], "--listen", "nowhere", env=token).returncode == 2
    assert cli(*base, "--survey-every", "0s", env=token).returncode == 2
    (tmp_path / "bad.yaml").write_text("tenants:\n  - id: Not A Slug\n    url: postgresql://x@h/d\n")
    bad = cli("serve", "--registry", str(tmp_path / "bad.yaml"), "--listen", "127.0.0.1:1", env=token)
    assert bad.returncode == 2 and "bad.yaml:2" in bad.stderr, bad.stderr
    assert not run_sync(database_exists(pg.url(), "serve_never"))


def test_sigterm_lets_an_onboarding_finish_then_exits_0(tmp_path: Path, pg: DevServer, schools: list[str]) -> None:
    name, _ = one_school(tmp_path, pg, schools, "serve_slow")  # `slow`: its second file sleeps 1.5 s
    service = serve(tmp_path, pg)
    answers: list[Answer] = []
    thread = threading.Thread(target=lambda: answers.append(service.call("PUT", "/v1/schools/slow-one",
                                                                          {"url": pg.url(name)})))  # fmt: skip
    thread.start()
    deadline = time.monotonic() + 10
    while not run_sync(database_exists(pg.url(), name)):  # the onboarding has started
        assert time.monotonic() < deadline
        time.sleep(0.05)
    service.process.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    with pytest.raises(OSError):
        service.call("GET", "/healthz", token=None, timeout=2)  # no longer accepting
    thread.join(30)
    assert service.process.wait(30) == 0, service.log_text()
    assert answers and answers[0].status == 200 and answers[0].body["status"] == "applied", answers
    assert [(v, ok) for v, _, ok, _ in ledger(pg.url(name))] == [(1, True), (2, True), (3, True)]
    assert PG_PASSWORD not in service.log_text()


def test_changed_files_are_read_again(tmp_path: Path, pg: DevServer, schools: list[str]) -> None:
    name, _ = one_school(tmp_path, pg, schools)
    service = serve(tmp_path, pg)
    try:
        assert service.call("PUT", "/v1/schools/grows", {"url": pg.url(name)}).body["version_after"] == 3
        migrations = tmp_path / "migrations"
        (migrations / "4_four.sql").write_text("CREATE TABLE four (id int);\n")
        four = service.call("PUT", "/v1/schools/grows")
        assert four.status == 200 and four.body["status"] == "applied" and four.body["applied"] == [4], four.text
        # An unsafe file (an index built without CONCURRENTLY on a table in use): refused where it would run.
        (migrations / "5_index.sql").write_text("CREATE INDEX log_note_idx ON log (note);\n")
        unsafe = service.call("PUT", "/v1/schools/grows")
        assert unsafe.status == 422 and unsafe.body["error"]["code"] == "unsafe_migrations", unsafe.text
        assert [row[0] for row in ledger(pg.url(name))] == [1, 2, 3, 4]
        (migrations / "5_index.sql").unlink()
        # Files the loader refuses (a down file without its up): no onboarding until they are fixed, not ready.
        (migrations / "6_orphan.down.sql").write_text("DROP TABLE four;\n")
        broken = service.call("PUT", "/v1/schools/grows")
        assert broken.status == 503 and broken.body["error"]["code"] == "bad_migration_source", broken.text
        assert service.call("GET", "/readyz", token=None).status == 503
        (migrations / "6_orphan.down.sql").unlink()
        assert service.call("PUT", "/v1/schools/grows").body["status"] == "up_to_date"
        # An applied file edited: the school is `modified`, 409, nothing applied.
        (migrations / "1_create_log.sql").write_text("CREATE TABLE log (id bigserial PRIMARY KEY);\n")
        edited = service.call("PUT", "/v1/schools/grows")
        assert edited.status == 409 and edited.body["status"] == "modified", edited.text
    finally:
        assert service.stop() == 0


def test_a_new_registry_entry_is_found_without_a_restart(tmp_path: Path, pg: DevServer, schools: list[str]) -> None:
    first, first_url = one_school(tmp_path, pg, schools)
    service = serve(tmp_path, pg, tenants=[("first", first)])
    try:
        assert service.call("PUT", "/v1/schools/later").status == 404
        later, later_url = one_school(tmp_path, pg, schools)
        write_registry(tmp_path / "tenants.yaml", [("first", first_url, []), ("later", later_url, [])])
        answer = service.call("PUT", "/v1/schools/later")
        assert answer.status == 200 and answer.body["database"] == later, answer.text
        assert service.call("GET", "/v1/schools/later").body["status"] == "up_to_date"
        os.kill(service.process.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while '"serve.sighup"' not in service.log_text():
            assert time.monotonic() < deadline, service.log_text()
            time.sleep(0.1)
        assert service.call("GET", "/healthz", token=None).status == 200
    finally:
        assert service.stop() == 0


def test_a_locked_school_is_409_and_a_transaction_pooler_503(tmp_path: Path, pg: DevServer, schools: list[str]) -> None:
    name, _ = one_school(tmp_path, pg, schools)
    service = serve(tmp_path, pg, "--lock-wait", "500ms")
    try:
        assert service.call("PUT", "/v1/schools/held", {"url": pg.url(name)}).status == 200
        locked, release = threading.Event(), threading.Event()

        async def hold() -> None:  # a starting SQLx worker holding the migration lock
            conn = await asyncpg.connect(pg.url(name))
            await conn.execute("SELECT pg_advisory_lock($1)", advisory_lock_key(name))
            locked.set()
            await anyio.to_thread.run_sync(release.wait)
            await conn.close()

        holder = threading.Thread(target=anyio.run, args=(hold,))
        holder.start()
        try:
            assert locked.wait(10)
            answer = service.call("PUT", "/v1/schools/held")
            assert answer.status == 409 and answer.body["status"] == "locked", answer.text
        finally:
            release.set()
            holder.join(10)
        with PgBouncer(pg, PG_PASSWORD, "transaction") as bouncer:
            pooled_db, _ = one_school(tmp_path, pg, schools)
            pooled = service.call("PUT", "/v1/schools/pooled", {"url": bouncer.url(PG_PASSWORD, pooled_db)})
            assert pooled.status == 503 and pooled.body["status"] == "pooled", pooled.text
            assert not run_sync(database_exists(pg.url(), pooled_db))
            assert PG_PASSWORD not in pooled.text
    finally:
        assert service.stop() == 0


def test_a_port_in_use_is_exit_1(tmp_path: Path, pg: DevServer) -> None:
    registry = write_registry(tmp_path / "tenants.yaml", [("a", registry_url(pg, "serve_never"), [])])
    migrations = make_migrations(tmp_path / "migrations")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        token = {"ORCHESTRATOR_API_TOKEN": "a-token-long-enough-1234"}
        listen = f"127.0.0.1:{port}"
        result = cli("serve", "--registry", str(registry), "--migrations", str(migrations), "--listen", listen,
                     env=token)  # fmt: skip
    assert result.returncode == 1 and "address already in use" in result.stderr, result.stderr


def test_a_file_edited_since_the_template_was_built_is_409_and_creates_nothing(
    tmp_path: Path, pg: DevServer, schools: list[str]
) -> None:
    template = unique_db_name("serve_tpl_edit")
    schools.append(template)
    make_migrations(tmp_path / "migrations")
    defaults = f"defaults:\n  template: {template}\n"
    registry = write_registry(tmp_path / "tenants.yaml", [("listed", registry_url(pg, "serve_never"), [])], defaults)
    made = cli("template", "--registry", str(registry), "--migrations", str(tmp_path / "migrations"), "--spares", "1",
               "--yes")  # fmt: skip
    assert made.returncode == 0, made.stderr
    schools.extend(spares_of(pg.url(), template))
    service = start(tmp_path / "serve.log", "--registry", str(registry), "--migrations", str(tmp_path / "migrations"),
                    "--spares", "0")  # fmt: skip
    try:
        (tmp_path / "migrations" / "2_slow_step.sql").write_text("CREATE TABLE two (id bigint);\n")
        name, _ = one_school(tmp_path, pg, schools)
        answer = service.call("PUT", "/v1/schools/edited", {"url": pg.url(name)})
        assert answer.status == 409, answer.text
        assert answer.body["error"]["code"] == "bad_usage" and "template" in answer.body["error"]["message"]
        assert not run_sync(database_exists(pg.url(), name))
    finally:
        assert service.stop() == 0
        for database in [template, *spares_of(pg.url(), template)]:
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(database)} IS_TEMPLATE false")


def test_onboardings_on_one_server_stay_within_per_server(tmp_path: Path, pg: DevServer, schools: list[str]) -> None:
    """--per-server 1: two slow onboardings (their second file sleeps 1.5 s) on one server run one after the other."""
    service = serve(tmp_path, pg, "--per-server", "1")
    names = [one_school(tmp_path, pg, schools, "serve_slow")[0] for _ in range(2)]
    answers: list[Answer] = []
    threads = [threading.Thread(target=lambda i=i, n=n: answers.append(service.call("PUT", f"/v1/schools/slow-{i}",
                                                                                    {"url": pg.url(n)})))
               for i, n in enumerate(names)]  # fmt: skip
    try:
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        elapsed = time.monotonic() - started
        assert [a.status for a in answers] == [200, 200], answers
        assert elapsed >= 3.0, f"two 1.5 s onboardings overlapped: {elapsed:.2f}s"
    finally:
        assert service.stop() == 0


@pytest.mark.parametrize("args", [("--version",), ("--help",), ("provision", "--help")])
def test_other_commands_never_import_the_service(args: tuple[str, ...]) -> None:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "orchestrator", *args],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    modules = {line.split("|")[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "orchestrator.cli.serve" in modules  # the command is registered
    assert not {m for m in modules if m.split(".")[0] in ("starlette", "uvicorn") or m.startswith("orchestrator.serve")}
