"""`orchestrator serve`, through a real uvicorn in a subprocess, against a real server: the token, onboarding a new
school from a spare (and again: up to date), two PUTs of one school at once, invalid input creating nothing, the
409/503 mappings, the fleet's shape, the metrics, and no password in any answer or log line."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fleetkit import cli, make_migrations, registry_url, write_registry
from pgfixtures import (
    PG_PASSWORD,
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
from prometheus_client.parser import text_string_to_metric_families
from servekit import TOKEN, Service, start

from orchestrator.devserver import DevServer, free_port

FLEET_KEYS = {"surveyed_at", "age_s", "latest_version", "histogram", "servers", "schools", "onboardings"}
SERVER_KEYS = {"server", "healthy", "last_answer_at", "spares_ready", "template", "error"}
SCHOOL_KEYS = {"tenant", "server", "status", "ok", "version", "pending", "message", "hint"}
ONBOARDING_KEYS = {"tenant", "at", "status", "path", "ms"}


@dataclass
class Fleet:
    pg: DevServer
    migrations: Path
    registry: Path
    template: str
    known: str  # the database of the registry's school `known-a` (not created before the tests)
    service: Service

    def url(self, database: str) -> str:
        return self.pg.url(database)

    def databases(self) -> set[str]:
        rows = fetch_sync(with_database(self.pg.url(), "postgres"), "SELECT datname FROM pg_database")
        return {r["datname"] for r in rows if not r["datname"].startswith("orchestrator_")}  # spares come and go


@pytest.fixture(scope="module")
def fleet(servers: object, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    """One service for the module: a registry of one school (not created yet) onboarding from a template of which
    `orchestrator template --spares 2` made two spares first; the service keeps 2."""
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())  # type: ignore[attr-defined]
    tmp = tmp_path_factory.mktemp("serve")
    migrations = make_migrations(tmp / "migrations")
    template, known = unique_db_name("servetpl"), unique_db_name("serve_known")
    registry = write_registry(
        tmp / "tenants.yaml",
        [("known-a", registry_url(pg, known), [])],
        defaults=f"defaults:\n  template: {template}\n",
    )
    made = cli("template", "--registry", str(registry), "--migrations", str(migrations), "--spares", "2", "--yes")
    assert made.returncode == 0, made.stdout + made.stderr
    service = start(
        tmp / "serve.log",
        "--registry", str(registry), "--migrations", str(migrations), "--spares", "2", "--survey-every", "1m",
        "--retries", "0", "--log-format", "json", "--log-level", "info",
    )  # fmt: skip
    try:
        yield Fleet(pg, migrations, registry, template, known, service)
    finally:
        code = service.stop()
        log = service.log_text()
        assert code == 0, log
        assert PG_PASSWORD not in log
        for answer in service.answers:
            assert PG_PASSWORD not in answer.text
        drop_template(pg.url(), template)


@pytest.fixture
def new_db(fleet: Fleet) -> Iterator[str]:
    name = unique_db_name("serve_new")
    yield name
    run_sync(drop_database(fleet.pg.url(), name))


def put(fleet: Fleet, tenant: str, body: object = None, **kwargs: object) -> object:
    return fleet.service.call("PUT", f"/v1/schools/{tenant}", body, **kwargs)  # type: ignore[arg-type]


def test_v1_needs_the_token_the_rest_does_not(fleet: Fleet) -> None:
    s = fleet.service
    for token in (None, "wrong-token-0123456789", TOKEN + "x", ""):
        for method, path in (("PUT", "/v1/schools/known-a"), ("GET", "/v1/schools/known-a"), ("GET", "/v1/fleet")):
            answer = s.call(method, path, token=token)
            assert answer.status == 401, (method, path, token)
            assert answer.body["error"]["code"] == "unauthorized"
            assert answer.headers.get("www-authenticate") == "Bearer"
    assert not run_sync(database_exists(fleet.pg.url(), fleet.known))  # the refused PUTs created nothing
    for path in ("/healthz", "/metrics", "/openapi.json", "/"):
        assert s.call("GET", path, token=None).status == 200, path
    spec = s.call("GET", "/openapi.json", token=None).body
    assert {"/v1/schools/{id}", "/v1/fleet", "/metrics", "/healthz", "/readyz"} <= set(spec["paths"])


def test_a_new_school_from_a_spare_then_up_to_date(fleet: Fleet, new_db: str) -> None:
    first = put(fleet, "new-spare", {"url": fleet.url(new_db)})
    assert first.status == 200, first.text
    school = first.body
    assert school["id"] == "new-spare" and school["status"] == "applied" and school["ok"] is True
    assert school["created_database"] is True and school["version_after"] == 3
    assert any("a ready copy" in note for note in school["notes"]), school["notes"]
    assert [(v, ok) for v, _, ok, _ in ledger(fleet.url(new_db))] == [(1, True), (2, True), (3, True)]
    again = put(fleet, "new-spare", {"url": fleet.url(new_db)})
    assert again.status == 200 and again.body["status"] == "up_to_date", again.text
    assert put(fleet, "new-spare").body["status"] == "up_to_date"  # known now: no URL needed
    status = fleet.service.call("GET", "/v1/schools/new-spare")
    assert status.status == 200 and status.body["status"] == "up_to_date" and status.body["version_after"] == 3
    onboardings = fleet.service.call("GET", "/v1/fleet").body["onboardings"]
    mine = [o for o in onboardings if o["tenant"] == "new-spare"]
    assert [o["path"] for o in mine] == ["existing", "existing", "spare"]


def test_a_registry_school_needs_no_body(fleet: Fleet) -> None:
    answer = put(fleet, "known-a")
    assert answer.status == 200 and answer.body["status"] == "applied", answer.text
    assert run_sync(database_exists(fleet.pg.url(), fleet.known))
    assert put(fleet, "known-a").body["status"] == "up_to_date"
    assert (
        put(fleet, "known-a", {"url": registry_url(fleet.pg, fleet.known).replace("${PGPW}", PG_PASSWORD)}).status
        == 200
    )


def test_two_puts_of_one_new_school_make_one_database(fleet: Fleet, new_db: str) -> None:
    answers: list[object] = []
    threads = [threading.Thread(target=lambda: answers.append(put(fleet, "twice", {"url": fleet.url(new_db)})))
               for _ in range(2)]  # fmt: skip
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(a.status for a in answers) == [200, 200], [a.text for a in answers]  # type: ignore[attr-defined]
    assert sorted(a.body["status"] for a in answers) == ["applied", "up_to_date"]  # type: ignore[attr-defined]
    assert sum(1 for a in answers if a.body["created_database"]) == 1  # type: ignore[attr-defined]
    assert len(ledger(fleet.url(new_db))) == 3


@pytest.mark.parametrize(
    ("tenant", "body", "raw", "status", "code"),
    [
        ("Bad_ID", {"url": "SAME"}, None, 400, "bad_request"),
        ("ok-id", {"url": "not a url"}, None, 400, "bad_request"),
        ("ok-id", {"url": "postgresql://postgres:pw@127.0.0.1:1/postgres"}, None, 400, "bad_request"),
        ("ok-id", {"url": "postgresql://postgres:pw@127.0.0.1:1/orchestrator_spare_0011"}, None, 400, "bad_request"),
        ("ok-id", {"url": "SAME", "extra": 1}, None, 400, "bad_request"),
        ("ok-id", ["SAME"], None, 400, "bad_request"),
        ("ok-id", {"url": 5}, None, 400, "bad_request"),
        ("ok-id", None, b"{not json", 400, "bad_request"),
        ("ok-id", None, b'{"url": "' + b"x" * 20000 + b'"}', 413, "body_too_large"),
        ("nobody-knows", None, None, 404, "unknown_school"),
        ("known-a", {"url": "SAME"}, None, 409, "school_conflict"),  # another database than the registry's
    ],
)
def test_invalid_input_is_a_4xx_and_creates_nothing(
    fleet: Fleet, new_db: str, tenant: str, body: object, raw: bytes | None, status: int, code: str
) -> None:
    if isinstance(body, dict) and body.get("url") == "SAME":
        body = {**body, "url": fleet.url(new_db)}
    elif body == ["SAME"]:
        body = [fleet.url(new_db)]
    before = fleet.databases()
    answer = put(fleet, tenant, body, raw=raw)
    assert answer.status == status, answer.text
    error = answer.body["error"]
    assert error["code"] == code and error["message"] and "hint" in error
    assert fleet.databases() == before
    assert "pw@" not in answer.text


def test_a_dirty_or_modified_school_is_409(fleet: Fleet, new_db: str) -> None:
    assert put(fleet, "conflicted", {"url": fleet.url(new_db)}).status == 200
    execute_sync(fleet.url(new_db), "UPDATE _sqlx_migrations SET checksum = '\\x00' WHERE version = 2")
    modified = put(fleet, "conflicted")
    assert modified.status == 409 and modified.body["status"] == "modified", modified.text
    assert modified.body["error"]["code"] == "modified"
    execute_sync(fleet.url(new_db), "DELETE FROM _sqlx_migrations WHERE version = 2")
    execute_sync(fleet.url(new_db), "UPDATE _sqlx_migrations SET success = false WHERE version = 3")
    dirty = put(fleet, "conflicted")
    assert dirty.status == 409 and dirty.body["status"] == "dirty", dirty.text
    assert ledger(fleet.url(new_db))[-1][2] is False  # left as it was: a human settles it


def test_an_unreachable_server_is_503(fleet: Fleet) -> None:
    url = f"postgresql://postgres:{PG_PASSWORD}@127.0.0.1:{free_port()}/school_nowhere"
    answer = put(fleet, "nowhere", {"url": url})
    assert answer.status == 503 and answer.body["status"] == "unreachable", answer.text
    assert answer.body["error"]["code"] == "unreachable"


def test_the_fleet_has_the_dashboards_shape(fleet: Fleet) -> None:
    assert put(fleet, "known-a").status == 200
    answer = fleet.service.call("GET", "/v1/fleet?refresh=1")
    assert answer.status == 200, answer.text
    body = answer.body
    assert set(body) == FLEET_KEYS
    assert body["latest_version"] == 3 and body["age_s"] < 30
    assert {"version": 3, "schools": 1} in body["histogram"] or body["histogram"][0]["version"] == 3
    assert body["servers"] and all(set(s) == SERVER_KEYS for s in body["servers"])
    server = next(s for s in body["servers"] if s["server"] == f"127.0.0.1:{fleet.pg.port}")
    assert server["healthy"] is True and server["template"] == fleet.template and server["spares_ready"] >= 0
    assert all(set(s) == SCHOOL_KEYS for s in body["schools"])
    known = next(s for s in body["schools"] if s["tenant"] == "known-a")
    assert known["status"] == "up_to_date" and known["ok"] and known["version"] == 3 and known["pending"] == 0
    assert all(set(o) == ONBOARDING_KEYS for o in body["onboardings"])
    assert fleet.service.call("GET", "/readyz", token=None).status == 200


def test_metrics_parse_and_count_onboardings(fleet: Fleet, new_db: str) -> None:
    assert put(fleet, "metered", {"url": fleet.url(new_db)}).status == 200
    fleet.service.call("GET", "/v1/fleet?refresh=1")
    text = fleet.service.call("GET", "/metrics", token=None).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counted = families["orchestrator_onboardings"].samples
    onboardings = {(s.labels["outcome"], s.labels["path"]): s.value for s in counted if s.name.endswith("_total")}
    assert onboardings.get(("applied", "spare"), 0) >= 1
    assert "orchestrator_onboarding_seconds" in families
    assert 0 <= families["orchestrator_fleet_survey_age_seconds"].samples[0].value < 60
    assert any(s.labels == {"version": "3"} for s in families["orchestrator_fleet_schools"].samples)
    assert "orchestrator_spares_ready" in families
    assert PG_PASSWORD not in text


def test_the_spares_are_topped_up_after_an_onboarding(fleet: Fleet, new_db: str) -> None:
    import time

    assert put(fleet, "refilled", {"url": fleet.url(new_db)}).body["created_database"]
    deadline = time.monotonic() + 30
    while len(spares_of(fleet.pg.url(), fleet.template)) < 2:
        assert time.monotonic() < deadline, "the spare used was not replaced"
        time.sleep(0.2)


def test_the_service_takes_a_spare_it_made_or_read_without_opening_it_again(fleet: Fleet, new_db: str) -> None:
    """The service seals each spare it makes or reads (spare_seals.py), and takes a sealed one by a rename alone: the
    server counts no session on the new school's database (its OID is the spare's) beyond those the spare had."""
    import time

    deadline = time.monotonic() + 30
    while fleet.service.call("GET", "/v1/fleet").body["servers"][0]["spares_ready"] < 2:  # a top-up pass is done
        assert time.monotonic() < deadline, "the spares were not kept ready"
        time.sleep(0.2)
    postgres = with_database(fleet.pg.url(), "postgres")
    sessions = "SELECT d.oid, s.sessions FROM pg_database d JOIN pg_stat_database s ON s.datid = d.oid WHERE "
    spares = dict(fetch_sync(postgres, sessions + "starts_with(d.datname, 'orchestrator_spare_')"))

    answer = put(fleet, "sealed", {"url": fleet.url(new_db)})

    assert answer.status == 200 and any("a ready copy" in note for note in answer.body["notes"]), answer.text
    [(oid, count)] = fetch_sync(postgres, sessions + "d.datname = $1", new_db)
    assert spares[oid] == count, "taken unread: no session on it since the service made (or read) it"


def test_onboardings_share_one_maintenance_session(fleet: Fleet, new_db: str) -> None:
    """The service keeps its session to the server's `postgres` open between onboardings (a login per school costs
    more than taking a spare): the same backend serves the next one."""
    sessions = "SELECT pid FROM pg_stat_activity WHERE datname = 'postgres' AND application_name = 'orchestrator'"
    postgres = with_database(fleet.pg.url(), "postgres")
    assert put(fleet, "kept-1", {"url": fleet.url(new_db)}).status == 200
    first = {r["pid"] for r in fetch_sync(postgres, sessions)}
    other = unique_db_name("serve_kept")
    try:
        assert put(fleet, "kept-2", {"url": fleet.url(other)}).status == 200
        second = {r["pid"] for r in fetch_sync(postgres, sessions)}
    finally:
        run_sync(drop_database(fleet.pg.url(), other))
    assert first & second, (first, second)


def test_a_burst_of_onboardings_all_end_ok_and_the_spares_are_refilled(fleet: Fleet) -> None:
    import time

    names = [unique_db_name("serve_burst") for _ in range(12)]
    answers: dict[str, object] = {}
    threads = [threading.Thread(target=lambda i=i, n=n: answers.__setitem__(n, put(fleet, f"burst-{i}",
                                                                                   {"url": fleet.url(n)})))
               for i, n in enumerate(names)]  # fmt: skip
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        for name in names:
            answer = answers[name]
            assert answer.status == 200 and answer.body["status"] == "applied", answer.text  # type: ignore[attr-defined]
            assert [v for v, _, ok, _ in ledger(fleet.url(name)) if ok] == [1, 2, 3]
        deadline = time.monotonic() + 60
        while len(spares_of(fleet.pg.url(), fleet.template)) < 2:
            assert time.monotonic() < deadline, "the spares were not refilled after the burst"
            time.sleep(0.2)
    finally:
        for name in names:
            run_sync(drop_database(fleet.pg.url(), name))


def test_the_status_of_an_unknown_school_is_404(fleet: Fleet) -> None:
    answer = fleet.service.call("GET", "/v1/schools/nobody-has-it")
    assert answer.status == 404 and answer.body["error"]["code"] == "unknown_school", answer.text
    assert fleet.service.call("GET", "/v1/schools/Not_A_Slug").status == 400
