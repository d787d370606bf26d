"""`lint --baseline`: which migration files the fleet has applied, read from the schools' ledgers (read-only).

Adopting a live SQLx project means recording as released (`released.sum`) the files its schools already applied,
as they are: they can no longer be fixed, only never edited. A file no school has applied is new: recording it would
let it through the safety gate for good, unfixed. So the baseline reads the fleet first: a `status` pass over the
registry's schools (or one database, `-D`) through the runner, with the linted directories as one source over one
ledger (as `migrate --migrations A --migrations B` reads them), and a file counts as applied when some school's
ledger holds its version with its exact bytes. A school whose ledger cannot be read (unreachable, dirty, ...) is
named: a file only it applied stays unrecorded, and the gate keeps judging it where it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from . import eventloop
from .command import Command
from .errors import ModifiedMigration, UsageError
from .outcome import Status

if TYPE_CHECKING:
    from .lint import LintReport, ReleasedFile


@dataclass
class FleetApplied:
    """What the fleet's ledgers say about a migrations directory."""

    #: resolved paths of the files (ups and their downs) of the versions some school applied with these exact bytes
    files: set[Path] = field(default_factory=set)
    schools: int = 0
    #: schools whose ledger could not be read or checked, with why
    unread: list[str] = field(default_factory=list)


def read_applied(
    directories: Sequence[Path], database_url: str | None, registry: Path, *, ignore_missing: bool = False
) -> FleetApplied:
    """Read the ledgers of the registry's schools (or of `database_url`) against `directories` (one source). Raises
    UsageError (exit 2, nothing read) when there is no fleet to read: no database URL and no registry file."""
    from .job import Request, prepare
    from .runner import run

    if database_url is None and not registry.is_file():
        raise UsageError(
            f"--baseline records only the files some school has applied, so it reads the fleet's ledgers "
            f"(read-only), and there is no fleet to read: {registry} does not exist",
            hint="pass --registry PATH (the schools' registry) or -D URL (one school's database); a file no school "
            "has applied is not recorded: fix it instead (`orchestrator lint` says how)",
        )
    request = Request(
        Command.STATUS,
        migrations=tuple(directories),
        database_url=database_url,
        registry=registry,
        ignore_missing=ignore_missing,
    )
    job = prepare(request)
    report = eventloop.run(run, job)
    found = FleetApplied(schools=len(report.outcomes))
    for o in report.outcomes:
        result = o.result
        if result.status is Status.NO_DATABASE:
            continue  # nothing applied there yet
        if not result.ok and not isinstance(result.error, ModifiedMigration):
            why = result.error.message if result.error else result.status.value
            found.unread.append(f"{o.tenant.id} ({result.status.value}: {why})")
            continue
        other_bytes = set(result.error.versions) if isinstance(result.error, ModifiedMigration) else set()
        pending = set(result.pending)
        for m in job.source:
            if m.version not in pending and m.version not in other_bytes:
                found.files.update(p.resolve() for p in (m.up_path, m.down_path) if p is not None)
    return found


def baseline(
    paths: Sequence[Path],
    *,
    released_file: ReleasedFile,
    use_squawk: bool,
    database_url: str | None,
    registry: Path,
    ignore_missing: bool = False,
) -> LintReport:
    """`lint --baseline`: lint `paths` (migrations directories, or files in them) and record as released those
    files some school of the fleet has applied. The paths' directories are read as one source over one ledger, as
    `migrate` reads several --migrations. Raises InvalidInput (exit 2) before reading anything when there is no
    fleet to read."""
    from .lint import lint_paths

    directories: dict[Path, Path] = {}  # each once, in the order given
    for path in paths:
        directory = path if path.is_dir() else path.parent
        directories.setdefault(directory.resolve(), directory)
    fleet = read_applied(list(directories.values()), database_url, registry, ignore_missing=ignore_missing)
    report = lint_paths(paths, released_file=released_file, use_squawk=use_squawk, baseline=fleet.files)
    report.unread = fleet.unread
    return report
