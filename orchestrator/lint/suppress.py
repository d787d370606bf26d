"""In-file suppressions: the author says why a finding is safe, and the report keeps both.

    -- lint:ignore drop-column reason: the code stopped reading it in v42
    ALTER TABLE students DROP COLUMN legacy_code;

    ALTER TABLE students DROP COLUMN legacy_code;  -- lint:ignore drop-column reason: unused since v42

    -- lint:ignore-file index-without-concurrently reason: the table holds at most 20 rows per school

A comment on its own line covers the next line of code and, when a statement starts there, the whole statement.
A comment at the end of a line covers that line and the statements that start or end on it. `lint:ignore-file`
covers the whole file and only counts in the comments before the first statement. Several rules may be given,
separated by commas or spaces; a squawk rule may be named with or without its `squawk:` prefix.

A suppression without a reason suppresses nothing and is itself an error: the reason is what a reviewer reads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..sqltext import line_of, split_statements
from .findings import Finding
from .rules import CATALOG, MigrationFile, finding, line_comments, mask_sql, statement_lines

_SUPPRESSION = re.compile(r"^--\s*lint:ignore(?P<file>-file)?(?![\w-])(?P<rest>.*)$", re.IGNORECASE)
_REASON = re.compile(r"\breason\s*:", re.IGNORECASE)


@dataclass(frozen=True)
class Suppression:
    rules: frozenset[str]
    reason: str
    line: int  # where the comment is
    lines: frozenset[int] | None  # the lines it covers; None for the whole file

    def covers(self, f: Finding) -> bool:
        named = f.rule in self.rules or (f.rule.startswith("squawk:") and f.rule[len("squawk:") :] in self.rules)
        return named and (self.lines is None or f.line in self.lines)


def suppressible(f: Finding) -> bool:
    """Whether an in-file comment may suppress `f`."""
    if f.rule == "released-file-edited":
        # An edited released up changes the checksum the whole fleet stored: no comment can make that safe.
        return f.path.name.endswith(".down.sql")
    info = CATALOG.get(f.rule)
    return info is None or info.suppressible


def _covered_lines(
    masked_lines: list[str], statements: list[tuple[int, int]], comment_line: int, own_line: bool
) -> frozenset[int]:
    """The lines a line suppression covers; `masked_lines` (comments blanked) tell code lines from the rest."""
    if own_line:
        code_lines = (n for n in range(comment_line + 1, len(masked_lines) + 1) if masked_lines[n - 1].strip())
        target = next(code_lines, comment_line + 1)
        covered = {target}
        for first, last in statements:
            if first == target:
                covered.update(range(first, last + 1))
        return frozenset(covered)
    covered = {comment_line}
    for first, last in statements:
        if comment_line in (first, last):
            covered.update(range(first, last + 1))
    return frozenset(covered)


def parse_suppressions(file: MigrationFile) -> tuple[list[Suppression], list[Finding]]:
    """The file's suppressions, and findings for the malformed ones (which suppress nothing)."""
    text = file.text
    if text is None:
        return [], []
    statements = split_statements(text)
    first_code = statements[0].start if statements else len(text)
    masked_lines = mask_sql(text).split("\n")
    statement_ranges = statement_lines(text)
    suppressions: list[Suppression] = []
    problems: list[Finding] = []
    for offset, comment in line_comments(text):
        m = _SUPPRESSION.match(comment.rstrip())
        if not m:
            continue
        line = line_of(text, offset)
        column = offset - (text.rfind("\n", 0, offset) + 1) + 1
        whole_file = m.group("file") is not None
        rule_part, reason = _split_reason(m.group("rest"))
        rules = frozenset(r for r in re.split(r"[\s,]+", rule_part) if r)
        if not rules:
            problems.append(finding("suppression-without-rule", file.path, line, column, "`lint:ignore` names no rule"))
            continue
        if not reason:
            problems.append(
                finding(
                    "suppression-without-reason",
                    file.path,
                    line,
                    column,
                    f"suppression of {', '.join(sorted(rules))} gives no reason (it suppresses nothing)",
                )
            )
            continue
        if whole_file and offset > first_code:
            problems.append(
                finding(
                    "misplaced-suppression",
                    file.path,
                    line,
                    column,
                    "`lint:ignore-file` after the first statement suppresses nothing",
                )
            )
            continue
        own_line = not text[text.rfind("\n", 0, offset) + 1 : offset].strip()
        covered = None if whole_file else _covered_lines(masked_lines, statement_ranges, line, own_line)
        suppressions.append(Suppression(rules, reason, line, covered))
    return suppressions, problems


def _split_reason(rest: str) -> tuple[str, str]:
    """(rule names, reason) of what follows `lint:ignore`; the reason is empty when missing."""
    parts = _REASON.split(rest, maxsplit=1)
    return (rest, "") if len(parts) == 1 else (parts[0], parts[1].strip())


def apply_suppressions(
    findings: Sequence[Finding], suppressions: Mapping[Path, Sequence[Suppression]]
) -> list[Finding]:
    """`findings` with those covered by a suppression marked suppressed, with the author's reason."""
    result = []
    for f in findings:
        match = next((s for s in suppressions.get(f.path, ()) if s.covers(f)), None)
        if match is not None and suppressible(f):
            f = replace(f, suppressed=True, suppression_reason=match.reason)
        result.append(f)
    return result
