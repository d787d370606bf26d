"""The dashboard (`GET /` of `orchestrator serve`) in a real browser: Debian's Chromium driven by Playwright.

First against a small stand-in for the service (the standard library's HTTP server in a thread, serving
`render_dashboard()` and a fixed `/v1/fleet` answer behind a bearer token), so that what the page does with hostile
text, a refused token, a service that stops answering or a fleet that changes can be set up exactly; then against
the real `orchestrator serve` (uvicorn) over a registry on a real PostgreSQL server, schools not ok included.

Every page is opened with route interception: a request to any origin but the service's fails the test, and so do
console errors and uncaught exceptions.
"""

from __future__ import annotations

import copy
import html
import json
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from fleetkit import cli, make_migrations, make_school, registry_url, write_registry
from pgfixtures import PG_PASSWORD, drop_database, execute_sync, run_sync, unique_db_name
from pgversions import system_major
from servekit import TOKEN, Service, start

from orchestrator.devserver import DevServer, free_port
from orchestrator.serve.dashboard import render_dashboard

playwright_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install -e '.[dev]')")

T = TypeVar("T")
CHROMIUM = Path("/usr/bin/chromium")
# Nothing that reaches the network by itself; --no-sandbox because CI runs as root.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]  # fmt: skip
WAIT_MS = 15_000  # a bound on waiting for the page, never a figure asserted

pytestmark = [
    pytest.mark.chromium,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)"),
]

LATEST, OLDER = 20240301000000, 20240101000000
# Text as a live database or a registry could hand it over: if the page ever parsed it as markup, the image would
# be fetched from another origin (refused and reported below) and the script would run.
HOSTILE = '<img src="http://203.0.113.7/x.png" onerror="document.title=\'owned\'">&amp; <b>bold</b>'


def school(tenant: str, status: str, ok: bool, version: int | None, **more: Any) -> dict[str, Any]:
    row = {"tenant": tenant, "server": "db1:5432", "status": status, "ok": ok, "version": version, "pending": 0,
           "message": None, "hint": None}  # fmt: skip
    return {**row, **more}


def server(name: str, healthy: bool, **more: Any) -> dict[str, Any]:
    row = {"server": name, "healthy": healthy, "last_answer_at": None, "spares_ready": 0, "template": None,
           "error": None}  # fmt: skip
    return {**row, **more}


def fleet_fixture() -> dict[str, Any]:
    return {
        "surveyed_at": "2026-12-04T10:00:00+00:00",
        "age_s": 12.5,
        "latest_version": LATEST,
        "histogram": [
            {"version": LATEST, "schools": 3},
            {"version": OLDER, "schools": 1},
            {"version": None, "schools": 1},
        ],
        "servers": [
            server(
                "db1:5432", True, last_answer_at="2026-12-04T10:00:01+00:00", spares_ready=4, template="school_template"
            ),
            server("db2:5432", False, error="cannot connect to db2:5432: connection refused"),
        ],
        "schools": [
            school("school-a", "up_to_date", True, LATEST),
            school("school-b", "up_to_date", True, LATEST),
            school("school-c", "applied", True, LATEST),
            school(
                "school-dirty",
                "dirty",
                False,
                OLDER,
                pending=1,
                message="migration 20240301000000 failed halfway",
                hint="fix it, then resolve",
            ),
            school(
                "school-gone",
                "unreachable",
                False,
                None,
                server="db2:5432",
                message=HOSTILE,
                hint="check the server " + HOSTILE,
            ),
        ],
        "onboardings": [
            {"tenant": "school-a", "at": "2026-12-04T09:59:00+00:00", "status": "applied", "path": "spare", "ms": 11.2},
            {
                "tenant": "school-b",
                "at": "2026-12-04T09:59:30+00:00",
                "status": "applied",
                "path": "template",
                "ms": 180.0,
            },
        ],
    }


class StandIn:
    """The service's two routes the page uses: `/` and `/v1/fleet` behind `Authorization: Bearer <token>`."""

    def __init__(self, refresh_s: float) -> None:
        self.page = render_dashboard(refresh_s=refresh_s)
        self.token = TOKEN
        self.fleet = fleet_fixture()
        self.failing = False  # answer 500 to /v1/fleet (the service in trouble)
        self.requests: list[tuple[str, str | None]] = []  # (path, Authorization)
        self.lock = threading.Lock()
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with stand_in.lock:
                    stand_in.requests.append((self.path, self.headers.get("Authorization")))
                    token, fleet, failing = stand_in.token, copy.deepcopy(stand_in.fleet), stand_in.failing
                if self.path == "/":
                    self._send(200, "text/html; charset=utf-8", stand_in.page.encode())
                elif self.path in ("/v1/fleet", "/v1/fleet?refresh=1"):
                    if self.headers.get("Authorization") != f"Bearer {token}":
                        self._send(401, "application/json", b'{"code": "unauthorized"}')
                    elif failing:
                        self._send(500, "application/json", b'{"code": "internal"}')
                    else:
                        self._send(200, "application/json", json.dumps(fleet).encode())
                else:
                    self._send(404, "application/json", b'{"code": "not_found"}')

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def fleet_requests(self) -> list[str | None]:
        with self.lock:
            return [auth for path, auth in self.requests if path.startswith("/v1/fleet")]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Tab:
    """One page in a fresh browser context, with every request outside `origin` refused and recorded, and every
    console error and uncaught exception recorded."""

    def __init__(self, browser: Any, origin: str) -> None:
        self.origin = origin
        self.context = browser.new_context()
        self.page = self.context.new_page()
        self.outside: list[str] = []
        self.errors: list[str] = []
        self.context.route("**/*", self._route)
        self.page.on("console", lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))

    def _route(self, route: Any) -> None:
        url = route.request.url
        if url == self.origin or url.startswith(self.origin + "/"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self) -> Any:
        self.page.goto(self.origin + "/")
        return self.page

    def state(self, state: str) -> None:
        self.page.wait_for_selector(f'body[data-state="{state}"]', timeout=WAIT_MS)

    def log_in(self, token: str = TOKEN) -> None:
        self._submit(token)
        self.state("ready")

    def log_in_refused(self, token: str) -> None:
        """A token the service refuses: its error shown, the form still asking."""
        self._submit(token)
        self.page.wait_for_selector("#token-error", state="visible", timeout=WAIT_MS)
        self.state("login")

    def _submit(self, token: str) -> None:
        self.state("login")
        self.page.fill("#token-input", token)
        self.page.click("#token-form button[type=submit]")

    def rows(self, table: str, key: str) -> dict[str, Any]:
        """The rows of a table by their `data-<key>`: attributes and cell texts, as the browser built them."""
        found: dict[str, Any] = self.page.eval_on_selector_all(
            f"#{table} tbody tr",
            f"""rows => Object.fromEntries(rows.map(r => [r.dataset.{key},
                {{attrs: {{...r.dataset}}, cells: [...r.cells].map(c => c.innerText)}}]))""",
        )
        return found

    def token_stored(self) -> str | None:
        stored: str | None = self.page.evaluate("sessionStorage.getItem('orchestrator.api-token')")
        return stored

    def clean(self) -> None:
        assert self.outside == [], f"requests outside the service: {self.outside}"
        assert self.errors == [], self.errors


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    # A short refresh, so the tests see the page read the fleet again without waiting the shipped 5 s.
    service = StandIn(refresh_s=0.3)
    try:
        yield service
    finally:
        service.close()


@pytest.fixture
def tab(browser: Any, stand_in: StandIn) -> Iterator[Tab]:
    opened = Tab(browser, stand_in.origin)
    try:
        yield opened
    finally:
        opened.context.close()


def test_the_page_is_self_contained() -> None:
    page = render_dashboard()
    # No address of any other place: no scripts, styles, fonts or images to fetch, no CDN.
    assert "http://" not in page and "https://" not in page
    assert re.findall(r"\b(?:src|href|action)=\"[^\"]*\"", page) == ['href="data:,"']
    assert page.count("<script>") == 1 and "<script src" not in page and '<link rel="stylesheet"' not in page
    assert "default-src 'none'" in html.unescape(page) and "connect-src 'self'" in html.unescape(page)
    assert 'data-refresh-ms="5000"' in page  # the shipped refresh


def test_the_harness_sees_a_request_off_the_origin(tab: Tab) -> None:
    # The checks below would pass anything if requests elsewhere were not routed through Tab._route.
    with pytest.raises(playwright_api.Error):
        tab.page.goto("http://203.0.113.9/elsewhere.js")
    assert tab.outside == ["http://203.0.113.9/elsewhere.js"]


def test_the_token_form_then_the_fleet(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.state("login")
    assert stand_in.fleet_requests() == []  # nothing asked without a token
    assert page.is_visible("#token-form") and not page.is_visible("#dashboard")
    tab.log_in()

    # The token went in the header, and is kept for the tab only, never in the address.
    assert set(stand_in.fleet_requests()) == {f"Bearer {TOKEN}"}
    assert TOKEN not in page.url and tab.token_stored() == TOKEN
    assert not page.is_visible("#token-form")

    bars = page.eval_on_selector_all(
        "#histogram .bar", "bars => bars.map(b => [b.dataset.version, b.dataset.count, b.className])"
    )
    assert bars == [[str(LATEST), "3", "bar latest"], [str(OLDER), "1", "bar"], ["no history", "1", "bar none"]]
    widths = page.eval_on_selector_all("#histogram .fill", "f => f.map(e => e.getBoundingClientRect().width)")
    assert widths[0] > widths[1] > 0  # drawn to scale: 3 schools against 1

    schools = tab.rows("schools-table", "school")
    assert set(schools) == {"school-dirty", "school-gone"}  # the schools not ok, only
    dirty = schools["school-dirty"]
    assert dirty["attrs"]["status"] == "dirty"
    assert dirty["cells"][:5] == ["school-dirty", "db1:5432", "dirty", str(OLDER), "1"]
    assert "failed halfway" in dirty["cells"][5] and "fix it, then resolve" in dirty["cells"][5]

    servers = tab.rows("servers-table", "server")
    assert servers["db1:5432"]["cells"][1:4] == ["healthy", "2026-12-04 10:00:01 UTC", "4"]
    assert servers["db2:5432"]["cells"][1] == "unhealthy" and "connection refused" in servers["db2:5432"]["cells"][5]

    onboardings = page.eval_on_selector_all("#onboardings-table tbody tr", "rows => rows.map(r => r.dataset.school)")
    assert onboardings == ["school-b", "school-a"]  # newest first
    counts = page.eval_on_selector_all("#counts .card[id]", "cards => cards.map(c => [c.id, c.dataset.count])")
    assert counts == [["count-schools", "5"], ["count-ok", "3"], ["count-not-ok", "2"], ["count-servers-healthy", "1"],
                      ["count-spares", "4"]]  # fmt: skip
    assert page.text_content("#surveyed-at") == "2026-12-04 10:00:00 UTC"
    assert page.text_content("#latest-version") == str(LATEST)
    assert page.text_content("#survey-age").endswith(" s")
    tab.clean()


def test_hostile_text_is_shown_as_text(tab: Tab) -> None:
    page = tab.open()
    tab.log_in()
    cell = tab.rows("schools-table", "school")["school-gone"]["cells"][5]
    assert HOSTILE in cell and f"check the server {HOSTILE}" in cell  # literally, entities and tags as typed
    assert page.eval_on_selector_all("main img, main b", "found => found.length") == 0
    assert page.title() == "Fleet: orchestrator"
    tab.clean()  # the image was never asked for


def test_the_page_refreshes_itself(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.log_in()
    assert "school-new" not in tab.rows("schools-table", "school")
    with stand_in.lock:
        stand_in.fleet["schools"].append(school("school-new", "locked", False, LATEST, message="the lock is held"))
        stand_in.fleet["surveyed_at"] = "2026-12-04T10:05:00+00:00"
    page.wait_for_selector('#schools-table tr[data-school="school-new"]', timeout=WAIT_MS)
    assert page.text_content("#surveyed-at") == "2026-12-04 10:05:00 UTC"
    assert int(page.get_attribute("body", "data-refreshes") or 0) >= 2
    tab.clean()


def test_survey_now_asks_for_a_new_survey(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.log_in()
    with stand_in.lock:
        assert all(path == "/v1/fleet" for path, _ in stand_in.requests if path.startswith("/v1/"))
    before = int(page.get_attribute("body", "data-refreshes") or 0)
    page.click("#survey-now")
    page.wait_for_function("n => Number(document.body.dataset.refreshes) > n", arg=before, timeout=WAIT_MS)
    with stand_in.lock:
        assert ("/v1/fleet?refresh=1", f"Bearer {TOKEN}") in stand_in.requests
    tab.clean()


def test_a_401_forgets_the_token_and_asks_again(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.log_in_refused("not-the-token")
    assert page.is_visible("#token-error") and "refused" in (page.text_content("#token-error") or "")
    assert tab.token_stored() is None and not page.is_visible("#dashboard")
    assert stand_in.fleet_requests() == ["Bearer not-the-token"]
    # The form stays as it is: no more reads without a new token (a few refresh periods of the stand-in's page).
    page.wait_for_timeout(1000)
    assert stand_in.fleet_requests() == ["Bearer not-the-token"] and page.is_visible("#token-error")

    tab.log_in()
    # The token is rotated on the service: the next refresh is refused, the data goes, the form comes back.
    with stand_in.lock:
        stand_in.token = "rotated-token"
    tab.state("login")
    assert not page.is_visible("#dashboard") and tab.token_stored() is None
    tab.log_in("rotated-token")
    assert "school-dirty" in tab.rows("schools-table", "school")
    # The browser reports each 401 answer as a failed resource load; nothing else may be in the console.
    assert [e for e in tab.errors if "401" not in e] == []
    assert tab.outside == []


def test_the_token_survives_a_reload_and_can_be_changed(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.log_in()
    page.reload()
    tab.state("ready")  # no form: the tab still holds the token
    page.click("#change-token")
    tab.state("login")
    assert tab.token_stored() is None
    tab.clean()


def test_a_service_in_trouble_keeps_the_last_answer_on_screen(tab: Tab, stand_in: StandIn) -> None:
    page = tab.open()
    tab.log_in()
    with stand_in.lock:
        stand_in.failing = True
    page.wait_for_selector("#problem:not([hidden])", timeout=WAIT_MS)
    assert "HTTP 500" in (page.text_content("#problem") or "")
    assert page.is_visible("#dashboard") and "school-dirty" in tab.rows("schools-table", "school")
    with stand_in.lock:
        stand_in.failing = False
    page.wait_for_selector("#problem[hidden]", state="attached", timeout=WAIT_MS)
    assert [e for e in tab.errors if "500" not in e] == [] and tab.outside == []


# --- the real service ------------------------------------------------------------------------------------------------
# `orchestrator serve` (uvicorn) over a registry on a real server: one school up to date, one dirty (its last file
# marked failed in the ledger), one behind, one on a server where nothing listens. What the page shows is what the
# service surveyed.


def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """Run a database helper in a thread of its own: Playwright's sync API keeps an event loop running in this one,
    and the helpers start their own."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(fn, *args).result()


@dataclass
class Live:
    service: Service
    pg: DevServer
    databases: list[str]  # to drop at the end


@pytest.fixture(scope="module")
def live(servers: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    pg: DevServer = servers.get(f"pg{system_major()}", system_major())
    tmp = tmp_path_factory.mktemp("dashboard")
    migrations = make_migrations(tmp / "migrations")
    ok, dirty, behind = (off_loop(make_school, pg, label) for label in ("dash_ok", "dash_dirty", "dash_behind"))
    nowhere = f"postgresql://postgres:${{PGPW}}@127.0.0.1:{free_port()}/dash_down"
    tenants = [("ok-a", registry_url(pg, ok), []), ("dirty-b", registry_url(pg, dirty), []),
               ("behind-c", registry_url(pg, behind), []), ("down-d", nowhere, [])]  # fmt: skip
    registry = write_registry(tmp / "tenants.yaml", tenants)
    for tenant, target in (("ok-a", None), ("dirty-b", None), ("behind-c", "2")):
        done = cli("migrate", "--registry", str(registry), "--migrations", str(migrations), "--tenant", tenant,
                   *(["--target", target] if target else []), "--yes")  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
    # A file that failed halfway, as SQLx leaves it: success false in the ledger.
    off_loop(execute_sync, pg.url(dirty), "UPDATE _sqlx_migrations SET success = false WHERE version = 3")
    service = start(tmp / "serve.log", "--registry", str(registry), "--migrations", str(migrations), "--spares", "0",
                    "--retries", "0", "--connect-timeout", "2s")  # fmt: skip
    live = Live(service, pg, [ok, dirty, behind])
    try:
        yield live
    finally:
        code = service.stop()
        for database in live.databases:
            off_loop(run_sync, drop_database, pg.url(), database)
        assert code == 0, service.log_text()


def test_the_real_service_s_fleet_on_the_page(browser: Any, live: Live) -> None:
    tab = Tab(browser, live.service.base)
    try:
        page = tab.open()
        tab.log_in(TOKEN)
        schools = tab.rows("schools-table", "school")
        assert set(schools) == {"dirty-b", "down-d"}, schools
        assert schools["dirty-b"]["attrs"]["status"] == "dirty"
        assert schools["down-d"]["attrs"]["status"] == "unreachable"
        fleet = live.service.call("GET", "/v1/fleet").body
        dirty = next(s for s in fleet["schools"] if s["tenant"] == "dirty-b")
        assert dirty["hint"] and dirty["hint"] in schools["dirty-b"]["cells"][5]  # the hint, as the service said it
        bars = page.eval_on_selector_all(
            "#histogram .bar", "bars => bars.map(b => [b.dataset.version, b.dataset.count])"
        )
        assert bars == [[str(row["version"]) if row["version"] is not None else "no history", str(row["schools"])]
                        for row in fleet["histogram"]]  # fmt: skip
        assert {"3", "2"} <= {version for version, _ in bars}  # ok-a (and dirty-b) at 3, behind-c at 2
        servers_shown = tab.rows("servers-table", "server")
        assert {s["server"] for s in fleet["servers"]} == set(servers_shown)
        assert sorted(s["attrs"]["healthy"] for s in servers_shown.values()) == ["false", "true"]
        assert page.get_attribute("#surveyed-at", "datetime") == fleet["surveyed_at"]
        # The page never shows a password: not the server's, not the token.
        assert PG_PASSWORD not in page.content() and TOKEN not in page.content()

        # An onboarding through the API shows up among the recent ones (the page reloaded: the tab keeps the token).
        new = unique_db_name("dash_new")
        live.databases.append(new)
        put = live.service.call("PUT", "/v1/schools/new-e", {"url": live.pg.url(new)})
        assert put.status == 200, put.text
        page.reload()
        tab.state("ready")
        onboardings = tab.rows("onboardings-table", "school")
        assert onboardings["new-e"]["attrs"]["status"] == "applied"
        # "Survey now": a new survey, which knows the new school.
        surveyed = page.get_attribute("#surveyed-at", "datetime")
        page.click("#survey-now")
        page.wait_for_function("t => document.getElementById('surveyed-at').dateTime !== t", arg=surveyed,
                               timeout=WAIT_MS)  # fmt: skip
        assert page.get_attribute("#count-schools", "data-count") == "5"
        tab.clean()
    finally:
        tab.context.close()


def test_the_real_service_refuses_a_wrong_token_and_the_form_comes_back(browser: Any, live: Live) -> None:
    tab = Tab(browser, live.service.base)
    try:
        page = tab.open()
        tab.log_in_refused("not-the-token")
        assert page.is_visible("#token-error") and not page.is_visible("#dashboard")
        assert tab.token_stored() is None
        tab.log_in(TOKEN)
        assert [e for e in tab.errors if "401" not in e] == [] and tab.outside == []
    finally:
        tab.context.close()
