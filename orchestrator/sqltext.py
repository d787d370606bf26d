"""Just enough SQL lexing to split a file into statements, mask what rules must not match, and map offsets to lines.

Not a parser: one tokenizer (`tokens`) knows PostgreSQL's quoting (strings, E-strings, quoted identifiers, dollar
quotes) and comments (line and nested block comments), so that a `;` inside them does not end a statement.
Everything else here is built on it, and all of it is linear in the file's size: the tokenizer jumps from one
character that can start a token to the next (a regex search, not a loop per character), and line numbers come from
the line starts, found once per text, by bisection.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Literal, NamedTuple

TokenKind = Literal["line_comment", "block_comment", "string", "identifier", "dollar", "semicolon"]
COMMENTS: frozenset[TokenKind] = frozenset({"line_comment", "block_comment"})

_TOKEN_START = re.compile(r"--|/\*|['\";$]")
_BLOCK_EDGE = re.compile(r"/\*|\*/")
_E_STRING_STOP = re.compile(r"[\\']")
_DOLLAR_TAG = re.compile(r"\$([A-Za-z_][A-Za-z_0-9]*)?\$")
_NEWLINE = re.compile(r"\n")
_LINE_END = re.compile(r"[\r\n]")
_NON_SPACE = re.compile(r"\S")


class Token(NamedTuple):
    """A comment, a quoted literal or identifier, a dollar-quoted body, or a top-level `;`: [start, end)."""

    kind: TokenKind
    start: int
    end: int


def _is_word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _quoted_end(sql: str, i: int, quote: str) -> int:
    """Index just past the literal or identifier opened at `i`; a doubled quote is part of it."""
    j = i + 1
    while (j := sql.find(quote, j)) >= 0:
        if sql.startswith(quote * 2, j):
            j += 2
            continue
        return j + 1
    return len(sql)


def _e_string_end(sql: str, i: int) -> int:
    """Index just past the E'...' literal opened at `i`, where a backslash escapes the next character."""
    j = i + 1
    while m := _E_STRING_STOP.search(sql, j):
        j = m.start()
        if sql[j] == "\\" or sql.startswith("''", j):  # an escaped character, or a doubled quote
            j += 2
        else:
            return j + 1
    return len(sql)


def _block_comment_end(sql: str, i: int) -> int:
    depth, j = 1, i + 2
    while depth and (m := _BLOCK_EDGE.search(sql, j)):
        depth += 1 if m.group() == "/*" else -1
        j = m.end()
    return j if not depth else len(sql)


def _token_at(sql: str, i: int) -> Token | None:
    """The token starting at `i` (where `_TOKEN_START` matched), or None for a `$` that starts no dollar quote."""
    c = sql[i]
    if c == ";":
        return Token("semicolon", i, i + 1)
    if c == "-":
        # PostgreSQL ends a `--` comment at a carriage return too: `-- x\rINSERT ...` runs the INSERT.
        m = _LINE_END.search(sql, i)
        return Token("line_comment", i, m.start() if m else len(sql))
    if c == "/":
        return Token("block_comment", i, _block_comment_end(sql, i))
    if c == "'":
        escapes = i > 0 and sql[i - 1] in "eE" and (i < 2 or not _is_word_char(sql[i - 2]))
        return Token("string", i, _e_string_end(sql, i) if escapes else _quoted_end(sql, i, "'"))
    if c == '"':
        return Token("identifier", i, _quoted_end(sql, i, '"'))
    # `$`: a dollar quote only where an identifier cannot be going on (`a$b$` is an identifier).
    if i == 0 or not _is_word_char(sql[i - 1]):
        m = _DOLLAR_TAG.match(sql, i)
        if m:
            end = sql.find(m.group(), m.end())
            return Token("dollar", i, len(sql) if end < 0 else end + len(m.group()))
    return None


def tokens(sql: str) -> Iterator[Token]:
    """The tokens of `sql` in order; whatever lies between two tokens is plain code (keywords, names, numbers)."""
    i = 0
    while m := _TOKEN_START.search(sql, i):
        token = _token_at(sql, m.start())
        if token is None:
            i = m.start() + 1
            continue
        yield token
        i = token.end


def _blank(text: str) -> str:
    """Spaces of the same length, newlines kept."""
    return "\n".join(" " * len(part) for part in text.split("\n"))


@dataclass(frozen=True)
class Statement:
    text: str  # the statement without its trailing `;`, comments kept
    start: int  # character offset of its first code character (after leading comments)
    line: int  # 1-based line of `start`
    end: int  # offset just past its last code character (trailing comments and `;` excluded)
    last_line: int  # 1-based line of its last code character

    @property
    def code(self) -> str:
        """The statement with comments removed and whitespace folded."""
        return " ".join(strip_comments(self.text).split())


class SqlText:
    """One file's SQL, tokenized once: its statements, a masked copy for pattern matching, its line comments, and
    the line and column of any offset."""

    def __init__(self, text: str) -> None:
        self.text = text

    @cached_property
    def tokens(self) -> list[Token]:
        return list(tokens(self.text))

    @cached_property
    def _line_starts(self) -> list[int]:
        return [0, *(m.end() for m in _NEWLINE.finditer(self.text))]

    def line_of(self, offset: int) -> int:
        """1-based line of a 0-based character offset."""
        return bisect_right(self._line_starts, max(0, offset))

    def position(self, offset: int) -> tuple[int, int]:
        """1-based (line, column) of a character offset."""
        line = self.line_of(offset)
        return line, max(0, offset) - self._line_starts[line - 1] + 1

    def line_text(self, line: int) -> str | None:
        """The text of a 1-based line without its newline; None past the last line."""
        starts = self._line_starts
        if not 1 <= line <= len(starts):
            return None
        end = starts[line] - 1 if line < len(starts) else len(self.text)
        return self.text[starts[line - 1] : end]

    @cached_property
    def statements(self) -> list[Statement]:
        """Split on top-level semicolons; statements holding only comments or whitespace are dropped."""
        text = self.text
        found: list[Statement] = []
        chunk_start = previous_end = 0
        code_start = code_end = -1
        for token in [*self.tokens, Token("semicolon", len(text), len(text))]:
            # Plain code between the previous token and this one.
            if m := _NON_SPACE.search(text, previous_end, token.start):
                code_start = m.start() if code_start < 0 else code_start
                code_end = previous_end + len(text[previous_end : token.start].rstrip())
            previous_end = token.end
            if token.kind == "semicolon":
                if code_start >= 0:
                    found.append(
                        Statement(
                            text=text[chunk_start : token.start].strip(),
                            start=code_start,
                            line=self.line_of(code_start),
                            end=code_end,
                            last_line=self.line_of(code_end - 1),
                        )
                    )
                chunk_start, code_start, code_end = token.end, -1, -1
            elif token.kind not in COMMENTS:
                code_start = token.start if code_start < 0 else code_start
                code_end = token.end
        return found

    @cached_property
    def masked(self) -> str:
        """The text with comments, string literals and dollar-quoted bodies blanked out; same length, newlines kept.

        Quoted identifiers stay (rules need the names); quotes of literals stay, so `DEFAULT 'x'` still reads as a
        default. A byte-order mark becomes a space so that rules anchored at a statement's start still match.
        """
        text = self.text
        out: list[str] = []
        previous_end = 0
        for kind, start, end in self.tokens:
            out.append(text[previous_end:start].replace("\ufeff", " "))
            token = text[start:end]
            if kind in ("semicolon", "identifier"):
                out.append(token)
            elif kind in COMMENTS or len(token) < 2:
                out.append(_blank(token))
            else:
                out.append(token[0] + _blank(token[1:-1]) + token[-1])
            previous_end = end
        out.append(text[previous_end:].replace("\ufeff", " "))
        return "".join(out)

    @property
    def line_comments(self) -> Iterator[Token]:
        """Every `--` comment (not those inside strings, identifiers or block comments)."""
        return (t for t in self.tokens if t.kind == "line_comment")


def strip_comments(sql: str) -> str:
    """`sql` with each comment replaced by a space."""
    out: list[str] = []
    previous_end = 0
    for kind, start, end in tokens(sql):
        if kind in COMMENTS:
            out.append(sql[previous_end:start])
            out.append(" ")
            previous_end = end
    out.append(sql[previous_end:])
    return "".join(out)


def split_statements(sql: str) -> list[Statement]:
    """The statements of `sql` (see `SqlText.statements`)."""
    return SqlText(sql).statements


def line_of(text: str, offset: int) -> int:
    """1-based line of a 0-based character offset, for a single lookup (many lookups: `SqlText.line_of`)."""
    return text.count("\n", 0, max(0, offset)) + 1
