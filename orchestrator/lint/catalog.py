"""The catalogue of our lint rules: each rule's severity, why it matters on a fleet of school databases, and what to
do instead (with advice for a down file where it differs). rules.py, naming.py, released.py and suppress.py report
findings through `finding()`.

Two kinds of rule (`RuleInfo.busy_tables`), for the safety gate in front of `migrate`, which judges a file by where
it will run (gate.py):
- busy-table rules, about what a statement does to a table that has rows and traffic: the locks it takes (an index
  built without CONCURRENTLY), the rewrite it forces (a type change), the rows it fails on (NOT NULL without a
  default), and the application code still running against it (a column or table dropped or renamed). A new school
  with no history (no ledger rows, no tables of its own) has no rows, no readers and no writers: applied there, in
  order, each of these statements is instant and harmless, so the gate does not apply them to such a school;
- the other rules are about the file or the schema it leaves, and hold wherever it runs: a statement that fails on
  every database (CONCURRENTLY in a transaction, a byte-order mark), a foreign key without ON DELETE (a delete then
  works in one school and fails in another, once the new school has rows too), released files, suppressions.
`lint` itself reports every rule: it does not know where a file will run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .findings import Finding, Severity
from .squawk import EQUIVALENT_RULES


@dataclass(frozen=True)
class RuleInfo:
    severity: Severity
    why: str
    instead: str
    #: False for findings an in-file comment must not wave through (see suppress.py)
    suppressible: bool = True
    #: what to do instead when the finding is in a down file, where that differs
    down_instead: str | None = None
    #: about tables with rows and traffic (locks, rewrites, rows, running code): not applied by the safety gate to a
    #: school with no history, where the tables are new and empty (see the module's docstring)
    busy_tables: bool = False


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
        busy_tables=True,
    ),
    "drop-table": RuleInfo(
        "error",
        "the table and its data disappear from every school database, while application code that still "
        "uses it may be running; the down migration can recreate the table but not its rows",
        "ship code that stops using the table first, then drop it in a later release (keep a backup); "
        + _SUPPRESS_HINT.format(rule="drop-table"),
        busy_tables=True,
    ),
    "rename-column": RuleInfo(
        "error",
        "application code that uses the old name keeps running until every instance is redeployed; during "
        "the rollout across the fleet its queries fail on every database that has migrated",
        "expand and contract: add the new column, write to both, backfill, switch reads, and drop the old "
        "column in a later release; " + _SUPPRESS_HINT.format(rule="rename-column"),
        busy_tables=True,
    ),
    "rename-table": RuleInfo(
        "error",
        "application code that uses the old name keeps running until every instance is redeployed; during "
        "the rollout across the fleet its queries fail on every database that has migrated",
        "create the new table (or keep a view under the old name during the transition) and drop the old one "
        "in a later release; " + _SUPPRESS_HINT.format(rule="rename-table"),
        busy_tables=True,
    ),
    "change-column-type": RuleInfo(
        "error",
        "most type changes rewrite the whole table under an ACCESS EXCLUSIVE lock (no reads, no writes until "
        "done) and can break code that reads the column; on a big school that is downtime, repeated on every "
        "database of the rollout",
        "add a new column of the new type, backfill it in batches, switch the code, and drop the old column "
        "later. Changes that need no rewrite (varchar(n) to text or to a longer varchar, numeric to a larger "
        "precision with the same scale, a longer timestamp precision) are not reported when the column's type is "
        "known from the earlier migrations, without USING or COLLATE; for one whose type is declared elsewhere, "
        "suppress with a reason: `-- lint:ignore change-column-type reason: ...`",
        busy_tables=True,
    ),
    "add-not-null-without-default": RuleInfo(
        "error",
        "on a table that has rows PostgreSQL rejects a new NOT NULL column without a default (the existing "
        "rows would hold NULL): the migration fails on every school that has data and succeeds on empty "
        "ones, which splits the fleet",
        "give the column a DEFAULT (a constant default is instant on PostgreSQL 11+), or add it nullable, "
        "backfill it, and set NOT NULL in a later migration",
        down_instead="the rollback fails on every school with rows: re-add the column nullable (its old values are "
        "gone anyway) or with a DEFAULT",
        busy_tables=True,
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
        down_instead="a down file has its own `-- no-transaction` first line, independent of its up: make that the "
        "down's first line and `CREATE INDEX CONCURRENTLY IF NOT EXISTS ...` its only statement, or suppress it "
        "with a reason if the table is small",
        busy_tables=True,
    ),
    "concurrently-in-transaction": RuleInfo(
        "error",
        "PostgreSQL refuses CONCURRENTLY inside a transaction block, and SQLx runs every file in a transaction "
        "unless its first line is `-- no-transaction`: the migration fails on every database",
        "make `-- no-transaction` the file's first line and keep that statement alone in its file",
        suppressible=False,
        down_instead="make `-- no-transaction` the down file's first line (it has its own, independent of its up) "
        "and keep that statement alone in it",  # it fails on every database: there is no reason that makes it safe
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
    "down-loses-data": RuleInfo(
        "warning",
        "a down file undoes its up; dropping a table or column its up did not create throws away data that was "
        "there before the up ran, on every school that rolls back",
        "drop only what the up file created; if the up really made the data obsolete, say so with "
        "`-- lint:ignore down-loses-data reason: ...`",
    ),
    "up-without-down": RuleInfo(
        "warning",
        "nothing can undo it: `orchestrator revert` refuses to go past it, and `sqlx migrate revert` skips it "
        "(leaving its row) while reverting the older migrations beneath it",
        "add a down file of the same name ending in .down.sql (only the up file's checksum is recorded, so this is "
        "safe even where it is applied); if it cannot be undone, rename it to end in plain .sql instead (same "
        "version, description and checksum: also safe where it is applied), which says so",
    ),
    "down-beside-plain-file": RuleInfo(
        "warning",
        "SQLx pairs up and down files by version alone: this down file makes a plain .sql migration reversible, "
        "which its name does not say",
        "rename the plain file to end in .up.sql (same version, description and checksum: safe even where it is "
        "applied), or remove the down file",
    ),
    "down-named-differently": RuleInfo(
        "warning",
        "SQLx pairs up and down files by version alone, so this down file undoes an up file whose name says "
        "something else; readers pair them by name",
        "rename the down file after its up file (down files are not checksummed: renaming is safe)",
    ),
    "version-with-sign": RuleInfo(
        "warning",
        "SQLx reads a `+` before the version as Rust does (`+7` is version 7), but other tools and readers may not",
        "drop the `+` from the name (same version, description and checksum: safe even where it is applied)",
    ),
    "ignored-entry": RuleInfo(
        "warning",
        "an entry named like a migration that is not a regular file (a directory, a named pipe, a link to a device) "
        "is ignored by SQLx and by this tool: whatever it was meant to hold never runs",
        "make it a regular file (or a symbolic link to one), or rename it so that it does not end in .sql",
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


def busy_tables(rule: str) -> bool:
    """Whether `rule` (ours, or squawk's with the `squawk:` prefix) is about tables with rows and traffic. A squawk rule
    counts as its equivalent of ours (squawk.EQUIVALENT_RULES); squawk's other rules, like unknown ones, hold
    everywhere."""
    if rule.startswith("squawk:"):
        rule = EQUIVALENT_RULES.get(rule.removeprefix("squawk:"), rule)
    info = CATALOG.get(rule)
    return info is not None and info.busy_tables


def finding(
    rule: str,
    path: Path,
    line: int,
    column: int,
    message: str,
    *,
    why: str | None = None,
    instead: str | None = None,
    down: bool = False,
) -> Finding:
    """A finding of one of our rules, with the catalogue's severity, why and instead unless given (`down`: the
    finding is in a down file, and gets the advice for one where the catalogue has it)."""
    info = CATALOG[rule]
    return Finding(
        rule=rule,
        severity=info.severity,
        path=path,
        line=line,
        column=column,
        message=message,
        why=why or info.why,
        instead=instead or (down and info.down_instead) or info.instead,
    )
