"""`migrate --rehearse`: try the rollout on a scratch database before any school sees it.

For each version the fleet stands at (read-only status pass first), a scratch database is built from the migrations
up to that version; then the pending files are applied, reverted with their down files, and applied again. Any
failure stops the rollout before a school is touched. Scratch databases are always dropped. Where: on a server of
each PostgreSQL major version the fleet runs (a file can pass on 15 and fail on 18): the --reference-url server of
that version (one per version), else the first reachable school's server of it.
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
from .serverversion import first_server_per_major
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
    if job.request.gate.reference_url:
        candidates = [DatabaseTarget.parse(url) for url in job.request.gate.reference_url]
    else:
        candidates = [o.tenant.target for o in reachable]
    if not candidates:
        return Rehearsal(False, [], "no reachable school to rehearse on (give --reference-url)")
    servers, problems = await first_server_per_major(candidates, job.scratch_options.session)
    if problems and job.request.gate.reference_url:
        return Rehearsal(False, [], f"rehearsal server not reached: {problems[0]}")
    if not servers:
        return Rehearsal(False, [], f"no server to rehearse on answered: {problems[0]}")
    lines = []
    for major, server in sorted(servers.items()):
        on = f"on PostgreSQL {major} ({server.server}), " if len(servers) > 1 else ""
        for base in versions:
            outcome = await _rehearse_from(server, job.source, job.scratch_options, base)
            lines.append(on + (outcome.lines[0] if outcome.ok else f"from version {base or 'nothing'}: FAILED"))
            if not outcome.ok:
                return Rehearsal(False, lines, outcome.error)
    return Rehearsal(True, lines)


async def _rehearse_from(
    server: DatabaseTarget, source: MigrationSource, options: EngineOptions, base: int
) -> Rehearsal:
    base_source = source.subset(lambda m: m.version <= base)
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
