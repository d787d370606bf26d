"""`migrate --rehearse`: try the rollout on a scratch database before any school sees it.

For each version the fleet stands at (read-only status pass first), a scratch database is built from the migrations
up to that version; then the pending files are applied, reverted with their down files, and applied again. Any
failure stops the rollout before a school is touched. Scratch databases are always dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from . import engine
from .bootstrap import scratch_database
from .command import Command
from .engine import EngineOptions
from .errors import DatabaseError
from .fleet import run_fleet
from .job import Job
from .logsetup import get_logger
from .operations import make_work
from .outcome import DatabaseResult
from .source import MigrationSource
from .target import DatabaseTarget

log = get_logger("orchestrator.rehearsal")


@dataclass(frozen=True)
class Rehearsal:
    ok: bool
    lines: list[str]  # what was rehearsed, in words
    error: str | None = None


async def rehearse(job: Job) -> Rehearsal:
    status = job.as_command(Command.STATUS)
    run = await run_fleet(status.tenants, make_work(status), replace(status.fleet_options, handle_signals=False))
    reachable = [o for o in run.outcomes if o.result.error is None]
    versions = sorted({o.result.version_after or 0 for o in reachable})
    reference_url = job.request.gate.reference_url
    if reference_url:
        server = DatabaseTarget.parse(reference_url)
    elif reachable:
        server = reachable[0].tenant.target
    else:
        return Rehearsal(False, [], "no reachable school to rehearse on (give --reference-url)")
    lines = []
    for base in versions:
        outcome = await _rehearse_from(server, job.source, job.scratch_options, base)
        lines.append(outcome.lines[0] if outcome.ok else f"from version {base or 'nothing'}: FAILED")
        if not outcome.ok:
            return Rehearsal(False, lines, outcome.error)
    return Rehearsal(True, lines)


async def _rehearse_from(
    server: DatabaseTarget, source: MigrationSource, options: EngineOptions, base: int
) -> Rehearsal:
    base_source = MigrationSource(source.directory, tuple(m for m in source if m.version <= base))
    where = f"from version {base or 'nothing'}"
    try:
        async with scratch_database(server, "rehearse", options.session) as scratch:
            steps: list[tuple[str, DatabaseResult]] = []
            build = await engine.provision(scratch, base_source, replace(options, target_version=None))
            steps.append(("building the scratch database at that version", build))
            if build.ok:
                up = await engine.migrate(scratch, source, options)
                steps.append(("applying the pending migrations", up))
                if up.ok and up.applied_versions:
                    down = await engine.revert(scratch, source, base, options)
                    steps.append(("reverting them with their down files", down))
                    if down.ok:
                        steps.append(("applying them again", await engine.migrate(scratch, source, options)))
    except DatabaseError as exc:
        return Rehearsal(False, [], f"rehearsal {where} failed: {exc.message}")
    for what, result in steps:
        if not result.ok:
            message = result.error.message if result.error else result.status.value
            return Rehearsal(False, [], f"rehearsal {where} failed while {what}: {message}")
    applied = steps[1][1].applied_versions if len(steps) > 1 else []
    verb = "up, down and up again" if applied else "nothing pending"
    log.info("rehearsal.ok", base=base, applied=applied)
    return Rehearsal(True, [f"{where}: {len(applied)} migration(s) {verb}: ok"])
