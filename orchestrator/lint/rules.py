"""Our own lint rules: the platform's rules for migrations that run on every school database.

Rules match the statements of `sqltext.SqlText` against its *masked* copy of the file, where comments, string
literals and dollar-quoted bodies are blanked out (same length, newlines kept). So a `DROP COLUMN` inside a
comment or a function body is not a finding, and every match maps straight back to a line and column.

What makes a directory unusable (names, versions, pairs, encoding, several statements in a `-- no-transaction`
file) is not a rule here: the loader (`source.load_migrations`) refuses it, for `lint` exactly as for `migrate`.

Down files: a down file exists to undo its up, so dropping what its up created (a table, a column) is what it is
for, and renames and type changes back are too: none of that is reported. A down that drops a table or column its
up did not create loses data that existed before the up ran (`down-loses-data`, a warning). The rules about what
makes a file fail or block (foreign keys, NOT NULL columns, indexes, CONCURRENTLY, encoding) apply to down files as
to up files, because a rollback that fails or blocks writes is as bad as a release that does, with advice for a
down file where it differs (`RuleInfo.down_instead`).

Type changes: a change PostgreSQL makes without a rewrite (varchar(n) to a longer varchar or text, numeric to a
larger precision with the same scale, ...: coltypes.py) is not reported, when the column's type is known from the
earlier up files (`Columns` follows them in version order).
"""

from __future__ import annotations

import re
from collections.abc import Container, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..source import Migration, MigrationFile
from ..sqltext import Statement
from .catalog import finding
from .coltypes import Columns, parse_type, rewrites
from .findings import Finding

# --- text helpers -------------------------------------------------------------------------------------------------


def _split_top_level(text: str) -> list[tuple[int, str]]:
    """Split on commas outside parentheses: (offset, part) pairs. `text` must already be masked."""
    parts: list[tuple[int, str]] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append((start, text[start:i]))
            start = i + 1
    parts.append((start, text[start:]))
    return parts


def _depth_at(text: str, offset: int) -> int:
    return max(0, text.count("(", 0, offset) - text.count(")", 0, offset))


def _matching_paren(text: str, open_at: int) -> int:
    """Offset of the `)` closing the `(` at `open_at`, or len(text) when it is unbalanced."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i
    return len(text)


# --- SQL patterns (matched case-insensitively against masked text) ------------------------------------------------

IDENT = r'(?:"(?:[^"]|"")+"|[^\W\d][\w$]*)'
QNAME = rf"{IDENT}(?:\s*\.\s*{IDENT}){{0,2}}"
_I = re.IGNORECASE | re.DOTALL

_ALTER_TABLE = re.compile(rf"\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?(?P<table>{QNAME})\s*\*?", _I)
_DROP_COLUMN = re.compile(
    rf"\s*(?P<kw>DROP)\s+(?!CONSTRAINT\b)(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?P<column>{IDENT})", _I
)
_RENAME_TABLE = re.compile(rf"\s*(?P<kw>RENAME)\s+TO\s+(?P<new>{QNAME})", _I)
_RENAME_COLUMN = re.compile(
    rf"\s*(?P<kw>RENAME)\s+(?!CONSTRAINT\b)(?:COLUMN\s+)?(?P<column>{IDENT})\s+TO\s+(?P<new>{IDENT})", _I
)
_ALTER_TYPE = re.compile(
    rf"\s*(?P<kw>ALTER)\s+(?:COLUMN\s+)?(?P<column>{IDENT})\s+(?:SET\s+DATA\s+)?TYPE\s+"
    r"(?P<type>.*?)\s*(?=\bUSING\b|\bCOLLATE\b|$)",
    _I,
)
_ADD_COLUMN = re.compile(
    r"\s*ADD\s+(?!(?:CONSTRAINT|PRIMARY|UNIQUE|CHECK|FOREIGN|EXCLUDE)\b)(?:COLUMN\s+)?"
    rf"(?:IF\s+NOT\s+EXISTS\s+)?(?P<column>{IDENT})\s+(?P<definition>.*)",
    _I,
)
_CREATE_TABLE = re.compile(
    r"\s*CREATE\s+(?:OR\s+REPLACE\s+)?(?:(?:GLOBAL|LOCAL)\s+)?(?:(?:TEMP|TEMPORARY|UNLOGGED)\s+)?"
    rf"(?:TABLE|MATERIALIZED\s+VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?P<table>{QNAME})",
    _I,
)
_CREATE_INDEX = re.compile(
    r"\s*CREATE\s+(?:UNIQUE\s+)?INDEX\s+(?P<concurrently>CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?"
    rf"(?:(?!ON\b){IDENT}\s+)?ON\s+(?:ONLY\s+)?(?P<table>{QNAME})",
    _I,
)
_DROP_TABLE = re.compile(rf"\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?P<tables>{QNAME}(?:\s*,\s*{QNAME})*)", _I)
_REFRESH_MATVIEW = re.compile(r"\s*REFRESH\s+MATERIALIZED\s+VIEW\b", _I)
_CONCURRENTLY = re.compile(r"\bCONCURRENTLY\b", _I)
_REFERENCES = re.compile(rf"\bREFERENCES\s+(?P<target>{QNAME})", _I)
_ON_DELETE = re.compile(r"\bON\s+DELETE\b", _I)
_NOT_NULL = re.compile(r"\bNOT\s+NULL\b", _I)
_FILLS_VALUES = re.compile(r"\b(?:DEFAULT|GENERATED)\b", _I)
_SERIAL_TYPE = re.compile(r"\s*(?:small|big)?serial[248]?\b", _I)
_COLUMN_DEF = re.compile(
    rf"\s*(?!(?:CONSTRAINT|PRIMARY|UNIQUE|CHECK|FOREIGN|EXCLUDE|LIKE)\b)(?P<column>{IDENT})\s+(?P<definition>.*)", _I
)
# Where a column definition's type ends: its first constraint or option.
_TYPE_END = re.compile(
    r"\b(?:CONSTRAINT|NOT|NULL|DEFAULT|PRIMARY|UNIQUE|CHECK|REFERENCES|GENERATED|COLLATE|STORAGE|COMPRESSION)\b", _I
)
_COLLATE = re.compile(r"\bCOLLATE\b", _I)
_USING = re.compile(r"\bUSING\b", _I)


def table_name(qualified: str) -> str:
    """The unqualified, case-folded name PostgreSQL would use: `School."Grades"` -> `Grades`."""
    last: str = re.findall(IDENT, qualified)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def _shown(name: str) -> str:
    return " ".join(name.split())


# --- the statement rules ------------------------------------------------------------------------------------------


def _declared_type(definition: str) -> str | None:
    """The type at the start of a column definition (masked text), or None when a COLLATE makes it more than a
    type (a collation change on a later ALTER ... TYPE rebuilds indexes)."""
    ends = [m for m in _TYPE_END.finditer(definition) if _depth_at(definition, m.start()) == 0]
    if any(_COLLATE.fullmatch(m.group(0)) for m in ends):
        return None
    return definition[: ends[0].start()] if ends else definition


class _FileChecker:
    """Walks one file's statements in order, remembering the tables the file itself creates and the columns it
    adds, and keeping `columns` (the types the up files declare, in version order) up to date. A down file gets
    `undoing`: the checker of its up file, to tell what the down may drop."""

    def __init__(self, file: MigrationFile, columns: Columns, undoing: _FileChecker | None = None) -> None:
        self.file = file
        self.sql = file.sql
        self.masked = file.sql.masked
        self.down = file.kind == "down"
        self.columns = columns
        self.undoing = undoing
        self.created: set[str] = set()
        self.added: set[tuple[str, str]] = set()
        self.findings: list[Finding] = []
        #: (line, rule) of statements checked and found safe, where squawk's equivalent rule would still fire
        self.cleared: list[tuple[int, str]] = []

    def add(self, rule: str, offset: int, message: str) -> None:
        line, column = self.sql.position(offset)
        self.findings.append(finding(rule, self.file.path, line, column, message, down=self.down))

    def check(self, statement: Statement) -> None:
        start = statement.start
        code = self.masked[start : statement.end]
        self._concurrently(code, start)
        if m := _CREATE_TABLE.match(code):
            self._create_table(code, start, m)
        elif m := _ALTER_TABLE.match(code):
            self._alter_table(code, start, m)
        elif m := _CREATE_INDEX.match(code):
            self._create_index(start, m)
        elif m := _DROP_TABLE.match(code):
            self._drop_table(start, m)

    def _up_made(self, table: str, column: str | None = None) -> bool:
        """Whether this file (or, for a down file, its up) created the table, or added the column."""
        for checker in (self, self.undoing):
            if checker is not None and (table in checker.created or (table, column) in checker.added):
                return True
        return False

    def _concurrently(self, code: str, start: int) -> None:
        if self.file.no_transaction or _REFRESH_MATVIEW.match(code):
            return  # REFRESH MATERIALIZED VIEW CONCURRENTLY is allowed in a transaction
        if m := _CONCURRENTLY.search(code):
            self.add(
                "concurrently-in-transaction",
                start + m.start(),
                "CONCURRENTLY in a file that runs in a transaction (its first line is not `-- no-transaction`)",
            )

    def _create_table(self, code: str, start: int, m: re.Match[str]) -> None:
        table = table_name(m.group("table"))
        self.created.add(table)
        self.columns.create_table(table)
        rest = code[m.end() :]
        open_at = len(rest) - len(rest.lstrip())
        if rest[open_at : open_at + 1] != "(":
            return  # CREATE TABLE ... AS / PARTITION OF / a materialized view: no column list to check
        body_start = m.end() + open_at + 1
        body = code[body_start : m.end() + _matching_paren(rest, open_at)]
        for offset, element in _split_top_level(body):
            self._references(element, start + body_start + offset, table)
            if c := _COLUMN_DEF.match(element):
                self._declare(table, c.group("column"), _declared_type(c.group("definition")))

    def _declare(self, table: str, column: str, declared: str | None) -> None:
        self.columns.set(table, table_name(column), parse_type(declared) if declared is not None else None)

    def _alter_table(self, code: str, start: int, m: re.Match[str]) -> None:
        table = table_name(m.group("table"))
        shown = _shown(m.group("table"))
        # A table created earlier in this same file has no rows and no readers yet: anything goes.
        existing = table not in self.created
        for offset, action in _split_top_level(code[m.end() :]):
            at = start + m.end() + offset
            self._references(action, at, table)
            if a := _ADD_COLUMN.match(action):
                self._declare(table, a.group("column"), _declared_type(a.group("definition")))
                self.added.add((table, table_name(a.group("column"))))
                if existing:
                    self._add_column(a, at, shown)
            elif a := _DROP_COLUMN.match(action):
                column = table_name(a.group("column"))
                self.columns.drop(table, column)
                if not existing:
                    continue
                message = f"drops column {_shown(a.group('column'))} of table {shown}"
                if not self.down:
                    self.add("drop-column", at + a.start("kw"), message)
                elif not self._up_made(table, column):
                    self.add("down-loses-data", at + a.start("kw"), f"{message}, which its up file did not add")
            elif a := _RENAME_TABLE.match(action):
                self.columns.rename_table(table, table_name(a.group("new")))
                if existing and not self.down:
                    self.add("rename-table", at + a.start("kw"), f"renames table {shown} to {_shown(a.group('new'))}")
            elif a := _RENAME_COLUMN.match(action):
                self.columns.rename(table, table_name(a.group("column")), table_name(a.group("new")))
                if existing and not self.down:
                    self.add(
                        "rename-column",
                        at + a.start("kw"),
                        f"renames column {_shown(a.group('column'))} of table {shown} to {_shown(a.group('new'))}",
                    )
            elif a := _ALTER_TYPE.match(action):
                self._alter_type(action, at, a, table, shown, existing)

    def _alter_type(self, action: str, at: int, a: re.Match[str], table: str, shown_table: str, existing: bool) -> None:
        column = table_name(a.group("column"))
        old, new = self.columns.type_of(table, column), parse_type(a.group("type"))
        plain = not _USING.search(action, a.end()) and not _COLLATE.search(action, a.end())
        self.columns.set(table, column, new if plain else None)
        if not existing or self.down:
            return
        line = self.sql.position(at + a.start("kw"))[0]
        if old is not None and new is not None and plain and not rewrites(old, new):
            self.cleared.append((line, "change-column-type"))
            return
        if old is not None and new is not None:
            known = f"from {old} to {new}" + ("" if plain else " with USING or COLLATE")
        else:
            known = f"to {_shown(a.group('type'))} (its current type is not known from the migrations)"
        self.add(
            "change-column-type",
            at + a.start("kw"),
            f"changes the type of column {_shown(a.group('column'))} of table {shown_table} {known}",
        )

    def _add_column(self, a: re.Match[str], at: int, shown_table: str) -> None:
        definition = a.group("definition")
        if _FILLS_VALUES.search(definition) or _SERIAL_TYPE.match(definition):
            return
        for nn in _NOT_NULL.finditer(definition):
            # NOT NULL inside parentheses belongs to a CHECK (... IS NOT NULL), not to the column.
            if _depth_at(definition, nn.start()) == 0:
                self.add(
                    "add-not-null-without-default",
                    at + a.start("definition") + nn.start(),
                    f"adds NOT NULL column {_shown(a.group('column'))} to table {shown_table} without a default",
                )
                return

    def _references(self, element: str, at: int, table: str) -> None:
        refs = list(_REFERENCES.finditer(element))
        for i, ref in enumerate(refs):
            # The ON DELETE of this reference sits between it and the next one.
            until = refs[i + 1].start() if i + 1 < len(refs) else len(element)
            if not _ON_DELETE.search(element, ref.end(), until):
                self.add(
                    "fk-without-on-delete",
                    at + ref.start(),
                    f"foreign key from {table} to {_shown(ref.group('target'))} has no ON DELETE",
                )

    def _create_index(self, start: int, m: re.Match[str]) -> None:
        if m.group("concurrently") or table_name(m.group("table")) in self.created:
            return
        self.add(
            "index-without-concurrently",
            start + m.start() + (len(m.group(0)) - len(m.group(0).lstrip())),
            f"creates an index on existing table {_shown(m.group('table'))} without CONCURRENTLY",
        )

    def _drop_table(self, start: int, m: re.Match[str]) -> None:
        names = re.findall(QNAME, m.group("tables"))
        for name in names:
            self.columns.drop_table(table_name(name))
        names = [n for n in names if table_name(n) not in self.created]
        if self.down:
            rule, names = "down-loses-data", [n for n in names if not self._up_made(table_name(n))]
        else:
            rule = "drop-table"
        if names:
            self.add(
                rule,
                start + m.start() + (len(m.group(0)) - len(m.group(0).lstrip())),
                f"drops table{'s' if len(names) > 1 else ''} {', '.join(_shown(n) for n in names)}"
                + (", which its up file did not create" if self.down else ""),
            )


def _encoding_findings(file: MigrationFile) -> list[Finding]:
    found = []
    down = file.kind == "down"
    if file.text.startswith("\ufeff"):
        found.append(
            finding("byte-order-mark", file.path, 1, 1, "the file starts with a UTF-8 byte-order mark", down=down)
        )
    crlf = file.text.find("\r\n")
    if crlf >= 0:
        found.append(
            finding(
                "crlf-line-endings",
                file.path,
                file.sql.line_of(crlf),
                1,
                "the file has CRLF (Windows) line endings",
                down=down,
            )
        )
    return found


@dataclass
class Checked:
    """What our per-file rules found in some files, and the statements they checked and found safe."""

    findings: list[Finding]
    #: (path, rule, line): a statement our rule `rule` cleared (e.g. a type change without a rewrite)
    cleared: list[tuple[Path, str, int]]


def check_migrations(migrations: Sequence[Migration], wanted: Container[Path]) -> Checked:
    """Our per-file rules on the files of `migrations` (one directory, ascending) whose path is in `wanted`.

    Every up file is walked in version order, wanted or not, so that a type change is judged against the column
    types the earlier files declared; a down file is judged against its own up file."""
    columns = Columns()
    checked = Checked([], [])
    for migration in migrations:
        up_checker: _FileChecker | None = None
        for file in migration.files:
            checker = _FileChecker(file, Columns() if file.kind == "down" else columns, undoing=up_checker)
            if file.kind == "down" and file.path not in wanted:
                continue
            for statement in file.sql.statements:
                checker.check(statement)
            up_checker = checker
            if file.path in wanted:
                checked.findings += _encoding_findings(file) + checker.findings
                checked.cleared += [(file.path, rule, line) for line, rule in checker.cleared]
    return checked
