"""Read one school's history and live schema, strictly read-only.

The session is opened with `default_transaction_read_only = on` and every query runs in a read-only transaction,
so even a bug here cannot write to a school: the server would refuse it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg

from .. import sqlx
from ..engine import EngineOptions, run_session
from ..history import AppliedMigration, history_exists, problems, read_applied
from ..lock import current_holder
from ..outcome import DatabaseResult, Status
from ..serverversion import SERVER_MAJOR
from ..settings import BUILTIN
from ..source import MigrationSource
from ..target import DatabaseTarget
from .model import Finding
from .schema import SchemaSnapshot, snapshot

# One row even without extensions: the installed ones, and the server's major version (its reference's version).
EXTENSIONS_AND_VERSION = f"SELECT ARRAY(SELECT extname::text FROM pg_extension) AS extensions, {SERVER_MAJOR} AS major"


@dataclass
class LiveState:
    result: DatabaseResult
    findings: list[Finding] = field(default_factory=list)
    schema: SchemaSnapshot | None = None
    applied: frozenset[int] = frozenset()
    # Applied versions with no file in the source, accepted by --ignore-missing: the schema comparison can then
    # only cover what the files create (audit/run.py).
    fileless: tuple[int, ...] = ()
    extensions: tuple[str, ...] = ()  # the ones this school is set up with (its expected schema includes them)
    server_major: int | None = None  # PostgreSQL major version of the school's server (its reference's version)


def history_findings(
    applied: dict[int, AppliedMigration], source: MigrationSource, *, has_history: bool, ignore_missing: bool = False
) -> list[Finding]:
    """Every history drift at once (SQLx stops at the first; an audit wants them all)."""
    if not has_history:
        return [Finding("no_history", f"no {sqlx.HISTORY_TABLE} table: this school was never bootstrapped")]
    # The audit's kinds predate problems(): a missing file is reported as `ahead`.
    found = problems(applied, source, ignore_missing=ignore_missing)
    findings = [Finding({"missing": "ahead"}.get(p.kind, p.kind), p.text) for p in found]
    pending = [m.version for m in source if m.version not in applied]
    if pending:
        listed = ", ".join(map(str, pending[:5])) + (" ..." if len(pending) > 5 else "")
        findings.append(Finding("pending", f"{len(pending)} migration(s) pending: {listed}"))
    return findings


async def inspect_school(
    target: DatabaseTarget,
    source: MigrationSource,
    options: EngineOptions,
    *,
    expected_extensions: tuple[str, ...] | None = None,
    extensions_origin: str = "configured in the registry",
    schema: bool = True,
) -> LiveState:
    """History, extensions and (when `schema`) the live schema of one school, in one read-only transaction.

    `expected_extensions`: what the registry (or a flag) configures, `extensions_origin` saying where; a missing one
    is a finding. None: nothing is configured, so none is required (the expected schema then holds only the
    extensions the migrations create)."""
    state = LiveState(DatabaseResult(database=target.database, server=target.server, status=Status.UP_TO_DATE))

    async def work(conn: asyncpg.Connection, result: DatabaseResult) -> None:
        async with conn.transaction(readonly=True):
            has_history = await history_exists(conn)
            applied = await read_applied(conn) if has_history else {}
            extensions, state.server_major = await conn.fetchrow(EXTENSIONS_AND_VERSION) or ((), None)
            present = set(extensions)
            if schema:
                state.schema = await snapshot(conn)
            holder = await current_holder(conn, target.database)
            if holder is not None:
                result.notes.append(f"a migration is in progress (the SQLx lock is held by {holder})")
        state.applied = frozenset(v for v, row in applied.items() if row.success)
        if options.ignore_missing:
            state.fileless = tuple(sorted(v for v in state.applied if source.get(v) is None))
        state.findings = history_findings(
            applied, source, has_history=has_history, ignore_missing=options.ignore_missing
        )
        if expected_extensions is None:
            state.extensions = tuple(name for name in BUILTIN.extensions if name in present)
        else:
            state.extensions = expected_extensions
            state.findings += [
                Finding("extension_missing", f"extension {name} is not installed ({extensions_origin})")
                for name in expected_extensions
                if name not in present
            ]
        result.version_before = result.version_after = max(applied) if applied else None
        result.pending = [m.version for m in source if m.version not in applied]
        result.status = Status.DRIFT if state.findings else Status.UP_TO_DATE

    state.result = await run_session(target, options, create=False, work=work, read_only=True)
    return state
