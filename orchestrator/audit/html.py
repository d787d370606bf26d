"""The audit as one self-contained HTML page: what a DBA opens in the morning.

Everything is inline (CSS, an SVG chart, no scripts, no fonts, no links out), so the page can be mailed, attached to
a CI run or opened from a file share without network access, and cannot leak anything by fetching. Every value from
the report goes through `html.escape`: school ids, servers and finding texts come from the registry and from live
databases, so they are untrusted text here.

Stable hooks for tests and scrapers: `id="summary"` (cards `id="count-<state>"` with `data-count`), `id="histogram"`
(bars `class="bar"` with `data-version`/`data-count`), `id="fingerprint-summary"`, `id="drift-table"` and
`id="not-audited-table"` (rows with `data-school`; a school that could not be read or compared is listed apart from
drift) and `id="clean-schools"`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape

from .. import __version__
from .model import AuditReport, SchoolAudit

#: how many differing schools to name per fingerprint group before "and N more"
_LIST_LIMIT = 20

# (state key in AuditReport.counts(), label shown, css class)
_CARDS = (
    ("schools", "schools", "total"),
    ("clean", "clean", "clean"),
    ("drift", "drift", "drift"),
    ("schema_drift", "schema drift", "schema"),
    ("pending", "pending", "pending"),
    ("not_audited", "not audited", "unreachable"),
    ("unreachable", "unreachable", "unreachable"),
    ("unreadable", "unreadable", "unreachable"),
    ("no_reference", "no reference", "unreachable"),
)

_CSS = """
:root { --clean: #1a7f37; --drift: #bc4c00; --schema: #cf222e; --pending: #9a6700; --unreachable: #6e7781;
  --total: #0969da; --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --bg: #ffffff; --soft: #f6f8fa; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--ink); background: var(--bg); max-width: 1200px; }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 16px; margin: 28px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
.meta { color: var(--muted); margin: 0 0 16px; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; font-size: 12.5px; }
.server .major { font-family: inherit; color: #666; white-space: nowrap; }
#verdict { padding: 10px 14px; border-radius: 6px; font-weight: 600; margin: 12px 0; }
#verdict.clean { background: #dafbe1; color: var(--clean); border: 1px solid #aceebb; }
#verdict.drift { background: #ffebe9; color: var(--schema); border: 1px solid #ffcecb; }
#verdict.not-audited { background: #fff8c5; color: var(--pending); border: 1px solid #eed888; }
.interrupted { background: #fff8c5; border: 1px solid #eed888; color: var(--pending); padding: 8px 14px;
  border-radius: 6px; margin: 12px 0; }
#summary { display: flex; flex-wrap: wrap; gap: 12px; }
.card { min-width: 130px; padding: 10px 14px; border: 1px solid var(--line); border-left: 6px solid var(--c);
  border-radius: 6px; background: var(--soft); }
.card .num { display: block; font-size: 26px; font-weight: 700; color: var(--c); }
.card .label { color: var(--muted); }
.card.zero .num { color: var(--muted); }
.total { --c: var(--total); } .clean { --c: var(--clean); } .drift { --c: var(--drift); }
.schema { --c: var(--schema); } .pending { --c: var(--pending); } .unreachable { --c: var(--unreachable); }
#histogram svg { width: 100%; max-width: 760px; height: auto; display: block; }
#histogram .bar-label, #histogram .bar-count { font: 12.5px ui-monospace, Menlo, Consolas, monospace;
  fill: var(--ink); }
#histogram .bar rect { fill: var(--pending); }
#histogram .bar.latest rect { fill: var(--clean); }
#histogram .bar.none rect { fill: var(--unreachable); }
#histogram .latest .bar-label { font-weight: 700; }
#fingerprint-summary { font-size: 15px; font-weight: 600; }
#fingerprint-groups li { margin: 4px 0; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; vertical-align: top; padding: 6px 10px; border-bottom: 1px solid var(--line); }
th { background: var(--soft); font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.school td:first-child { border-left: 4px solid var(--c); font-weight: 600; }
.status { display: inline-block; padding: 1px 8px; border-radius: 10px; color: #fff; background: var(--c);
  font-size: 12px; font-weight: 600; white-space: nowrap; }
ul.findings { margin: 0; padding-left: 18px; }
ul.findings li { margin: 1px 0; }
.kind { display: inline-block; min-width: 64px; color: var(--muted); font-size: 12px; }
.behind { color: var(--pending); font-weight: 600; }
.none-found { color: var(--clean); font-weight: 600; }
details { margin-top: 14px; }
summary { cursor: pointer; font-weight: 600; }
ul.clean-list { columns: 4 180px; margin: 8px 0; padding-left: 18px; }
footer { margin-top: 36px; color: var(--muted); font-size: 12px; }
"""


def _when(moment: datetime) -> str:
    """A human time; UTC when the datetime knows its zone (the audit runs on servers in UTC)."""
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _version(version: int | None) -> str:
    return "no history" if version is None else str(version)


def _summary(report: AuditReport) -> str:
    counts = report.counts()
    cards = []
    for key, label, css in _CARDS:
        n = counts[key]
        zero = " zero" if n == 0 and key != "clean" else ""
        cards.append(
            f'<div class="card {css}{zero}" id="count-{key}" data-count="{n}">'
            f'<span class="num">{n}</span> <span class="label">{escape(label)}</span></div>'
        )
    return '<section id="summary" aria-label="fleet summary">' + "".join(cards) + "</section>"


def _histogram(report: AuditReport) -> str:
    """Horizontal bars: SQLx versions are 14-digit timestamps, too long to sit under vertical bars."""
    rows = report.version_histogram()
    if not rows:
        return '<section id="histogram"><h2>Versions</h2><p>No school was reachable.</p></section>'
    label_w, bar_w, count_w, row_h, pad = 200, 440, 60, 28, 6
    width = label_w + bar_w + count_w
    height = row_h * len(rows) + pad
    biggest = max(n for _, n in rows)
    parts = [
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-labelledby="histogram-title"><title id="histogram-title">Schools per migration version</title>'
    ]
    for i, (version, n) in enumerate(rows):
        y = pad + i * row_h
        latest = version is not None and version == report.latest_version
        css = "bar latest" if latest else ("bar none" if version is None else "bar")
        label = _version(version) + (" (latest)" if latest else "")
        w = max(2, round(bar_w * n / biggest))  # a visible sliver even for one school in a fleet of thousands
        parts.append(
            f'<g class="{css}" data-version="{escape(_version(version))}" data-count="{n}">'
            f'<text class="bar-label" x="{label_w - 10}" y="{y + 15}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{label_w}" y="{y}" width="{w}" height="{row_h - 8}" rx="3">'
            f"<title>{escape(label)}: {n} schools</title></rect>"
            f'<text class="bar-count" x="{label_w + w + 6}" y="{y + 15}">{n}</text></g>'
        )
    parts.append("</svg>")
    return '<section id="histogram"><h2>Versions</h2>' + "".join(parts) + "</section>"


def _names(ids: list[str]) -> str:
    shown = ", ".join(f"<code>{escape(i)}</code>" for i in ids[:_LIST_LIMIT])
    more = len(ids) - _LIST_LIMIT
    return shown + (f" and {more} more" if more > 0 else "")


def _fingerprints(report: AuditReport) -> str:
    """The largest fingerprint group is "identical"; everyone else "differs" from it."""
    groups = report.fingerprint_groups()
    unread = sum(1 for s in report.schools if not s.fingerprint)
    head = '<section id="fingerprints"><h2>Live schemas</h2>'
    if not groups:
        return head + '<p id="fingerprint-summary">No live schema could be read.</p></section>'
    identical = len(groups[0][1])
    differ = sum(len(ids) for _, ids in groups[1:])
    sentence = f"{identical} identical, {differ} differ"
    if differ == 0:
        sentence += ": every readable schema is the same"
    if unread:
        sentence += f" ({unread} could not be read)"
    parts = [head, f'<p id="fingerprint-summary">{escape(sentence)}.</p>']
    if differ:
        parts.append('<ul id="fingerprint-groups">')
        for fingerprint, ids in groups[1:]:
            parts.append(
                f'<li data-fingerprint="{escape(fingerprint)}"><code>{escape(fingerprint[:12])}</code> '
                f"({len(ids)} {'school' if len(ids) == 1 else 'schools'}): {_names(ids)}</li>"
            )
        parts.append("</ul>")
    parts.append("</section>")
    return "".join(parts)


def _status(school: SchoolAudit) -> tuple[str, str]:
    """(text, css class) of a drifting school's status badge."""
    if school.schema_drift:
        return "schema drift", "schema"
    if school.findings and all(f.kind == "pending" for f in school.findings):
        return "pending", "pending"
    return "drift", "drift"


def _row(school: SchoolAudit, latest: int | None) -> str:
    text, css = _status(school)
    version = school.result.version_after
    behind = school.readable and latest is not None and version != latest
    version_css = ' class="mono behind"' if behind else ' class="mono"'
    items = [
        f'<li class="finding kind-{escape(f.kind)}"><span class="kind">{escape(f.kind.replace("_", " "))}</span> '
        f"{escape(f.text)}</li>"
        for f in school.findings
    ]
    items += [
        f'<li class="finding error"><span class="kind">not audited</span> {escape(why)}</li>'
        for why in school.why_not_audited()
    ]
    pending = school.result.pending
    pending_title = f' title="{escape(", ".join(map(str, pending)))}"' if pending else ""
    pending_text = str(len(pending)) if school.readable else "?"
    major = f' <span class="major">PostgreSQL {school.server_major}</span>' if school.server_major else ""
    return (
        f'<tr class="school {css}" data-school="{escape(school.tenant.id)}">'
        f'<td class="id">{escape(school.tenant.id)}</td>'
        f'<td class="server mono">{escape(school.result.server)}{major}</td>'
        f'<td><span class="status">{escape(text)}</span></td>'
        f"<td{version_css}>{escape(_version(version) if school.readable else '?')}</td>"
        f'<td class="num pending"{pending_title}>{pending_text}</td>'
        f'<td><ul class="findings">{"".join(items)}</ul></td></tr>'
    )


def _not_audited(report: AuditReport) -> str:
    """The schools the audit could not read or compare, apart from drift: a problem of access, not of a schema."""
    schools = [s for s in report.schools if s.not_audited is not None and not s.drift]
    if not schools:
        return ""
    rows = [
        f'<tr class="school unreachable" data-school="{escape(s.tenant.id)}">'
        f'<td class="id">{escape(s.tenant.id)}</td><td class="server mono">{escape(s.result.server)}</td>'
        f'<td><span class="status">{escape(s.status.value)}</span></td>'
        f'<td><ul class="findings">{"".join(f"<li>{escape(w)}</li>" for w in s.why_not_audited() or s.result.notes)}'
        "</ul></td></tr>"
        for s in schools
    ]
    return (
        '<section id="not-audited"><h2>Not audited</h2><p>Neither clean nor drift: what kept the audit from reading '
        "or comparing these schools.</p>"
        '<table id="not-audited-table"><thead><tr><th>School</th><th>Server</th><th>Status</th><th>Why</th></tr>'
        f"</thead><tbody>{''.join(rows)}</tbody></table></section>"
    )


def _drift(report: AuditReport) -> str:
    drifting = [s for s in report.schools if s.drift]
    clean = [s for s in report.schools if s.clean]
    parts = ['<section id="drift"><h2>Drift</h2>']
    if drifting:
        parts.append(
            '<table id="drift-table"><thead><tr><th>School</th><th>Server</th><th>Status</th><th>Version</th>'
            "<th>Pending</th><th>Findings</th></tr></thead><tbody>"
        )
        parts.extend(_row(s, report.latest_version) for s in drifting)
        parts.append("</tbody></table>")
    else:
        parts.append('<p id="no-drift" class="none-found">No school drifted.</p>')
    if clean:
        # A thousand clean schools are one line, not a thousand rows; the names are one click away.
        items = "".join(f'<li data-school="{escape(s.tenant.id)}">{escape(s.tenant.id)}</li>' for s in clean)
        parts.append(
            f'<details id="clean-schools"><summary>{len(clean)} clean '
            f"{'school' if len(clean) == 1 else 'schools'}</summary>"
            f'<ul class="clean-list">{items}</ul></details>'
        )
    parts.append("</section>")
    return "".join(parts)


def render_html(report: AuditReport) -> str:
    """The whole page, self-contained."""
    counts = report.counts()
    title = f"Schema audit: {_when(report.started_at)}"
    total = counts["schools"]
    if report.verdict == "clean":
        verdict = f'<p id="verdict" class="clean">All {total} schools are clean.</p>'
    elif report.verdict == "drift":
        also = f"; {counts['not_audited']} could not be audited" if counts["not_audited"] else ""
        verdict = f'<p id="verdict" class="drift">{counts["drift"]} of {total} schools drifted{also}.</p>'
    else:
        verdict = (
            f'<p id="verdict" class="not-audited">{counts["not_audited"]} of {total} schools could not be audited; '
            "none drifted.</p>"
        )
    interrupted = (
        '<p class="interrupted" id="interrupted">The audit was interrupted: not every school was checked.</p>'
        if report.interrupted
        else ""
    )
    latest = _version(report.latest_version) if report.latest_version is not None else "none"
    meta = (
        f'<p class="meta">Ran <time datetime="{escape(report.started_at.isoformat())}">'
        f"{escape(_when(report.started_at))}</time> for {report.duration_s:.1f} s; "
        f'latest migration <code id="latest-version">{escape(latest)}</code> in '
        f"<code>{escape(' + '.join(report.migrations_dirs))}</code>.</p>"
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head>\n<body>"
        f'<header><h1 id="title">{escape(title)}</h1>{meta}</header>'
        f"{verdict}{interrupted}{_summary(report)}{_histogram(report)}{_fingerprints(report)}{_drift(report)}"
        f"{_not_audited(report)}"
        f"<footer>orchestrator {escape(__version__)} · finished {escape(_when(report.finished_at))}</footer>"
        "</body></html>\n"
    )
