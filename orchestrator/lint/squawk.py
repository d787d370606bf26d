"""Squawk (https://squawkhq.com), the maintained PostgreSQL migration linter, run over the up files.

Squawk knows the lock and rewrite behaviour of far more statements than our rules do; we run its binary with the
JSON reporter and turn each of its results into a Finding with origin "squawk" and rule `squawk:<its rule>`.

- Transactional files are linted with `--assume-in-transaction` (SQLx wraps them in one), which also lets squawk
  see that an index on a table created in the same file is harmless; `-- no-transaction` files without it.
- Rules that do not fit the platform are excluded (see EXCLUDED_RULES).
- Where squawk and one of our rules flag the same statement for the same thing, ours is kept (it says why and
  what to do at fleet scale); squawk's equivalents stay on so that they catch what our patterns miss. Where our
  rule checked the statement and found it safe (a type change without a rewrite), squawk's equivalent is dropped.
- Squawk reports 0-based lines and byte columns; findings use 1-based lines and character columns.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..source import MigrationFile
from .findings import Finding, Severity

EXCLUDED_RULES: tuple[str, ...] = (
    # Our engine sets lock_timeout and statement_timeout on every session, so the files need not.
    "require-timeout-settings",
    # IF [NOT] EXISTS everywhere: SQLx runs each file once, in a transaction, and records it; guards would
    # only hide a database whose schema drifted from its history.
    "prefer-robust-stmts",
    # Column type preferences are schema design decisions, not migration safety.
    "prefer-bigint-over-int",
    "prefer-bigint-over-smallint",
    "prefer-identity",
)

#: squawk rule -> our rule that reports the same thing (ours wins on the same statement)
EQUIVALENT_RULES: dict[str, str] = {
    "ban-drop-column": "drop-column",
    "ban-drop-table": "drop-table",
    "renaming-column": "rename-column",
    "renaming-table": "rename-table",
    "changing-column-type": "change-column-type",
    "adding-required-field": "add-not-null-without-default",
    "require-concurrent-index-creation": "index-without-concurrently",
    "ban-concurrent-index-creation-in-transaction": "concurrently-in-transaction",
}

_DOCS = "https://squawkhq.com/docs/"
_TIMEOUT_SECONDS = 120.0


def find_squawk() -> Path | None:
    """The squawk binary installed next to this Python (the squawk-cli wheel), else the one on PATH."""
    for name in ("squawk", "squawk.exe"):
        beside = Path(sys.executable).parent / name
        if beside.is_file():
            return beside
    found = shutil.which("squawk")
    return Path(found) if found else None


def _tool_warning(rule: str, path: Path, message: str, instead: str) -> Finding:
    return Finding(
        rule=rule,
        severity="warning",
        path=path,
        line=1,
        column=1,
        message=message,
        why="without squawk, lock and table-rewrite hazards that our own rules do not know go unreported",
        instead=instead,
        origin="squawk",
    )


def _char_column(file: MigrationFile, line: int, byte_column: int) -> int:
    """1-based character column from squawk's 0-based line and byte column."""
    text = file.sql.line_text(line + 1)
    if text is None:
        return byte_column + 1
    return len(text.encode("utf-8")[:byte_column].decode("utf-8", errors="ignore")) + 1


def _severity(level: str) -> Severity:
    return "error" if level.lower() == "error" else "warning"


def _to_finding(item: dict[str, Any], files: dict[Path, MigrationFile]) -> Finding | None:
    file = files.get(Path(str(item.get("file", ""))).resolve())
    if file is None:
        return None
    rule = str(item.get("rule_name") or "unknown")
    line = int(item.get("line") or 0)
    help_text = item.get("help")
    return Finding(
        rule=f"squawk:{rule}",
        severity=_severity(str(item.get("level", "warning"))),
        path=file.path,
        line=line + 1,
        column=_char_column(file, line, int(item.get("column") or 0)),
        message=str(item.get("message", "")),
        why=f"squawk's rule {rule}: see {_DOCS}{rule}",
        instead=str(help_text) if help_text else f"see {_DOCS}{rule}",
        origin="squawk",
    )


def _run(executable: Path, files: Sequence[MigrationFile], *, in_transaction: bool) -> list[Finding]:
    by_path = {f.path.resolve(): f for f in files}
    command = [str(executable), "--reporter", "json", f"--exclude={','.join(EXCLUDED_RULES)}"]
    if in_transaction:
        command.append("--assume-in-transaction")
    command += [str(p) for p in by_path]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return [_tool_warning("squawk-failed", files[0].path, f"squawk could not run: {exc}", "run it by hand")]
    # Exit code 0 is "nothing found", 1 "found something" (with a JSON list on stdout); anything else failed.
    output = done.stdout.strip() or ("[]" if done.returncode == 0 else "")
    try:
        items = json.loads(output) if done.returncode in (0, 1) else None
    except json.JSONDecodeError:
        items = None
    if not isinstance(items, list):
        detail = (done.stderr or done.stdout).strip().splitlines()
        return [
            _tool_warning(
                "squawk-failed",
                files[0].path,
                f"squawk failed (exit code {done.returncode}): {detail[0] if detail else 'no output'}",
                f"run `{' '.join(command)}` to see why",
            )
        ]
    found = [_to_finding(item, by_path) for item in items if isinstance(item, dict)]
    return [f for f in found if f is not None]


def run_squawk(files: Sequence[MigrationFile], *, executable: Path | None = None) -> list[Finding]:
    """Squawk's findings on the given files; a warning finding (never an exception) when it is missing or fails."""
    if not files:
        return []
    executable = executable or find_squawk()
    if executable is None:
        return [
            _tool_warning(
                "squawk-missing",
                files[0].path,
                "squawk is not installed: only the orchestrator's own rules were checked",
                "install it (`pip install squawk-cli`, a dependency of this project), or pass --no-squawk",
            )
        ]
    found = []
    for in_transaction in (True, False):
        group = [f for f in files if f.no_transaction != in_transaction]
        if group:
            found += _run(executable, group, in_transaction=in_transaction)
    return found


def drop_duplicates(
    squawk_findings: Sequence[Finding],
    ours: Sequence[Finding],
    files: Sequence[MigrationFile],
    *,
    cleared: Sequence[tuple[Path, str, int]] = (),
) -> list[Finding]:
    """Squawk's findings minus those one of our rules already reports on the same statement, or checked there and
    found safe (`cleared`: (path, rule, line), e.g. a type change PostgreSQL makes without a rewrite)."""
    # Sorted line lists searched by bisection: statements do not overlap, so the last one starting at or before a
    # line is the only one that can hold it.
    statements = {f.path: [(s.line, s.last_line) for s in f.sql.statements] for f in files}
    first_lines = {path: [first for first, _ in spans] for path, spans in statements.items()}
    ours_lines: dict[tuple[Path, str], list[int]] = {}
    for path, rule, line in [(f.path, f.rule, f.line) for f in ours] + list(cleared):
        ours_lines.setdefault((path, rule), []).append(line)
    for found in ours_lines.values():
        found.sort()

    def lines_of_statement(path: Path, line: int) -> range:
        at = bisect_right(first_lines.get(path, []), line) - 1
        if at >= 0:
            first, last = statements[path][at]
            if line <= last:
                return range(first, last + 1)
        return range(line, line + 1)

    def ours_within(path: Path, rule: str, lines: range) -> bool:
        found = ours_lines.get((path, rule), [])
        at = bisect_left(found, lines.start)
        return at < len(found) and found[at] < lines.stop

    kept = []
    for s in squawk_findings:
        equivalent = EQUIVALENT_RULES.get(s.rule.removeprefix("squawk:"))
        if equivalent and ours_within(s.path, equivalent, lines_of_statement(s.path, s.line)):
            continue
        kept.append(s)
    return kept
