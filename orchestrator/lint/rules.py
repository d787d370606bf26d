"""Our own lint rules: the platform's rules for migrations that run on every school database.

Rules match the statements of `sqltext.SqlText` against its *masked* copy of the file, where comments, string
literals and dollar-quoted bodies are blanked out (same length, newlines kept). So a `DROP COLUMN` inside a
comment or a function body is not a finding, and every match maps straight back to a line and column.

What makes a directory unusable (names, versions, pairs, encoding, several statements in a `-- no-transaction`
file) is not a rule here: the loader (`source.load_migrations`) refuses it, for `lint` exactly as for `migrate`.

Destructive rules (drops, renames, type changes) apply to up files only: a down file exists to undo its up, so
it may drop what the up created. The rest (foreign keys, NOT NULL columns, indexes, transactions, encoding)
apply to both, because a down that fails is as bad as an up that fails.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..source import MigrationFile
from ..sqltext import Statement
from .findings import Finding, Severity


@dataclass(frozen=True)
class RuleInfo:
    severity: Severity
    why: str
    instead: str
    #: False for findings an in-file comment must not wave through (see suppress.py)
    suppressible: bool = True


_SUPPRESS_HINT = (
    "or, if it is safe here and no school has applied the file yet, suppress it with a reason: "
    "`-- lint:ignore {rule} reason: <why it is safe>` (never in an applied file: the comment changes its checksum "
    "and SQLx workers refuse to start; record applied files with `orchestrator lint --baseline`)"
)

CATALOG: dict[str, RuleInfo] = {
    "drop-column": RuleInfo(
        "error",
        "every school database loses the column while application code that still reads or writes it may be "
        "running; those queries fail on hundreds of databases at once, and the data cannot be brought back by "
        "the down migration",
        "ship code that stops using the column first, then drop it in a later release; "
        + _SUPPRESS_HINT.format(rule="drop-column"),
    ),
    "drop-table": RuleInfo(
        "error",
        "the table and its data disappear from every school database, while application code that still "
        "uses it may be running; the down migration can recreate the table but not its rows",
        "ship code that stops using the table first, then drop it in a later release (keep a backup); "
        + _SUPPRESS_HINT.format(rule="drop-table"),
    ),
    "rename-column": RuleInfo(
        "error",
        "application code that uses the old name keeps running until every instance is redeployed; during "
        "the rollout across the fleet its queries fail on every database that has migrated",
        "expand and contract: add the new column, write to both, backfill, switch reads, and drop the old "
        "column in a later release; " + _SUPPRESS_HINT.format(rule="rename-column"),
    ),
    "rename-table": RuleInfo(
        "error",
        "application code that uses the old name keeps running until every instance is redeployed; during "
        "the rollout across the fleet its queries fail on every database that has migrated",
        "create the new table (or keep a view under the old name during the transition) and drop the old one "
        "in a later release; " + _SUPPRESS_HINT.format(rule="rename-table"),
    ),
    "change-column-type": RuleInfo(
        "error",
        "most type changes rewrite the whole table under an ACCESS EXCLUSIVE lock (no reads, no writes until "
        "done) and can break code that reads the column; on a big school that is downtime, repeated on every "
        "database of the rollout",
        "add a new column of the new type, backfill it in batches, switch the code, and drop the old column "
        "later; changes that need no rewrite (varchar(n) to text or to a longer varchar) can be suppressed "
        "with a reason: `-- lint:ignore change-column-type reason: ...`",
    ),
    "add-not-null-without-default": RuleInfo(
        "error",
        "on a table that has rows PostgreSQL rejects a new NOT NULL column without a default (the existing "
        "rows would hold NULL): the migration fails on every school that has data and succeeds on empty "
        "ones, which splits the fleet",
        "give the column a DEFAULT (a constant default is instant on PostgreSQL 11+), or add it nullable, "
        "backfill it, and set NOT NULL in a later migration",
    ),
    "fk-without-on-delete": RuleInfo(
        "error",
        "without ON DELETE the foreign key silently means NO ACTION: deleting a parent row fails wherever a "
        "child row exists, so the same delete works in one school and errors in another; the platform "
        "requires every foreign key to say what happens",
        "state it: ON DELETE CASCADE, ON DELETE SET NULL, or an explicit ON DELETE RESTRICT / NO ACTION",
    ),
    "index-without-concurrently": RuleInfo(
        "error",
        "CREATE INDEX without CONCURRENTLY blocks every write to the table for the whole build; on a big table "
        "that is a write outage in each school during the rollout",
        "put `CREATE INDEX CONCURRENTLY IF NOT EXISTS ...` alone in its own migration whose first line is "
        "`-- no-transaction` (indexes on tables created in the same file are fine as they are)",
    ),
    "concurrently-in-transaction": RuleInfo(
        "error",
        "PostgreSQL refuses CONCURRENTLY inside a transaction block, and SQLx runs every file in a transaction "
        "unless its first line is `-- no-transaction`: the migration fails on every database",
        "make `-- no-transaction` the file's first line and keep that statement alone in its file",
        suppressible=False,  # it fails on every database: there is no reason that makes it safe
    ),
    "byte-order-mark": RuleInfo(
        "error",
        "SQLx sends the file's bytes as they are and PostgreSQL does not skip a byte-order mark, so the first "
        "statement fails with a syntax error (and a `-- no-transaction` first line is no longer recognised); "
        "the mark is also part of the checksum",
        "re-save the file as UTF-8 without a byte-order mark",
        suppressible=False,
    ),
    "crlf-line-endings": RuleInfo(
        "warning",
        "the checksum SQLx records covers the exact bytes, line endings included; if a later checkout turns "
        "them into LF (git autocrlf), every database that applied the file reports it as modified and refuses "
        "to migrate",
        "convert the file to LF line endings and add `*.sql -text` to .gitattributes",
    ),
    "released-file-edited": RuleInfo(
        "error",
        "SQLx stores the checksum of every applied file: each school database that already ran this migration "
        "reports it as modified and refuses to migrate, and databases that have not run it yet get different "
        "SQL than the rest of the fleet",
        "restore the released version (`git checkout <release> -- <file>`) and put the change in a new "
        "migration (`orchestrator new <description>`); this cannot be suppressed for up files",
    ),
    "released-file-deleted": RuleInfo(
        "error",
        "databases that applied the deleted migration report it as missing and refuse to migrate",
        "restore the file; to undo what it did, add a new migration",
        suppressible=False,
    ),
    "released-sum-edited": RuleInfo(
        "error",
        "released.sum is the record of what reached the fleet; a hand edit (or a merge of two releases) means "
        "edits to released files may go unnoticed",
        "restore released.sum from version control; after a merge of two branches that both released, take "
        "the version of the branch merged into and run `orchestrator lint --release` to record the new files",
        suppressible=False,
    ),
    "suppression-without-reason": RuleInfo(
        "error",
        "a suppression without a reason hides a fleet-wide risk from reviewers, who cannot tell an informed "
        "decision from a silenced warning",
        "say why it is safe: `-- lint:ignore <rule> reason: <why>`",
        suppressible=False,
    ),
    "suppression-without-rule": RuleInfo(
        "error",
        "a `lint:ignore` that names no rule suppresses nothing, which is easy to miss",
        "name the rule ids it suppresses: `-- lint:ignore drop-column reason: <why>`",
        suppressible=False,
    ),
    "misplaced-suppression": RuleInfo(
        "error",
        "`lint:ignore-file` only counts in the file's first comment block; elsewhere it suppresses nothing, "
        "which is easy to miss",
        "move it to the comments at the top of the file, or use `-- lint:ignore <rule> reason: ...` on the "
        "line before the statement",
        suppressible=False,
    ),
}


def finding(
    rule: str,
    path: Path,
    line: int,
    column: int,
    message: str,
    *,
    why: str | None = None,
    instead: str | None = None,
) -> Finding:
    """A finding of one of our rules, with the catalogue's severity, why and instead unless given."""
    info = CATALOG[rule]
    return Finding(
        rule=rule,
        severity=info.severity,
        path=path,
        line=line,
        column=column,
        message=message,
        why=why or info.why,
        instead=instead or info.instead,
    )


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


def table_name(qualified: str) -> str:
    """The unqualified, case-folded name PostgreSQL would use: `School."Grades"` -> `Grades`."""
    last: str = re.findall(IDENT, qualified)[-1]
    return last[1:-1].replace('""', '"') if last.startswith('"') else last.lower()


def _shown(name: str) -> str:
    return " ".join(name.split())


# --- the statement rules ------------------------------------------------------------------------------------------


class _FileChecker:
    """Walks one file's statements in order, remembering the tables the file itself creates."""

    def __init__(self, file: MigrationFile) -> None:
        self.file = file
        self.sql = file.sql
        self.masked = file.sql.masked
        self.destructive_rules = file.kind != "down"
        self.created: set[str] = set()
        self.findings: list[Finding] = []

    def add(self, rule: str, offset: int, message: str) -> None:
        line, column = self.sql.position(offset)
        self.findings.append(finding(rule, self.file.path, line, column, message))

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
        elif (m := _DROP_TABLE.match(code)) and self.destructive_rules:
            self._drop_table(start, m)

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
        rest = code[m.end() :]
        open_at = len(rest) - len(rest.lstrip())
        if rest[open_at : open_at + 1] != "(":
            return  # CREATE TABLE ... AS / PARTITION OF / a materialized view: no column list to check
        body_start = m.end() + open_at + 1
        body = code[body_start : m.end() + _matching_paren(rest, open_at)]
        for offset, element in _split_top_level(body):
            self._references(element, start + body_start + offset, table)

    def _alter_table(self, code: str, start: int, m: re.Match[str]) -> None:
        table = table_name(m.group("table"))
        shown = _shown(m.group("table"))
        # A table created earlier in this same file has no rows and no readers yet: anything goes.
        existing = table not in self.created
        for offset, action in _split_top_level(code[m.end() :]):
            at = start + m.end() + offset
            self._references(action, at, table)
            if not existing:
                continue
            if a := _ADD_COLUMN.match(action):
                self._add_column(a, at, shown)
            elif not self.destructive_rules:
                continue
            elif a := _DROP_COLUMN.match(action):
                self.add(
                    "drop-column",
                    at + a.start("kw"),
                    f"drops column {_shown(a.group('column'))} of table {shown}",
                )
            elif a := _RENAME_TABLE.match(action):
                self.add("rename-table", at + a.start("kw"), f"renames table {shown} to {_shown(a.group('new'))}")
            elif a := _RENAME_COLUMN.match(action):
                self.add(
                    "rename-column",
                    at + a.start("kw"),
                    f"renames column {_shown(a.group('column'))} of table {shown} to {_shown(a.group('new'))}",
                )
            elif a := _ALTER_TYPE.match(action):
                self.add(
                    "change-column-type",
                    at + a.start("kw"),
                    f"changes the type of column {_shown(a.group('column'))} of table {shown} "
                    f"to {_shown(a.group('type'))}",
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
        names = [n for n in re.findall(QNAME, m.group("tables")) if table_name(n) not in self.created]
        if names:
            self.add(
                "drop-table",
                start + m.start() + (len(m.group(0)) - len(m.group(0).lstrip())),
                f"drops table{'s' if len(names) > 1 else ''} {', '.join(_shown(n) for n in names)}",
            )


def _encoding_findings(file: MigrationFile) -> list[Finding]:
    found = []
    if file.text.startswith("\ufeff"):
        found.append(finding("byte-order-mark", file.path, 1, 1, "the file starts with a UTF-8 byte-order mark"))
    crlf = file.text.find("\r\n")
    if crlf >= 0:
        found.append(
            finding(
                "crlf-line-endings", file.path, file.sql.line_of(crlf), 1, "the file has CRLF (Windows) line endings"
            )
        )
    return found


def check_file(file: MigrationFile) -> list[Finding]:
    """Every finding of our per-file rules on one migration file."""
    checker = _FileChecker(file)
    for statement in file.sql.statements:
        checker.check(statement)
    return _encoding_findings(file) + checker.findings
