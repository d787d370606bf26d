"""The operators' live page (`GET /` of `orchestrator serve`): one self-contained HTML document.

Everything is inline (CSS, one script, no fonts, no images, no links out) and a Content-Security-Policy in the page
itself allows exactly that script and that style (by their SHA-256) and requests to the page's own origin only: the
page cannot fetch anything else, even if something slipped into the DOM. The script asks for the API token once
(a small form; kept in `sessionStorage`, sent as `Authorization: Bearer`, never in a URL), reads `GET v1/fleet`
every few seconds and builds the page with `textContent` and `setAttribute` only: school ids, messages and hints
come from the registry and from live databases, so they are untrusted text here. A 401 forgets the token and shows
the form again.

Stable hooks for tests and scrapers: `body[data-state]` (`login`, `loading`, `ready`, `error`) and
`body[data-refreshes]` (fleet answers rendered), `id="token-form"`, `id="counts"` (cards `id="count-<key>"` with
`data-count`), `id="histogram"` (rows `class="bar"` with `data-version`/`data-count`), `id="servers-table"` (rows
with `data-server`), `id="schools-table"` (the schools not ok, rows with `data-school`/`data-status`),
`id="onboardings-table"` (rows with `data-school`), `id="surveyed-at"`, `id="survey-age"`, `id="problem"`,
`id="survey-now"` (a new survey: `?refresh=1`), `id="change-token"`.
"""

from __future__ import annotations

import base64
import hashlib
from html import escape

from .. import __version__

#: how often the page reads `/v1/fleet` again (seconds); the service's survey has its own age (`--survey-every`)
REFRESH_S = 5.0

_CSS = """
:root { --ok: #1a7f37; --warn: #9a6700; --bad: #cf222e; --grey: #6e7781; --blue: #0969da; --ink: #1f2328;
  --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--bg); max-width: 1280px; }
[hidden] { display: none !important; }
header { display: flex; align-items: baseline; gap: 16px; flex-wrap: wrap; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 16px; flex: 1; }
td.mono, time { white-space: nowrap; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
button { font: inherit; padding: 4px 12px; border: 1px solid var(--line); border-radius: 6px; background: var(--soft);
  cursor: pointer; }
#problem { padding: 8px 14px; border-radius: 6px; margin: 12px 0; background: #fff8c5; border: 1px solid #eed888;
  color: var(--warn); font-weight: 600; }
#token-form { max-width: 420px; margin: 40px 0; padding: 18px 20px; border: 1px solid var(--line); border-radius: 8px;
  background: var(--soft); }
#token-form label { display: block; font-weight: 600; margin-bottom: 8px; }
#token-form input { width: 100%; padding: 6px 8px; font: inherit; border: 1px solid var(--line); border-radius: 6px;
  margin-bottom: 10px; }
#token-form .hint { margin: 8px 0 0; font-size: 12.5px; }
#token-error { color: var(--bad); margin: 8px 0 0; font-weight: 600; }
#counts { display: flex; flex-wrap: wrap; gap: 12px; }
.card { min-width: 120px; padding: 10px 14px; border: 1px solid var(--line); border-left: 6px solid var(--c);
  border-radius: 6px; background: var(--soft); --c: var(--blue); }
.card .num { display: block; font-size: 26px; font-weight: 700; color: var(--c); }
.card .label { color: var(--muted); }
.card.good { --c: var(--ok); } .card.bad { --c: var(--bad); } .card.zero { --c: var(--grey); }
#bars { max-width: 760px; }
.bar { display: grid; grid-template-columns: 200px 1fr 60px; align-items: center; gap: 8px; margin: 4px 0; }
.bar .label { text-align: right; font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 12.5px; }
.bar.latest .label { font-weight: 700; }
.bar .track { height: 20px; }
.bar .fill { height: 100%; min-width: 2px; border-radius: 3px; background: var(--warn); }
.bar.latest .fill { background: var(--ok); } .bar.none .fill { background: var(--grey); }
.bar .count { font-variant-numeric: tabular-nums; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; background: var(--c, var(--grey));
  font-size: 12px; font-weight: 600; white-space: nowrap; }
.badge.good { --c: var(--ok); } .badge.bad { --c: var(--bad); } .badge.warn { --c: var(--warn); }
.hint { color: var(--muted); }
.empty { color: var(--ok); font-weight: 600; }
.more { color: var(--muted); }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""

# The page's only script. Data goes into the DOM through textContent / append(string) / setAttribute, never as
# markup; statuses become CSS classes only through the fixed table below.
_SCRIPT = r"""
"use strict";
(() => {
  const KEY = "orchestrator.api-token";
  const REFRESH_MS = Math.max(200, Number(document.body.dataset.refreshMs) || 5000);
  const MAX_ROWS = 500;      // schools not ok shown; the rest are counted
  const MAX_ONBOARDINGS = 50;
  const BAD = new Set(["failed", "dirty", "modified", "missing", "unreachable", "pooled", "unreadable"]);
  const $ = (id) => document.getElementById(id);
  let memoryToken = null;    // when sessionStorage is not available (a locked-down profile)
  let timer = null, ticker = null, fleet = null, fetchedAt = 0, refreshes = 0, running = null;

  function getToken() {
    try { return sessionStorage.getItem(KEY) || memoryToken; } catch (e) { return memoryToken; }
  }
  function setToken(token) {
    memoryToken = token;
    try { sessionStorage.setItem(KEY, token); memoryToken = null; } catch (e) { /* kept in memory only */ }
  }
  function forget() {
    memoryToken = null;
    try { sessionStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = String(value);
      else node.setAttribute(key, String(value));
    }
    for (const child of children || []) node.append(child);
    return node;
  }
  const num = (value) => (typeof value === "number" && isFinite(value) ? value : 0);
  const versionText = (v) => (v === null || v === undefined ? "no history" : String(v));

  function when(iso) {
    if (!iso) return "never";
    const t = new Date(iso);
    if (isNaN(t.getTime())) return String(iso);
    return t.toISOString().slice(0, 19).replace("T", " ") + " UTC";
  }
  function age(seconds) {
    const s = Math.max(0, Math.round(num(seconds)));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function timeCell(iso) {
    return el("td", {}, [el("time", {datetime: iso || null, text: when(iso)})]);
  }
  function badge(status) {
    const kind = status === "applied" || status === "up_to_date" || status === "ok" ? "good"
      : BAD.has(status) ? "bad" : "warn";
    return el("span", {class: "badge " + kind, text: status});
  }
  function fill(tbody, rows) { tbody.replaceChildren(...rows); }

  function setState(state) { document.body.dataset.state = state; }
  function problem(text) { $("problem").textContent = text; $("problem").hidden = !text; }

  function showForm(message) {
    clearTimeout(timer);
    if (running) running.abort();
    running = null;
    fleet = null;
    $("dashboard").hidden = true;
    $("survey").hidden = true;
    $("change-token").hidden = true;
    $("survey-now").hidden = true;
    problem("");
    $("token-error").textContent = message || "";
    $("token-error").hidden = !message;
    $("token-form").hidden = false;
    setState("login");
    $("token-input").focus();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(load, REFRESH_MS);
  }

  async function load(fresh) {
    clearTimeout(timer);
    const token = getToken();
    if (!token) { showForm(""); return; }
    if (document.hidden && fleet) return;  // a tab in the background asks nothing; visibilitychange resumes
    if (running) running.abort();
    const controller = new AbortController();
    running = controller;
    if (!fleet) setState("loading");
    if (fresh === true) $("survey-now").disabled = true;  // a survey can take a while over a large fleet
    try {
      // ?refresh=1: a new survey now (the button), else the service's, no older than its --survey-every.
      const answer = await fetch(fresh === true ? "v1/fleet?refresh=1" : "v1/fleet", {
        headers: {"Authorization": "Bearer " + token, "Accept": "application/json"},
        cache: "no-store", credentials: "omit", redirect: "error", signal: controller.signal,
      });
      if (answer.status === 401) { forget(); showForm("The service refused this token: enter it again."); return; }
      if (!answer.ok) throw new Error("GET /v1/fleet answered HTTP " + answer.status);
      const data = await answer.json();
      if (controller.signal.aborted) return;
      fleet = data; fetchedAt = Date.now(); refreshes += 1;
      render(data);
      problem("");
      setState("ready");
    } catch (error) {
      if (controller.signal.aborted) return;
      problem("Cannot refresh: " + (error && error.message ? error.message : String(error))
        + (fleet ? "; showing the answer of " + when(new Date(fetchedAt).toISOString()) : ""));
      if (!fleet) setState("error");
    } finally {
      // No next read while the form is up (a refused or forgotten token): the next one follows a new token.
      if (running === controller) {
        running = null;
        $("survey-now").disabled = false;
        if (getToken()) schedule();
      }
    }
  }

  function tick() {
    if (!fleet) return;
    $("survey-age").textContent = age(num(fleet.age_s) + (Date.now() - fetchedAt) / 1000);
  }

  function card(key, count, label, kind) {
    const css = "card " + (count === 0 && kind !== "good" ? "zero" : kind);
    return el("div", {class: css, id: "count-" + key, "data-count": count},
      [el("span", {class: "num", text: String(count)}), el("span", {class: "label", text: label})]);
  }

  function render(data) {
    const schools = Array.isArray(data.schools) ? data.schools : [];
    const servers = Array.isArray(data.servers) ? data.servers : [];
    const onboardings = Array.isArray(data.onboardings) ? data.onboardings : [];
    const histogram = Array.isArray(data.histogram) ? data.histogram : [];
    const notOk = schools.filter((s) => !s.ok);
    const healthy = servers.filter((s) => s.healthy).length;
    const spares = servers.reduce((n, s) => n + num(s.spares_ready), 0);

    $("surveyed-at").textContent = when(data.surveyed_at);
    $("surveyed-at").setAttribute("datetime", String(data.surveyed_at || ""));
    $("latest-version").textContent = data.latest_version === null || data.latest_version === undefined
      ? "none" : String(data.latest_version);
    $("updated").textContent = when(new Date(fetchedAt).toISOString());
    tick();

    const byStatus = new Map();
    for (const s of notOk) byStatus.set(String(s.status), (byStatus.get(String(s.status)) || 0) + 1);
    const cards = [
      card("schools", schools.length, "schools", ""),
      card("ok", schools.length - notOk.length, "ok", "good"),
      card("not-ok", notOk.length, "not ok", notOk.length ? "bad" : ""),
      card("servers-healthy", healthy, "of " + servers.length + " servers healthy",
        healthy === servers.length ? "good" : "bad"),
      card("spares", spares, "spares ready", ""),
    ];
    for (const [status, n] of [...byStatus].sort((a, b) => b[1] - a[1])) {
      cards.push(el("div", {class: "card bad", "data-status": status, "data-count": n},
        [el("span", {class: "num", text: String(n)}), el("span", {class: "label", text: status})]));
    }
    $("counts").replaceChildren(...cards);

    const biggest = Math.max(1, ...histogram.map((row) => num(row.schools)));
    $("bars").replaceChildren(...histogram.map((row) => {
      const latest = row.version !== null && row.version === data.latest_version;
      const n = num(row.schools);
      const track = el("div", {class: "track"}, [el("div", {class: "fill"})]);
      track.firstChild.style.width = (100 * n / biggest).toFixed(2) + "%";
      return el("div", {class: "bar" + (latest ? " latest" : row.version === null ? " none" : ""),
        "data-version": versionText(row.version), "data-count": n,
        title: versionText(row.version) + ": " + n + (n === 1 ? " school" : " schools")}, [
        el("span", {class: "label", text: versionText(row.version) + (latest ? " (latest)" : "")}),
        track, el("span", {class: "count", text: String(n)})]);
    }));
    $("no-versions").hidden = histogram.length > 0;

    fill($("servers-table").tBodies[0], servers.map((s) => el("tr", {"data-server": s.server,
      "data-healthy": s.healthy ? "true" : "false"}, [
      el("td", {class: "mono", text: s.server}),
      el("td", {}, [el("span", {class: "badge " + (s.healthy ? "good" : "bad"),
        text: s.healthy ? "healthy" : "unhealthy"})]),
      timeCell(s.last_answer_at),
      el("td", {class: "num", text: String(num(s.spares_ready))}),
      el("td", {class: "mono", text: s.template || ""}),
      el("td", {text: s.error || ""}),
    ])));

    const shown = [...notOk].sort((a, b) => String(a.status).localeCompare(String(b.status))
      || String(a.tenant).localeCompare(String(b.tenant))).slice(0, MAX_ROWS);
    fill($("schools-table").tBodies[0], shown.map((s) => el("tr", {"data-school": s.tenant,
      "data-status": s.status}, [
      el("td", {class: "mono", text: s.tenant}),
      el("td", {class: "mono", text: s.server}),
      el("td", {}, [badge(String(s.status))]),
      el("td", {class: "mono", text: s.version === null || s.version === undefined ? "\u2014" : String(s.version)}),
      el("td", {class: "num", text: String(num(s.pending))}),
      el("td", {}, [el("div", {class: "message", text: s.message || ""}),
        el("div", {class: "hint", text: s.hint || ""})]),
    ])));
    $("schools-table").hidden = notOk.length === 0;
    $("all-ok").hidden = notOk.length > 0 || schools.length === 0;
    $("schools-more").textContent = notOk.length > shown.length ? "and " + (notOk.length - shown.length) + " more" : "";

    const recent = [...onboardings].sort((a, b) => String(b.at).localeCompare(String(a.at))).slice(0, MAX_ONBOARDINGS);
    fill($("onboardings-table").tBodies[0], recent.map((o) => el("tr", {"data-school": o.tenant,
      "data-status": o.status}, [
      timeCell(o.at),
      el("td", {class: "mono", text: o.tenant}),
      el("td", {}, [badge(String(o.status))]),
      el("td", {text: o.path}),
      el("td", {class: "num", text: num(o.ms).toFixed(1) + " ms"}),
    ])));
    $("onboardings-table").hidden = recent.length === 0;
    $("no-onboardings").hidden = recent.length > 0;

    document.body.dataset.refreshes = String(refreshes);
    $("survey").hidden = false;
    $("change-token").hidden = false;
    $("survey-now").hidden = false;
    $("token-form").hidden = true;
    $("dashboard").hidden = false;
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token-input").value.trim();
    $("token-input").value = "";
    if (!token) return;
    setToken(token);
    $("token-form").hidden = true;
    load();
  });
  $("change-token").addEventListener("click", () => { forget(); showForm(""); });
  $("survey-now").addEventListener("click", () => load(true));
  document.addEventListener("visibilitychange", () => { if (!document.hidden && !running) load(); });
  ticker = setInterval(tick, 1000);
  load();
})();
"""

_BODY = """<header><h1>Fleet</h1>
<p class="meta" id="survey" hidden>Surveyed <time id="surveyed-at"></time>, <span id="survey-age"></span> ago;
latest migration <code id="latest-version"></code>; page updated <span id="updated"></span>.</p>
<button type="button" id="survey-now" hidden>Survey now</button>
<button type="button" id="change-token" hidden>Change token</button></header>
<div id="problem" role="alert" hidden></div>
<form id="token-form" method="post" autocomplete="off" hidden>
<label for="token-input">API token</label>
<input id="token-input" name="token" type="password" autocomplete="off" spellcheck="false" required>
<button type="submit">Show the fleet</button>
<p class="hint">Kept for this browser tab only, and sent to this service alone.</p>
<p id="token-error" role="alert" hidden></p></form>
<main id="dashboard" hidden>
<section id="counts" aria-label="fleet summary"></section>
<section id="histogram"><h2>Versions</h2><div id="bars"></div>
<p id="no-versions" hidden>No school answered.</p></section>
<section id="servers"><h2>Servers</h2><table id="servers-table"><thead><tr><th>Server</th><th>Health</th>
<th>Last answer</th><th>Spares ready</th><th>Template</th><th>Error</th></tr></thead><tbody></tbody></table></section>
<section id="schools"><h2>Schools not ok</h2><p id="all-ok" class="empty" hidden>Every school is ok.</p>
<table id="schools-table"><thead><tr><th>School</th><th>Server</th><th>Status</th><th>Version</th><th>Pending</th>
<th>Message and hint</th></tr></thead><tbody></tbody></table><p id="schools-more" class="more"></p></section>
<section id="onboardings"><h2>Recent onboardings</h2><p id="no-onboardings" hidden>None since the service started.</p>
<table id="onboardings-table"><thead><tr><th>At</th><th>School</th><th>Status</th><th>Path</th><th>Time</th></tr>
</thead><tbody></tbody></table></section>
</main>"""


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


# Only this script and this style run; requests go to the page's own origin (connect-src) and nowhere else; the
# favicon is an empty data: URL so the browser asks for none.
_CSP = (
    f"default-src 'none'; script-src '{_sha256(_SCRIPT)}'; style-src '{_sha256(_CSS)}'; connect-src 'self'; "
    "img-src data:; form-action 'self'; base-uri 'none'"
)


def render_dashboard(*, refresh_s: float = REFRESH_S) -> str:
    """The whole page. It holds no fleet data: the script reads `/v1/fleet` with the operator's token."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{escape(_CSP)}">'
        '<meta name="referrer" content="no-referrer">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>Fleet: orchestrator</title><style>{_CSS}</style></head>\n"
        f'<body data-state="loading" data-refreshes="0" data-refresh-ms="{round(refresh_s * 1000)}">\n{_BODY}\n'
        f"<footer>orchestrator {escape(__version__)} · refreshes every {refresh_s:g} s</footer>\n"
        f"<script>{_SCRIPT}</script>\n</body></html>\n"
    )
