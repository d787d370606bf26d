"""Adversary: `orchestrator serve`'s PUT must never write into a database that is not a school's (the registry's
template, a database another school owns under another spelling), on a real server; asserting the databases."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleetkit import cli, make_migrations, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
    create_database,
    database_exists,
    drop_database,
    drop_template,
    execute_sync,
    fetch_sync,
    ledger,
    run_sync,
    spares_of,
    unique_db_name,
    with_database,
)
from pgversions import system_major
from servekit import Service, start

from orchestrator.devserver import DevServer


@dataclass
class Fleet:
    pg: DevServer
    migrations: Path
    template: str
    known: str
    service: Service


@pytest.fixture(scope="module")
def fleet(servers: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())  # type: ignore[attr-defined]
    tmp = tmp_path_factory.mktemp("advserve")
    migrations = make_migrations(tmp / "migrations")
    template, known = unique_db_name("advtpl"), unique_db_name("adv_known")
    registry = write_registry(
        tmp / "tenants.yaml",
        [("known-a", registry_url(pg, known), [])],
        defaults=f"defaults:\n  template: {template}\n",
    )
    made = cli("template", "--registry", str(registry), "--migrations", str(migrations), "--spares", "1", "--yes")
    assert made.returncode == 0, made.stdout + made.stderr
    service = start(
        tmp / "serve.log",
        "--registry", str(registry), "--migrations", str(migrations), "--spares", "0", "--survey-every", "1m",
        "--retries", "0", "--log-format", "json", "--log-level", "info",
    )  # fmt: skip
    try:
        yield Fleet(pg, migrations, template, known, service)
    finally:
        code = service.stop()
        log = service.log_text()
        assert code == 0, log
        assert PG_PASSWORD not in log
        drop_template(pg.url(), template)


def _ledger_rows(pg: DevServer, database: str) -> list[object]:
    return [tuple(r) for r in fetch_sync(with_database(pg.url(), database),
            "SELECT version, checksum, success FROM _sqlx_migrations ORDER BY version")]  # fmt: skip


def test_a_put_naming_the_registrys_template_is_refused_and_leaves_it_alone(fleet: Fleet) -> None:
    answer = fleet.service.call("PUT", "/v1/schools/steal-template", {"url": fleet.pg.url(fleet.template)})
    assert answer.status in (400, 409), answer.text
    assert fleet.service.call("GET", "/v1/schools/steal-template").status == 404


def _spellings(pg: DevServer, database: str) -> list[str]:
    """Other URLs of the same database: a second host after the first (asyncpg connects to the first that answers),
    the host in ?host=, a Unix socket."""
    user = f"postgres:{PG_PASSWORD}"
    return [
        f"postgresql://{user}@127.0.0.1:{pg.port},192.0.2.1:5432/{database}",
        f"postgresql://{user}@localhost:{pg.port},127.0.0.1:{pg.port}/{database}",
        f"postgresql:///{database}?host=127.0.0.1&port={pg.port}&user=postgres&password={PG_PASSWORD}",
    ]


def test_a_known_schools_database_under_another_id_and_spelling_is_409(fleet: Fleet) -> None:
    made = fleet.service.call("PUT", "/v1/schools/known-a")
    assert made.status == 200, made.text
    before = _ledger_rows(fleet.pg, fleet.known)
    for index, url in enumerate(_spellings(fleet.pg, fleet.known)):
        answer = fleet.service.call("PUT", f"/v1/schools/alias-{index}", {"url": url})
        assert answer.status == 409, (url.replace(PG_PASSWORD, "***"), answer.text)
        assert fleet.service.call("GET", f"/v1/schools/alias-{index}").status == 404
    assert _ledger_rows(fleet.pg, fleet.known) == before


def test_an_applied_file_edited_while_serving_refuses_new_schools(fleet: Fleet) -> None:
    """The template and its spare hold the files as they were: a school made from them now would carry a ledger
    whose checksums no longer match the files. The PUT is refused (409), creating nothing, the spare left."""
    first = sorted(fleet.migrations.glob("*.sql"))[0]
    original = first.read_text()
    spares = spares_of(fleet.pg.url(), fleet.template)
    name = unique_db_name("adv_edited")
    try:
        first.write_text(original + "\n-- edited after the template was made\n")
        answer = fleet.service.call("PUT", "/v1/schools/edited", {"url": fleet.pg.url(name)})
        assert answer.status == 409, answer.text
        assert answer.body["error"]["code"] == "bad_usage"
        assert not run_sync(database_exists(fleet.pg.url(), name))
        assert spares_of(fleet.pg.url(), fleet.template) == spares
    finally:
        first.write_text(original)
        run_sync(drop_database(fleet.pg.url(), name))


def test_an_edit_that_keeps_the_size_and_the_mtime_is_still_seen(fleet: Fleet) -> None:
    """`cp -p`, `rsync -t` or a tar extraction keep a file's mtime; a one-character edit keeps its size. The service
    must still read the files again (the ctime changes whatever the writer does), and refuse the PUT."""
    first = sorted(fleet.migrations.glob("*.sql"))[0]
    original = first.read_bytes()
    assert fleet.service.call("PUT", "/v1/schools/known-a").status == 200  # the service has read the files as they are
    before = first.stat()
    name = unique_db_name("adv_forged")
    try:
        edited = original.replace(b"id", b"ID", 1)
        assert edited != original and len(edited) == len(original)
        first.write_bytes(edited)
        os.utime(first, ns=(before.st_atime_ns, before.st_mtime_ns))
        answer = fleet.service.call("PUT", "/v1/schools/forged", {"url": fleet.pg.url(name)})
        assert answer.status == 409, answer.text
        assert not run_sync(database_exists(fleet.pg.url(), name))
    finally:
        first.write_bytes(original)
        run_sync(drop_database(fleet.pg.url(), name))


SECRET = "Sup3r-s3cret-pw"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://u:{SECRET}@127.0.0.1:notaport/school_x",
        f"postgresql://u:{SECRET}@bad host/school_x",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/postgres",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/orchestrator_x",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/school_x?sslmode=bogus",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/school_x?bad-setting=1",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/school_x?dbname=other",
        f"postgresql://u@127.0.0.1:5432/school_x?password={SECRET}&sslmode=bogus",
        f"postgresql://u@127.0.0.1:5432/school_x?PASSWORD={SECRET}&sslmode=bogus",
        f"postgresql://u:{SECRET}@x@127.0.0.1:5432/school_x?sslmode=bogus",
        f"postgresql://u:{SECRET}@127.0.0.1:5432/school_x\x00",
        f"mysql://u:{SECRET}@127.0.0.1:5432/school_x",
        f"postgresql://u:{SECRET}@127.0.0.1:5432,[::1/school_x",
        f"postgresql://u:{SECRET}@127.0.0.1:1/school_x",
    ],
)
def test_a_password_in_a_refused_or_failed_url_is_in_no_answer_nor_log_line(fleet: Fleet, url: str) -> None:
    answer = fleet.service.call("PUT", "/v1/schools/leaky", {"url": url})
    assert answer.status >= 400, answer.text
    assert SECRET not in answer.text
    assert SECRET not in fleet.service.log_text()
    for path in ("/metrics", "/v1/fleet", "/readyz", "/v1/schools/leaky"):
        assert SECRET not in fleet.service.call("GET", path).text, path


SLOW = {
    "1_slow.sql": "CREATE TABLE slow (id int);\nSELECT pg_sleep(1.5);\n",
    "2_after.sql": "CREATE TABLE after_slow (id int);\n",
}


@pytest.mark.parametrize("grace", ["20s", "1s"])
def test_sigterm_during_a_burst_leaves_no_school_claiming_what_it_does_not_hold(
    servers: object, tmp_path: Path, grace: str
) -> None:
    """SIGTERM while six onboardings run (files, no template: each takes 1.5 s): each school database ends with its
    ledger a prefix of the files' (all successes) or does not exist; an answer of 200 means the whole ledger; with a
    grace shorter than the work, requests are cut short and still nothing half-recorded is left; exit 0."""
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())  # type: ignore[attr-defined]
    migrations = make_migrations(tmp_path / "migrations", SLOW)
    registry = write_registry(tmp_path / "tenants.yaml", [("reg-a", registry_url(pg, unique_db_name("adv_reg")), [])])
    service = start(
        tmp_path / "serve.log",
        "--registry", str(registry), "--migrations", str(migrations), "--retries", "0", "--per-server", "2",
        "--survey-every", "1m", "--log-format", "json", "--grace", grace,
    )  # fmt: skip
    names = [unique_db_name("adv_burst") for _ in range(6)]
    answers: dict[str, object] = {}

    def put(index: int) -> None:
        try:
            answers[names[index]] = service.call("PUT", f"/v1/schools/burst-{index}", {"url": pg.url(names[index])})
        except OSError as exc:
            answers[names[index]] = exc

    threads = [threading.Thread(target=put, args=(i,)) for i in range(6)]
    try:
        for t in threads:
            t.start()
        time.sleep(0.7)
        assert service.stop() == 0, service.log_text()
        for t in threads:
            t.join()
        for name in names:
            answer = answers[name]
            exists = run_sync(database_exists(pg.url(), name))
            held = (
                exists and fetch_sync(pg.url(name), "SELECT to_regclass('_sqlx_migrations') IS NOT NULL AS t")[0]["t"]
            )
            rows = ledger(pg.url(name)) if held else []
            if exists:  # a database this service created and left holding nothing is dropped again, as provision does
                assert [r[0] for r in rows] in ([1], [1, 2]) and all(r[2] for r in rows), (name, rows)
            if getattr(answer, "status", None) == 200:
                assert [r[0] for r in rows] == [1, 2], (name, answer)
        assert PG_PASSWORD not in service.log_text()
    finally:
        for name in names:
            run_sync(drop_database(pg.url(), name))


def test_a_put_naming_the_admin_source_database_writes_nothing_there(servers: object, tmp_path: Path) -> None:
    """The registry's `source:` database (the admin service's) is no school's: a PUT naming it must not create
    the ledger nor run the files in it."""
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())  # type: ignore[attr-defined]
    admin = unique_db_name("adv_admin")
    run_sync(create_database(pg.url(), admin))
    school = unique_db_name("adv_src_school")
    try:
        execute_sync(pg.url(admin), "CREATE TABLE schools (slug text, db_url text)")
        execute_sync(pg.url(admin), "INSERT INTO schools VALUES ('src-a', $1)", registry_url(pg, school))
        registry = tmp_path / "tenants.yaml"
        registry.write_text(
            "source:\n  url: ${ADMIN_DATABASE_URL}\n  query: SELECT slug AS id, db_url AS url FROM schools\n"
        )
        migrations = make_migrations(tmp_path / "migrations")
        service = start(
            tmp_path / "serve.log", "--registry", str(registry), "--migrations", str(migrations),
            "--survey-every", "1m", env={"ADMIN_DATABASE_URL": pg.url(admin)},
        )  # fmt: skip
        try:
            answer = service.call("PUT", "/v1/schools/sneaky", {"url": pg.url(admin)})
            assert answer.status == 409, answer.text
        finally:
            assert service.stop() == 0
        tables = fetch_sync(pg.url(admin), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {r["tablename"] for r in tables} == {"schools"}
    finally:
        for name in (admin, school):
            run_sync(drop_database(pg.url(), name))


def test_a_source_row_naming_the_admin_database_is_exit_2_and_writes_nothing(servers: object, tmp_path: Path) -> None:
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())  # type: ignore[attr-defined]
    admin = unique_db_name("adv_admin_row")
    run_sync(create_database(pg.url(), admin))
    try:
        execute_sync(pg.url(admin), "CREATE TABLE schools (slug text, db_url text)")
        # The same database spelled with localhost: still the admin database.
        row_url = f"postgresql://postgres:${{PGPW}}@localhost:{pg.port}/{admin}"
        execute_sync(pg.url(admin), "INSERT INTO schools VALUES ('self', $1)", row_url.replace("${PGPW}", "x"))
        registry = tmp_path / "tenants.yaml"
        registry.write_text(
            "source:\n  url: ${ADMIN_DATABASE_URL}\n  query: SELECT slug AS id, db_url AS url FROM schools\n"
        )
        migrations = make_migrations(tmp_path / "migrations")
        done = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--yes",
                   env={"ADMIN_DATABASE_URL": pg.url(admin)})  # fmt: skip
        assert done.returncode == 2, done.stdout + done.stderr
        assert "admin database" in done.stderr
        tables = fetch_sync(pg.url(admin), "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        assert {r["tablename"] for r in tables} == {"schools"}
    finally:
        run_sync(drop_database(pg.url(), admin))
