"""The audit's Prometheus and HTML outputs, from hand-built reports (no database needed).

The Chromium test renders the page in a real headless browser (Debian's `chromium`) and reads back the DOM it built.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from orchestrator.audit.html import render_html
from orchestrator.audit.metrics import render_prometheus, write_prometheus
from orchestrator.audit.model import AuditReport, Finding, SchoolAudit
from orchestrator.errors import Unreachable
from orchestrator.outcome import DatabaseResult, Status
from orchestrator.registry import Tenant, single_tenant
from orchestrator.target import DatabaseTarget

LATEST = 20240301000000
OLDER = 20240201000000
SCHEMA_FINDING = "students: index idx_students_email not in migrations"
CHROMIUM = Path("/usr/bin/chromium")
EVIL = "<script>alert(1)</script>"


def _school(
    name: str,
    *,
    status: Status = Status.UP_TO_DATE,
    version: int | None = LATEST,
    pending: list[int] | None = None,
    findings: list[Finding] | None = None,
    fingerprint: str | None = "fp-main",
    host: str = "db1.internal",
    error: Unreachable | None = None,
) -> SchoolAudit:
    # The password must never reach an output: the result only carries host:port.
    tenant = single_tenant(f"postgresql://migrator:s3cret-pw@{host}:5432/{name}")
    result = DatabaseResult(
        database=name,
        server=tenant.server,
        status=status,
        version_before=version,
        version_after=version,
        pending=pending or [],
        error=error,
    )
    major = None if error else 15  # an unreached school's server version is unknown
    return SchoolAudit(tenant, result, findings or [], fingerprint, expected_fingerprint="fp-main", server_major=major)


def _report(*, extra: list[SchoolAudit] | None = None, interrupted: bool = False) -> AuditReport:
    started = datetime(2024, 3, 5, 2, 0, 0, tzinfo=UTC)
    schools = [
        _school("school_a"),
        _school("school_b"),
        _school("school_c", host="db2.internal"),
        _school(
            "school_schema",
            status=Status.DRIFT,
            findings=[
                Finding("schema", SCHEMA_FINDING),
                Finding("schema", "grades: column note text not in migrations"),
            ],
            fingerprint="fp-odd",
        ),
        _school(
            "school_pending",
            status=Status.PENDING,
            version=OLDER,
            pending=[LATEST],
            findings=[Finding("pending", f"1 migration pending: {LATEST}")],
            fingerprint="fp-older",
        ),
        _school(
            "school_down",
            status=Status.UNREACHABLE,
            version=None,
            fingerprint=None,
            host="db3.internal",
            error=Unreachable("connection refused by db3.internal:5432"),
        ),
        *(extra or []),
    ]
    return AuditReport(
        schools=schools,
        started_at=started,
        finished_at=started + timedelta(seconds=42.5),
        migrations_dirs=["migrations"],
        latest_version=LATEST,
        interrupted=interrupted,
    )


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(metric name, sorted labels): value} from the exposition text, via the reference parser."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        assert family.type == "gauge", family.name
        assert family.documentation, f"{family.name} has no HELP"
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _school_labels(name: str, host: str = "db1.internal") -> tuple[tuple[str, str], ...]:
    return (("school", name), ("server", f"{host}:5432"))


# --- Prometheus ------------------------------------------------------------------------------------------------------


def test_prometheus_text_parses_with_the_right_values() -> None:
    report = _report()
    text = render_prometheus(report)
    s = _samples(text)

    assert s[("orchestrator_audit_school_drift", _school_labels("school_a"))] == 0
    assert s[("orchestrator_audit_school_drift", _school_labels("school_schema"))] == 1
    assert s[("orchestrator_audit_school_drift", _school_labels("school_pending"))] == 1
    # Not audited is not drift: no drift series (it would page as drift), a series of its own saying why.
    assert ("orchestrator_audit_school_drift", _school_labels("school_down", "db3.internal")) not in s
    down = (*_school_labels("school_down", "db3.internal"), ("reason", "unreachable"))
    assert s[("orchestrator_audit_school_not_audited", tuple(sorted(down)))] == 1
    assert [k for k in s if k[0] == "orchestrator_audit_school_not_audited"] == [
        ("orchestrator_audit_school_not_audited", tuple(sorted(down)))
    ]
    assert s[("orchestrator_audit_school_pending_migrations", _school_labels("school_pending"))] == 1
    assert s[("orchestrator_audit_school_pending_migrations", _school_labels("school_a"))] == 0
    assert s[("orchestrator_audit_school_reachable", _school_labels("school_c", "db2.internal"))] == 1
    assert s[("orchestrator_audit_school_reachable", _school_labels("school_down", "db3.internal"))] == 0
    assert s[("orchestrator_audit_school_version", _school_labels("school_pending"))] == OLDER
    assert s[("orchestrator_audit_school_version", _school_labels("school_a"))] == LATEST
    # Unknown is absent, not a misleading 0.
    assert ("orchestrator_audit_school_version", _school_labels("school_down", "db3.internal")) not in s
    assert ("orchestrator_audit_school_pending_migrations", _school_labels("school_down", "db3.internal")) not in s

    assert s[("orchestrator_audit_last_run_timestamp_seconds", ())] == report.finished_at.timestamp()
    assert s[("orchestrator_audit_duration_seconds", ())] == 42.5
    assert s[("orchestrator_audit_interrupted", ())] == 0
    assert s[("orchestrator_audit_latest_migration_version", ())] == LATEST
    states = {k[1][0][1]: v for k, v in s.items() if k[0] == "orchestrator_audit_schools"}
    assert states == {"clean": 3, "drift": 2, "schema_drift": 1, "pending": 1, "not_audited": 1, "unreachable": 1,
                      "unreadable": 0, "no_reference": 0}  # fmt: skip
    assert s[("orchestrator_audit_schema_fingerprints", ())] == 3  # fp-main, fp-odd, fp-older

    # The exact lines node_exporter will read (with a float-formatted value, as the client library writes them).
    assert 'orchestrator_audit_school_drift{school="school_schema",server="db1.internal:5432"} 1.0\n' in text
    assert "# TYPE orchestrator_audit_school_drift gauge\n" in text
    assert "s3cret" not in text and "migrator" not in text


def test_prometheus_escapes_label_values() -> None:
    odd = 'we"ird\\school\nname'
    tenant = Tenant(odd, DatabaseTarget.parse("postgresql://u:pw@db9:5433/odd"))
    school = SchoolAudit(tenant, DatabaseResult("odd", tenant.server, Status.UP_TO_DATE, LATEST, LATEST))
    text = render_prometheus(_report(extra=[school]))
    assert 'school="we\\"ird\\\\school\\nname"' in text
    s = _samples(text)  # and the reference parser reads the original value back
    assert s[("orchestrator_audit_school_drift", (("school", odd), ("server", "db9:5433")))] == 0


def test_write_prometheus_is_atomic_and_overwrites(tmp_path: Path) -> None:
    path = tmp_path / "textfile" / "orchestrator_audit.prom"  # the directory is created if missing
    write_prometheus(_report(), path)
    first = path.read_text(encoding="utf-8")
    assert "orchestrator_audit_interrupted 0.0" in first
    write_prometheus(_report(interrupted=True), str(path))
    assert "orchestrator_audit_interrupted 1.0" in path.read_text(encoding="utf-8")
    # Only the final file: the temp file was renamed over it, none is left for the collector to trip on.
    assert sorted(p.name for p in path.parent.iterdir()) == ["orchestrator_audit.prom"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o644)


# --- HTML ------------------------------------------------------------------------------------------------------------


_INLINE = {"span", "code", "time", "b", "strong", "em", "a"}


class _Page(HTMLParser):
    """Just enough of the DOM for assertions: element text by id, attributes of every element, the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: dict[str, list[str]] = {}
        self._open: list[str | None] = []  # the id of each open element (None if it has none)
        self.all_text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.elements.append((tag, a))
        self._break(tag)
        if tag not in {"meta", "br", "img", "input", "link"}:
            self._open.append(a.get("id"))
            if a.get("id"):
                self.texts.setdefault(str(a["id"]), [])

    def handle_endtag(self, tag: str) -> None:
        self._break(tag)
        if self._open:
            self._open.pop()

    def _break(self, tag: str) -> None:
        # Block elements separate words as a browser's innerText would; inline ones do not.
        if tag not in _INLINE:
            self.handle_data(" ")

    def handle_data(self, data: str) -> None:
        self.all_text.append(data)
        for open_id in self._open:
            if open_id:
                self.texts[open_id].append(data)

    def text(self, element_id: str) -> str:
        return " ".join("".join(self.texts[element_id]).split())

    def with_attr(self, name: str) -> list[tuple[str, dict[str, str | None]]]:
        return [(tag, a) for tag, a in self.elements if name in a]


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def test_html_is_self_contained() -> None:
    html = render_html(_report())
    assert "http://" not in html and "https://" not in html
    assert "<link" not in html.lower() and "src=" not in html.lower() and "@import" not in html
    assert "url(" not in html  # no CSS fetches either
    assert "s3cret" not in html
    assert html.startswith("<!DOCTYPE html>")


def test_html_content() -> None:
    page = _parse(render_html(_report()))
    counts = {a["id"]: a["data-count"] for _, a in page.elements if str(a.get("id", "")).startswith("count-")}
    assert counts == {
        "count-schools": "6",
        "count-clean": "3",
        "count-drift": "2",
        "count-schema_drift": "1",
        "count-pending": "1",
        "count-not_audited": "1",
        "count-unreachable": "1",
        "count-unreadable": "0",
        "count-no_reference": "0",
    }
    bars = {a["data-version"]: a["data-count"] for _, a in page.elements if "bar" in str(a.get("class", "")).split()}
    assert bars == {str(LATEST): "4", str(OLDER): "1"}
    assert f"{LATEST} (latest)" in page.text("histogram")
    assert page.text("fingerprint-summary") == "3 identical, 2 differ (1 could not be read)."
    assert "school_schema" in page.text("fingerprint-groups") and "school_pending" in page.text("fingerprint-groups")

    rows = {a["data-school"] for tag, a in page.with_attr("data-school") if tag == "tr"}
    assert rows == {"school_schema", "school_pending", "school_down"}
    table = page.text("drift-table")
    assert SCHEMA_FINDING in table and "schema drift" in table
    assert "school_down" not in table, "a school not audited is listed apart from drift"
    assert table.count("PostgreSQL 15") == 2, "the server's version, where the school was reached"
    apart = page.text("not-audited-table")
    assert "school_down" in apart and "unreachable" in apart and "connection refused by db3.internal:5432" in apart
    assert page.text("verdict") == "2 of 6 schools drifted; 1 could not be audited."
    assert "3 clean schools" in page.text("clean-schools")


def test_html_escapes_untrusted_values() -> None:
    # Ids from a registry are slugs, but the page must not rely on it: findings carry text from live databases.
    evil_tenant = Tenant(EVIL, DatabaseTarget.parse("postgresql://u:pw@db1:5432/evil"))
    evil = SchoolAudit(
        evil_tenant,
        DatabaseResult("evil", evil_tenant.server, Status.DRIFT, LATEST, LATEST),
        [Finding("schema", 'table "<img src=x onerror=alert(2)>" not in migrations')],
        fingerprint="fp-main",
    )
    html = render_html(_report(extra=[evil]))
    assert "<script>" not in html and "<img" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = _parse(html)
    assert EVIL in {a.get("data-school") for _, a in page.with_attr("data-school")}
    assert EVIL in page.text("drift-table")


def test_html_for_a_clean_fleet() -> None:
    started = datetime(2024, 3, 5, 2, 0, 0, tzinfo=UTC)
    report = AuditReport([_school(f"s{i}") for i in range(5)], started, started, "migrations", LATEST)
    page = _parse(render_html(report))
    assert page.text("verdict") == "All 5 schools are clean."
    assert page.text("fingerprint-summary").startswith("5 identical, 0 differ")
    assert "no-drift" in page.texts and "drift-table" not in page.texts


# --- Chromium --------------------------------------------------------------------------------------------------------


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Headless Chromium with nothing that reaches the network; `--no-sandbox` because CI runs as root."""
    return subprocess.run(
        [
            str(CHROMIUM),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.chromium
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (apt-get install -y chromium)")
def test_chromium_renders_the_page(tmp_path: Path) -> None:
    page_file = tmp_path / "audit.html"
    page_file.write_text(render_html(_report()), encoding="utf-8")
    url = page_file.as_uri()

    dumped = _chromium(tmp_path, "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    dom = _parse(dumped.stdout)
    # What the browser built: the summary numbers, the bars with their labels, the drift row and its findings.
    assert dom.text("count-schools") == "6 schools"
    assert dom.text("count-clean") == "3 clean"
    assert dom.text("count-schema_drift") == "1 schema drift"
    assert dom.text("count-unreachable") == "1 unreachable"
    histogram = dom.text("histogram")
    assert f"{LATEST} (latest)" in histogram and str(OLDER) in histogram
    bars = [a for tag, a in dom.elements if tag == "g" and "bar" in str(a.get("class", "")).split()]
    assert len(bars) == 2 and [tag for tag, _ in dom.elements].count("rect") == 2
    assert re.search(r"\b3 identical, 2 differ\b", dom.text("fingerprints"))
    schema_rows = [a for tag, a in dom.elements if tag == "tr" and a.get("data-school") == "school_schema"]
    assert schema_rows and "schema" in str(schema_rows[0]["class"]).split()
    assert SCHEMA_FINDING in dom.text("drift-table")

    # And it paints: a screenshot of a real size (a blank or failed render is a few hundred bytes).
    shot = tmp_path / "audit.png"
    painted = _chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,1400", "--hide-scrollbars", url)
    assert painted.returncode == 0, painted.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (1280, 1400)
    assert len(png) > 20_000
