"""Just enough SQL lexing to split a file into statements and map server error positions to lines.

Not a parser: it knows PostgreSQL's quoting (strings, E-strings, quoted identifiers, dollar quotes) and comments
(line and nested block comments), so that a `;` inside them does not end a statement.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")


@dataclass(frozen=True)
class Statement:
    text: str  # the statement without its trailing `;`, comments kept
    start: int  # character offset of its first significant character in the file
    line: int  # 1-based line of `start`

    @property
    def code(self) -> str:
        """The statement with comments removed and whitespace folded: what rules match against."""
        return " ".join(strip_comments(self.text).split())


def line_of(text: str, offset: int) -> int:
    """1-based line number of a 0-based character offset."""
    return text.count("\n", 0, max(0, offset)) + 1


def _skip_quoted(sql: str, i: int) -> int:
    """Return the index just past the quoted token or comment that starts at `i`, or `i` if none starts there."""
    n = len(sql)
    c = sql[i]
    if c == "-" and sql.startswith("--", i):
        end = sql.find("\n", i)
        return n if end < 0 else end
    if c == "/" and sql.startswith("/*", i):
        depth, j = 1, i + 2
        while j < n and depth:
            if sql.startswith("/*", j):
                depth, j = depth + 1, j + 2
            elif sql.startswith("*/", j):
                depth, j = depth - 1, j + 2
            else:
                j += 1
        return j
    if c == "'":
        escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not (sql[i - 2].isalnum() or sql[i - 2] == "_"))
        j = i + 1
        while j < n:
            if escapes and sql[j] == "\\":
                j += 2
                continue
            if sql[j] == "'":
                if sql.startswith("''", j):
                    j += 2
                    continue
                return j + 1
            j += 1
        return n
    if c == '"':
        j = i + 1
        while j < n:
            if sql[j] == '"':
                if sql.startswith('""', j):
                    j += 2
                    continue
                return j + 1
            j += 1
        return n
    if c == "$" and (i == 0 or not (sql[i - 1].isalnum() or sql[i - 1] == "_")):
        m = _DOLLAR_TAG.match(sql, i)
        if m:
            end = sql.find(m.group(0), m.end())
            return n if end < 0 else end + len(m.group(0))
    return i


def strip_comments(sql: str) -> str:
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        j = _skip_quoted(sql, i)
        if j > i:
            if not sql.startswith(("--", "/*"), i):
                out.append(sql[i:j])
            else:
                out.append(" ")
            i = j
        else:
            out.append(sql[i])
            i += 1
    return "".join(out)


def split_statements(sql: str) -> list[Statement]:
    """Split on top-level semicolons; statements holding only comments or whitespace are dropped."""
    statements: list[Statement] = []
    i, n, start = 0, len(sql), 0

    def emit(end: int) -> None:
        chunk = sql[start:end]
        if strip_comments(chunk).strip():
            lead = len(chunk) - len(chunk.lstrip())
            # Skip leading comments so the statement's line is where its code starts.
            offset = start + lead
            while True:
                j = _skip_quoted(sql, offset) if sql.startswith(("--", "/*"), offset) else offset
                if j == offset:
                    break
                offset = j
                while offset < end and sql[offset].isspace():
                    offset += 1
            statements.append(Statement(text=chunk.strip(), start=offset, line=line_of(sql, offset)))

    while i < n:
        j = _skip_quoted(sql, i)
        if j > i:
            i = j
            continue
        if sql[i] == ";":
            emit(i)
            start = i + 1
        i += 1
    emit(n)
    return statements
