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

The lines a suppression covers are one range (the statement's lines), and findings are matched through an index by
line, so a file with thousands of suppressions and findings costs no more than it is long.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ..source import MigrationFile
from ..sqltext import SqlText
from .catalog import CATALOG, finding
from .findings import Finding

_SUPPRESSION = re.compile(r"^--\s*lint:ignore(?P<file>-file)?(?![\w-])(?P<rest>.*)$", re.IGNORECASE)
_REASON = re.compile(r"\breason\s*:", re.IGNORECASE)
_NON_SPACE = re.compile(r"\S")


@dataclass(frozen=True)
class Suppression:
    rules: frozenset[str]
    reason: str
    line: int  # where the comment is
    lines: range | None  # the lines it covers; None for the whole file

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


class _StatementLines:
    """Which statements start and end on a line: (first line, last line) of each, indexed both ways."""

    def __init__(self, sql: SqlText) -> None:
        self.last_of: dict[int, int] = {}  # first line -> the furthest last line of the statements starting there
        self.first_of: dict[int, int] = {}  # last line -> the earliest first line of the statements ending there
        for s in sql.statements:
            self.last_of[s.line] = max(self.last_of.get(s.line, s.last_line), s.last_line)
            self.first_of[s.last_line] = min(self.first_of.get(s.last_line, s.line), s.line)

    def own_line(self, sql: SqlText, comment_end: int, comment_line: int) -> range:
        """A comment on its own line covers the next line of code and the statements starting there."""
        code = _NON_SPACE.search(sql.masked, comment_end)
        target = sql.line_of(code.start()) if code else comment_line + 1
        return range(target, self.last_of.get(target, target) + 1)

    def end_of_line(self, comment_line: int) -> range:
        """A comment after code covers its line and the statements that start or end on it."""
        first = self.first_of.get(comment_line, comment_line)
        return range(first, self.last_of.get(comment_line, comment_line) + 1)


def parse_suppressions(file: MigrationFile) -> tuple[list[Suppression], list[Finding]]:
    """The file's suppressions, and findings for the malformed ones (which suppress nothing)."""
    sql, text = file.sql, file.text
    first_code = sql.statements[0].start if sql.statements else len(text)
    statement_lines = _StatementLines(sql)
    suppressions: list[Suppression] = []
    problems: list[Finding] = []
    for comment in sql.line_comments:
        m = _SUPPRESSION.match(text[comment.start : comment.end].rstrip())
        if not m:
            continue
        line, column = sql.position(comment.start)
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
        if whole_file and comment.start > first_code:
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
        covered = None
        if not whole_file:
            own_line = not text[comment.start - column + 1 : comment.start].strip()
            covered = (
                statement_lines.own_line(sql, comment.end, line) if own_line else statement_lines.end_of_line(line)
            )
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
    # Per file: the whole-file suppressions, and the line suppressions indexed by each line they cover.
    whole_file: dict[Path, list[Suppression]] = {}
    by_line: dict[tuple[Path, int], list[Suppression]] = {}
    for path, found in suppressions.items():
        for s in found:
            if s.lines is None:
                whole_file.setdefault(path, []).append(s)
            else:
                for line in s.lines:
                    by_line.setdefault((path, line), []).append(s)
    result = []
    for f in findings:
        candidates = [*by_line.get((f.path, f.line), ()), *whole_file.get(f.path, ())]
        # The first in the file wins, so the reason shown does not depend on the index.
        match = min((s for s in candidates if s.covers(f)), key=lambda s: s.line, default=None)
        if match is not None and suppressible(f):
            f = replace(f, suppressed=True, suppression_reason=match.reason)
        result.append(f)
    return result
