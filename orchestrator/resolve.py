"""The way out of `dirty`, once an operator has checked what an interrupted `-- no-transaction` file left behind
(the `dirty` hint says what to check), and of a harmless `modified`: record in the ledger what is true. Each takes
SQLx's lock, touches only the one row, and returns a `DatabaseResult` like every engine operation; the CLI's
`orchestrator resolve` calls them.

Only what is known is written. `--applied` and `--not-applied` settle an unfinished (`success = false`) row; a
school without one is left alone, `skipped` with a note saying why: a version with no row is pending, and recording
it would make every later run skip a file that never ran. The one exception is explicit: `schema_evidence`, the
versions a school was found at when its live schema equalled what those files and this version produce.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import asyncpg

from . import sqlx
from .applied_bytes import AppliedBytes, unseen_changes
from .audit.coverage import unseen
from .engine import EngineOptions, check_target_version, run_session
from .errors import ModifiedMigration
from .history import AppliedMigration, ensure_history_table, forget, read_history
from .lock import migration_lock
from .outcome import DatabaseResult, Status
from .source import CHECKSUM_BYTES, Migration, MigrationSource
from .target import DatabaseTarget

# What a resolve does on one school, holding SQLx's lock, from the ledger read under it (empty: no history table).
Decide = Callable[[asyncpg.Connection, dict[int, AppliedMigration], DatabaseResult], Awaitable[None]]


@dataclass(frozen=True)
class SchemaEvidence:
    """`--schema-evidence`, for one school: the versions its ledger showed applied when its live schema equalled
    what those files and the version being resolved produce; None when it did not (or could not be compared)."""

    matched_at: frozenset[int] | None = None


def left_alone(result: DatabaseResult, why: str) -> None:
    """Nothing to resolve here: no write, `skipped` (ok: the school was read, and nothing is wrong with it)."""
    result.status = Status.SKIPPED
    result.notes.append(why)


async def mark_applied(
    target: DatabaseTarget,
    source: MigrationSource,
    version: int,
    options: EngineOptions,
    *,
    evidence: SchemaEvidence | None = None,
) -> DatabaseResult:
    """The file took effect: its unfinished row becomes the one SQLx writes (success, the current file's checksum and
    description). A school with no row for it is left alone, unless `evidence` was sought and matched at exactly the
    versions its ledger shows applied now. An unfinished row holding another file's checksum is refused (`modified`):
    the bytes that ran are not the current file's; a row holding no checksum (another tool's placeholder: ours holds
    the file's) is resolved, with a note. Raises UsageError before connecting if `version` has no file."""
    check_target_version(source, version)
    migration = source.get(version)
    assert migration is not None
    # The schema proves nothing about a file whose effect it cannot show (rows, code run, privileges, ...).
    blind = unseen(migration.up_sql) if evidence is not None else ()

    async def decide(conn: asyncpg.Connection, ledger: dict[int, AppliedMigration], result: DatabaseResult) -> None:
        row = ledger.get(version)
        if row is not None and row.success:
            if row.checksum != migration.checksum:
                raise ModifiedMigration(
                    sqlx.modified_message(version),
                    versions=[version],
                    hint="resolving settles a partially applied row only; restore the applied file",
                )
            return left_alone(result, f"version {version} is already recorded as applied: nothing written")
        if row is None:
            applied = frozenset(v for v, r in ledger.items() if r.success)
            if evidence is not None and blind:
                return left_alone(
                    result,
                    f"version {version} is pending here (no history row); the schema is no evidence that "
                    f"{migration.filename} ran, it holds what the comparison cannot see "
                    f"({'; '.join(map(str, blind[:3]))}): nothing recorded",
                )
            if evidence is None or evidence.matched_at != applied:
                return left_alone(result, _pending_note(version, evidence))
            await ensure_history_table(conn, timeout=options.session.bookkeeping_timeout)
            result.notes.append(f"recorded on evidence: {_evidence(version, applied, source)}")
        elif len(row.checksum) == CHECKSUM_BYTES and row.checksum != migration.checksum:
            raise ModifiedMigration(
                sqlx.modified_message(version),
                versions=[version],
                hint=f"not resolved: {migration.filename} was edited since it ran here (its unfinished row holds the "
                "checksum of other bytes), so recording it would claim the edited file ran. Restore the file that "
                f"ran, then `orchestrator resolve --applied {version}`; or undo what it did and `orchestrator resolve "
                f"--not-applied {version}`",
            )
        else:
            result.notes.append(f"recorded {migration.filename} as applied")
            if row.checksum != migration.checksum:
                result.notes.append(
                    "its unfinished row held no checksum (written by another tool): which bytes ran is unknown; "
                    "recorded the current file's checksum"
                )
        await _write(conn, options, sqlx.UPSERT_APPLIED, version, migration.description, migration.checksum)
        result.status = Status.APPLIED

    return await _under_lock(target, options, decide)


def _pending_note(version: int, evidence: SchemaEvidence | None) -> str:
    pending = f"version {version} is pending here (no history row): `orchestrator migrate` runs it; nothing recorded"
    if evidence is None:
        return pending
    if evidence.matched_at is None:
        return (
            f"{pending} (the live schema is not what its applied files and version {version} produce, or could "
            "not be compared: `orchestrator audit` says how it differs)"
        )
    return f"{pending} (its ledger changed since the schema comparison: run again)"


def _evidence(version: int, applied: frozenset[int], source: MigrationSource) -> str:
    through = {m.version for m in source if m.version <= version}
    if applied | {version} == through:
        return f"live schema matches files through {version}"
    return f"live schema matches its applied files and {version}"


async def forget_version(target: DatabaseTarget, version: int, options: EngineOptions) -> DatabaseResult:
    """The file did not take effect (and what it half did was undone): delete its success = false row, so it is
    pending again. A school without such a row is left alone (an applied one is `revert`'s business)."""

    async def decide(conn: asyncpg.Connection, ledger: dict[int, AppliedMigration], result: DatabaseResult) -> None:
        row = ledger.get(version)
        if row is None:
            return left_alone(result, f"version {version} has no history row here (it is pending): nothing to forget")
        if row.success:
            return left_alone(
                result,
                f"version {version} is recorded as applied here (success = true), not partially applied: nothing "
                "forgotten (to undo an applied migration, revert it)",
            )
        await forget(conn, version, timeout=options.session.bookkeeping_timeout)
        result.status = Status.APPLIED
        result.notes.append(f"deleted the partially applied row of version {version}: it is pending again")

    return await _under_lock(target, options, decide)


async def restamp(
    target: DatabaseTarget,
    source: MigrationSource,
    version: int,
    options: EngineOptions,
    *,
    schema_matches: bool,
    allow_unverified: bool = False,
    history: Mapping[bytes, AppliedBytes] | None = None,
) -> DatabaseResult:
    """An applied file was edited without changing what it does: record the current file's checksum, so SQLx
    workers accept it again. Only where the school's live schema matches what the current files produce (the
    audit's comparison, `schema_matches`), and only where the applied bytes were found (`history`: the file's
    committed versions by checksum, applied_bytes.py) and hold the same statements the comparison cannot see as
    the current file (audit/coverage.py), or `allow_unverified` (the operator checked this school); otherwise the
    school is left `modified`, untouched."""
    migration = source.get(version)
    assert migration is not None
    blind = unseen(migration.up_sql)
    known = history or {}

    async def decide(conn: asyncpg.Connection, ledger: dict[int, AppliedMigration], result: DatabaseResult) -> None:
        row = ledger.get(version)
        if row is None or not row.success:
            state = "has no history row" if row is None else "is partially applied (success = false)"
            return left_alone(result, f"version {version} {state} here: nothing to re-stamp")
        if row.checksum == migration.checksum:
            return left_alone(result, f"{migration.filename}: the recorded checksum is already the current file's")
        found = known.get(row.checksum)
        changed = unseen_changes(found.text, migration.up_sql) if found else tuple(map(str, blind))
        if (found is None or changed) and not allow_unverified:
            raise _unverifiable(migration, found, changed)
        if not schema_matches:
            raise ModifiedMigration(
                sqlx.modified_message(version),
                versions=[version],
                hint="not re-stamped: this school's schema differs from what the current files produce (see "
                "`orchestrator audit`); restore the applied file, and put the change in a new migration",
            )
        await _write(conn, options, sqlx.RESTAMP, version, migration.checksum)
        result.status = Status.APPLIED
        result.notes.append(f"re-stamped {migration.filename} with the current file's checksum")
        result.notes.append(f"applied bytes found in git at {found.rev}" if found else "applied bytes not found")
        if found is None or changed:
            result.notes.append(
                "--allow-unverified: re-stamped although "
                + ("the applied bytes were not found" if found is None else "")
                + (" and " if found is None and changed else "")
                + (f"the schema comparison cannot see {'; '.join(changed)}" if changed else "")
            )

    return await _under_lock(target, options, decide)


def _unverifiable(migration: Migration, found: AppliedBytes | None, changed: tuple[str, ...]) -> ModifiedMigration:
    listed = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more" if len(changed) > 5 else "")
    if found is None:
        why = (
            f"applied bytes not found: no commit of {migration.filename} in the git history of its directory has "
            "the checksum recorded here, so what the edit removed or changed cannot be checked"
            + (f"; the current file holds what the schema comparison cannot see ({listed})" if changed else "")
        )
    else:
        why = (
            f"applied bytes found in git at {found.rev}: they and the current file differ in what the schema "
            f"comparison cannot see ({listed}), so the edit would not show"
        )
    return ModifiedMigration(
        sqlx.modified_message(migration.version),
        versions=[migration.version],
        hint=f"not re-stamped: {why}. Restore the applied file and put the change in a new migration; or, once "
        "you have checked a school yourself, re-stamp it by name: `orchestrator resolve --restamp "
        f"{migration.version} --allow-unverified --tenant ID`",
    )


async def _under_lock(target: DatabaseTarget, options: EngineOptions, decide: Decide) -> DatabaseResult:
    """Open the school's session, take SQLx's lock, read the ledger, and let `decide` write (or not)."""

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        quick = options.session.bookkeeping_timeout
        async with migration_lock(conn, target.database, options.lock_wait, timeout=quick):
            ledger = await read_history(conn, timeout=quick)
            await decide(conn, ledger or {}, result)

    return await run_session(target, options, create=False, work=work)


async def _write(conn: asyncpg.Connection, options: EngineOptions, statement: str, *args: object) -> None:
    await conn.execute(statement, *args, timeout=options.session.bookkeeping_timeout)
