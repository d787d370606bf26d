"""Ways to show a LintReport: for people (`text`), for editors and CI annotations (`editor`), and JSON."""

from __future__ import annotations

import json
from itertools import groupby

from .findings import Finding, LintReport


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def summary(report: LintReport) -> str:
    counts = [_plural(len(report.errors), "error"), _plural(len(report.warnings), "warning")]
    if report.suppressed:
        counts.append(f"{len(report.suppressed)} suppressed")
    verdict = "ok" if report.ok else "FAILED"
    return f"{verdict}: {', '.join(counts)} in {_plural(len(report.files_checked), 'file')} checked"


def render_text(report: LintReport) -> str:
    """Findings grouped by file, `file:line:col  severity  rule  message`, then why / instead indented."""
    out: list[str] = []
    for _, grouped in groupby(report.findings, key=lambda f: f.path):
        group = list(grouped)
        width_location = max(len(f.location) for f in group)
        width_rule = max(len(f.rule) for f in group)
        if out:
            out.append("")
        for f in group:
            severity = "suppressed" if f.suppressed else f.severity
            out.append(f"{f.location:<{width_location}}  {severity:<10}  {f.rule:<{width_rule}}  {f.message}")
            if f.suppressed:
                out.append(f"    reason:  {f.suppression_reason}")
            else:
                out.append(f"    why:     {f.why}")
                out.append(f"    instead: {f.instead}")
    if out:
        out.append("")
    out.append(summary(report))
    if report.errors and not report.release_requested:
        out.append(
            "a file no school has applied yet: fix it (or suppress a finding with a reason). A file some school "
            "already applied must never be edited, not even for a suppression comment (its checksum would change "
            "and SQLx workers refuse to start): `orchestrator lint --baseline --registry PATH` (or -D URL) reads the "
            "fleet's ledgers and records those files, and only those, as released as they are"
        )
    if report.released_recorded is not None:
        recorded = report.released_recorded
        out.append(
            f"recorded as released: {', '.join(recorded)}" if recorded else "released.sum: nothing new to record"
        )
        if report.not_recorded:
            out.append(
                f"not recorded (no school has applied them: fix their findings, then `--release`): "
                f"{', '.join(report.not_recorded)}"
            )
        if report.unread:
            out.append(
                f"not read: {len(report.unread)} school(s), so a file only they applied is not recorded: "
                + "; ".join(report.unread[:10])
                + (" ..." if len(report.unread) > 10 else "")
            )
    elif report.release_requested:
        out.append(
            "nothing recorded as released: fix the errors first (in files no school has applied yet; files some "
            "school already applied are recorded as they are with `orchestrator lint --baseline`)"
        )
    return "\n".join(out) + "\n"


def editor_line(f: Finding) -> str:
    return f"{f.location}: {f.severity}: [{f.rule}] {f.message}"


def render_editor(report: LintReport) -> str:
    """One `file:line:col: severity: [rule] message` per unsuppressed finding (the format editors and CI parse)."""
    return "".join(f"{editor_line(f)}\n" for f in report.findings if not f.suppressed)


def render_json(report: LintReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"
