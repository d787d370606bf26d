"""What the schema comparison (schema.py) cannot see, statement by statement.

`resolve --restamp` records an edited applied file's new checksum only where the live schema equals what the
current files produce; that proves nothing about an edit to a statement whose effect the snapshot does not hold:
rows (INSERT, UPDATE, COPY, CREATE TABLE AS, ...), what a query, CALL or DO block ran (setval, a function that
writes), privileges and owners, comments, statistics targets, tablespaces, and objects the snapshot leaves out
(rules, casts, operators, aggregates' definitions, ...). Function and procedure bodies *are* in it (their md5).

An allow-list by statement kind, read from the masked text (sqltext: comments, literals and bodies blanked), never
from raw SQL: a statement not known to be seen is reported. It errs on the side of reporting (a column named
`tablespace` reads as the clause).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from itertools import pairwise

from ..sqltext import SqlText, strip_comments, tokens

ROWS = "changes rows, which the schema comparison does not see"
CODE = "runs code whose effects the schema comparison does not see"
PRIVILEGES = "privileges and owners are not compared"
COMMENTS = "comments are not compared"
NOT_COMPARED = "not in the schema comparison"

_SPACES = re.compile(r"\s+")
_TOKEN = re.compile(r'"(?:[^"]|"")*"|[A-Za-z_][A-Za-z0-9_$]*|[(),]')


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# No lasting effect of their own (SET: the session's settings; SET ROLE is singled out below).
_QUIET = _words(
    "BEGIN COMMIT END START SAVEPOINT RELEASE LOCK ANALYZE ANALYSE VACUUM REINDEX CLUSTER CHECKPOINT DISCARD LISTEN "
    "UNLISTEN NOTIFY SET RESET"
)
_ROWS = _words("INSERT UPDATE DELETE MERGE COPY TRUNCATE REFRESH")
_CODE = _words("SELECT WITH VALUES TABLE EXPLAIN CALL DO EXECUTE (")
_ROLES = _words("ROLE USER GROUP OWNED")
# Objects whose every property the snapshot holds (with the clauses below refused).
_SEEN = _words("TABLE INDEX VIEW FUNCTION PROCEDURE ROUTINE TRIGGER POLICY SEQUENCE TYPE DOMAIN SCHEMA EXTENSION")
_SEEN_DROPPED = _SEEN | {"MATERIALIZED VIEW", "AGGREGATE"}  # gone is seen, whatever it was
_CREATE_MODIFIERS = _words("OR REPLACE TEMP TEMPORARY UNLOGGED GLOBAL LOCAL UNIQUE RECURSIVE CONSTRAINT")
_TWO_WORDS = frozenset({"MATERIALIZED", "FOREIGN", "DEFAULT", "EVENT", "ACCESS", "TEXT", "OPERATOR"})
# Clauses of ALTER (two words in a row, at the top level) whose effect is not compared.
_ALTER_CLAUSES = {
    ("OWNER", "TO"): PRIVILEGES,
    ("SET", "STATISTICS"): NOT_COMPARED,
    ("SET", "STORAGE"): NOT_COMPARED,
    ("SET", "COMPRESSION"): NOT_COMPARED,
    ("SET", "ACCESS"): NOT_COMPARED,
    ("REPLICA", "IDENTITY"): NOT_COMPARED,
    ("CLUSTER", "ON"): NOT_COMPARED,
    ("WITHOUT", "CLUSTER"): NOT_COMPARED,
    ("ENABLE", "RULE"): NOT_COMPARED,
    ("DISABLE", "RULE"): NOT_COMPARED,
}


@dataclass(frozen=True)
class Unseen:
    """A statement whose effect the schema comparison cannot see."""

    line: int
    what: str  # e.g. "INSERT", "CREATE TABLE ... AS", "ALTER TABLE ... OWNER TO"
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.what} ({self.why})"


def unseen(text: str) -> tuple[Unseen, ...]:
    """Every statement of a file's text whose effect the schema comparison cannot see, in order."""
    return tuple(u for u, _ in unseen_statements(text))


@cache
def unseen_statements(text: str) -> tuple[tuple[Unseen, str], ...]:
    """`unseen`, each with its statement's text, comments removed (to compare two versions of a file)."""
    sql = SqlText(text)
    found = []
    for statement in sql.statements:
        tokens = [(m.group().upper(), m.start()) for m in _TOKEN.finditer(sql.masked, statement.start, statement.end)]
        if tokens and (why := _why(_top_level(tokens), [t for t, _ in tokens])) is not None:
            found.append((Unseen(statement.line, *why), _comparable(statement.text)))
    return tuple(found)


def _comparable(statement: str) -> str:
    """A statement as two versions of a file compare it: comments out, each run of whitespace outside quotes one
    space (a literal's own spaces are its value)."""
    text = strip_comments(statement)
    parts, previous_end = [], 0
    for _, start, end in tokens(text):
        parts += [_SPACES.sub(" ", text[previous_end:start]), text[start:end]]
        previous_end = end
    parts.append(_SPACES.sub(" ", text[previous_end:]))
    return "".join(parts).strip()


def _top_level(tokens: list[tuple[str, int]]) -> list[str]:
    """The words outside parentheses (commas kept: they separate an ALTER TABLE's actions)."""
    words: list[str] = []
    depth = 0
    for token, _ in tokens:
        if token == "(":
            depth += 1
            if depth == 1 and not words:
                words.append(token)  # a parenthesised query
        elif token == ")":
            depth = max(0, depth - 1)
        elif depth == 0:
            words.append(token)
    return words


def _why(top: list[str], every: list[str]) -> tuple[str, str] | None:
    head = top[0]
    if head in _ROWS:
        return head, ROWS
    if head in _CODE:
        return ("a query" if head in ("(", "WITH", "VALUES", "TABLE") else head), CODE
    if head in ("GRANT", "REVOKE", "REASSIGN"):
        return head, PRIVILEGES
    if head == "COMMENT":
        return "COMMENT ON", COMMENTS
    if head in ("SET", "RESET"):
        rest = [w for w in top[1:3] if w not in ("SESSION", "LOCAL")]
        if rest and rest[0] in ("ROLE", "AUTHORIZATION"):
            return f"{head} ROLE", "changes who owns what follows; " + PRIVILEGES
        return None
    if head in _QUIET:
        return None
    if head not in ("CREATE", "ALTER", "DROP"):
        return head, NOT_COMPARED
    i = 1
    while head == "CREATE" and i < len(top) - 1 and top[i] in _CREATE_MODIFIERS:
        i += 1
    kind = top[i] if i < len(top) else ""
    if kind in _TWO_WORDS and i + 1 < len(top):
        kind = f"{kind} {top[i + 1]}"
    what = f"{head} {kind}".strip()
    if kind in _ROLES or kind == "DEFAULT PRIVILEGES":
        return what, PRIVILEGES
    if head == "DROP":
        return None if kind in _SEEN_DROPPED else (what, NOT_COMPARED)
    if kind == "MATERIALIZED VIEW" and head == "CREATE":
        return what, ROWS  # its rows, and whether it holds any
    if kind not in _SEEN and not (head == "ALTER" and kind == "MATERIALIZED VIEW"):
        return what, NOT_COMPARED
    if "TABLESPACE" in every:
        return f"{what} ... TABLESPACE", NOT_COMPARED
    if head == "CREATE":
        return _created(what, kind, top)
    return _altered(what, kind, top)


def _created(what: str, kind: str, top: list[str]) -> tuple[str, str] | None:
    if kind == "TABLE" and "AS" in top:
        return f"{what} ... AS", ROWS
    if kind == "TABLE" and "USING" in top:
        return f"{what} ... USING", "a table's access method is " + NOT_COMPARED
    if kind == "TYPE" and "AS" not in top:
        return what, "a base or shell type is " + NOT_COMPARED
    if kind == "SCHEMA" and ("AUTHORIZATION" in top or "GRANT" in top):
        return f"{what} ... AUTHORIZATION", PRIVILEGES
    return None


def _altered(what: str, kind: str, top: list[str]) -> tuple[str, str] | None:
    for pair in pairwise(top):
        if pair in _ALTER_CLAUSES:
            return f"{what} ... {' '.join(pair)}", _ALTER_CLAUSES[pair]
    if kind in ("SEQUENCE", "TABLE") and "RESTART" in top:  # a table's: an identity column's sequence
        return f"{what} ... RESTART", "a sequence's current value is " + NOT_COMPARED
    if kind == "TABLE":
        action: list[str] = []
        for word in [*top, ","]:
            if word != ",":
                action.append(word)
                continue
            if "TYPE" in action and "USING" in action[action.index("TYPE") :]:
                return f"{what} ... TYPE ... USING", ROWS
            action = []
    return None
