"""`orchestrator lint`: the safety gate that stops unsafe migrations before they reach hundreds of databases.

The platform's rules: always add migrations, never edit a released one; adding a table, an index or a column
with a default is safe; dropping, renaming or retyping a column needs downtime; every foreign key has ON DELETE;
NOT NULL columns have defaults; every up has a tested down.

    report = lint_paths([Path("migrations")], released_file=Path("migrations/released.sum"))
    if not report.ok: ...

The files come from the one loader, `source.load_migrations`, exactly as `migrate` and `audit` read them: a
directory they would refuse (a bad name or version, a version used twice, a down without its up, a file that is
not UTF-8, ...) raises the same MigrationSourceError here (`lint` exits 2, not 1). What SQLx accepts but the
platform would rather not have (an up without its down, ...) loads, and is a warning here (naming.py).

A run: our rules (rules.py) on every file, each directory's up files walked in version order (a type change is
judged against the types the earlier files declared), the naming warnings (naming.py), the released record
(released.py), squawk on the up files (squawk.py, duplicates of ours dropped), then in-file suppressions
(suppress.py). `lint_migrations` is the same on already-loaded migrations, for the gate in front of `migrate`.
Either way a result for exactly the same inputs comes from the lint cache (cache.py), and the rules are not even
imported then.

Each directory keeps its own `released.sum` (`EACH_DIRECTORY`, the default): a main directory and a deferred one are
released, and checked, apart, as their migrators run apart; `--released PATH` names one record for every file.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias

from ..errors import Location, MigrationSourceError, UsageError
from ..source import Migration, MigrationFile, MigrationSource, SourceWarning, is_migration_name, load_migrations
from . import cache
from .findings import Finding, LintReport
from .released import SUM_FILENAME, check_released, digest, read_released, record_release

if TYPE_CHECKING:
    from .suppress import Suppression

__all__ = [
    "EACH_DIRECTORY",
    "SUM_FILENAME",
    "Finding",
    "LintReport",
    "ReleasedFile",
    "lint_migrations",
    "lint_paths",
]


class _EachDirectory(Enum):
    EACH_DIRECTORY = "each directory's own released.sum"


#: `released_file=EACH_DIRECTORY`: every directory's files are checked against (and recorded in) `<dir>/released.sum`.
EACH_DIRECTORY = _EachDirectory.EACH_DIRECTORY
#: Where released files are recorded: one released.sum for every file, or EACH_DIRECTORY.
ReleasedFile: TypeAlias = Path | _EachDirectory
# A released.sum and the files it covers.
_Record = tuple[Path, list[MigrationFile]]


def _files_of(migrations: Sequence[Migration]) -> list[MigrationFile]:
    return [file for m in migrations for file in m.files]


@dataclass
class _Directory:
    """The files to lint from one directory, with all of its migrations (the context the rules need)."""

    path: Path
    migrations: Sequence[Migration]
    files: list[MigrationFile] = field(default_factory=list)
    ignored: Sequence[SourceWarning] = ()


def _records(released_file: Path | _EachDirectory | None, directories: Sequence[_Directory]) -> list[_Record]:
    """Which released.sum covers which files: one for all, each directory's own, or none (not checked)."""
    files = [file for directory in directories for file in directory.files]
    if released_file is EACH_DIRECTORY:
        return [(d.path / SUM_FILENAME, d.files) for d in directories]
    return [] if released_file is None else [(released_file, files)]


def _named_file(path: Path, source: MigrationSource) -> list[MigrationFile]:
    """The migration file `path` names, read as part of its directory (so its pair and version are checked too)."""
    found = [f for f in _files_of(source.migrations) if f.path.name == path.name]
    if not found:
        why = "SQLx ignores it" if not is_migration_name(path.name) else "it is not among the directory's migrations"
        raise MigrationSourceError(
            f"not a migration file: {why}",
            location=Location(path),
            hint="pass a migrations directory, or files named <VERSION>_<description>.sql in one",
        )
    return found


def _collect(paths: Sequence[Path]) -> list[_Directory]:
    """The files to lint, by directory: every migration of each directory, and files named directly, each as part of
    its directory.

    Each directory is read with `load_migrations`, so whatever `migrate` would refuse is refused here, alike.
    """
    directories: dict[Path, tuple[MigrationSource, _Directory]] = {}

    def directory_of(directory: Path, *, whole: bool) -> tuple[MigrationSource, _Directory]:
        if directory not in directories:
            source = load_migrations(directory)
            directories[directory] = source, _Directory(directory, source.migrations)
        source, chosen = directories[directory]
        if whole:
            chosen.ignored = source.ignored
        return source, chosen

    seen: set[Path] = set()
    for path in paths:
        if path.is_dir():
            source, chosen = directory_of(path, whole=True)
            candidates = _files_of(source.migrations)
        elif path.exists() or path.is_symlink():
            source, chosen = directory_of(path.parent, whole=False)
            candidates = _named_file(path, source)
        else:
            raise UsageError(
                f"{path} does not exist",
                hint="pass a migrations directory or migration files (default: migrations)",
            )
        for candidate in candidates:
            if candidate.path.resolve() not in seen:
                seen.add(candidate.path.resolve())
                chosen.files.append(candidate)
    return [chosen for _, chosen in directories.values()]


def _lint(directories: Sequence[_Directory], *, records: Sequence[_Record], use_squawk: bool) -> LintReport:
    """`_lint_files`, or its result for exactly these inputs from the lint cache (cache.py)."""
    linted = {f.path.parent for directory in directories for m in directory.migrations for f in m.files}
    entry = cache.key(
        ((d.migrations, d.files, d.ignored) for d in directories),
        records=[(sum_file, [f.path for f in covered]) for sum_file, covered in records],
        use_squawk=use_squawk,
    )
    cached = cache.load(entry, linted)
    if cached is not None:
        return cached
    report = _lint_files(directories, records=records, use_squawk=use_squawk)
    cache.store(entry, report, linted)
    return report


def _lint_files(directories: Sequence[_Directory], *, records: Sequence[_Record], use_squawk: bool) -> LintReport:
    """Rules on the files not yet released; released ones only for edits (they are applied: the rules can no longer
    change them, and a suppression comment would change their checksum)."""
    # The rules load here, not with the package: a `migrate` whose files the cache knows never needs them.
    from .naming import ignored_findings, naming_findings
    from .rules import check_migrations
    from .squawk import drop_duplicates, run_squawk
    from .suppress import apply_suppressions, parse_suppressions

    files = [file for directory in directories for file in directory.files]
    ours: list[Finding] = []
    for sum_file, covered in records:
        released = read_released(sum_file)
        ours += check_released(released, covered)
        unchanged = {f.path for f in covered if released.entries.get(f.path.name) == digest(f.raw)}
        files = [f for f in files if f.path not in unchanged]
    wanted = {f.path for f in files}
    cleared: list[tuple[Path, str, int]] = []
    for directory in directories:
        checked = check_migrations(directory.migrations, wanted)
        ours += checked.findings + naming_findings(directory.migrations, wanted) + ignored_findings(directory.ignored)
        cleared += checked.cleared

    suppressions: dict[Path, list[Suppression]] = {}
    for file in files:
        suppressions[file.path], malformed = parse_suppressions(file)
        ours += malformed

    found = ours
    if use_squawk:
        # Squawk lints what runs forward; down files are allowed to drop what their up created.
        ups = [f for f in files if f.kind != "down"]
        found = ours + drop_duplicates(run_squawk(ups), ours, ups, cleared=cleared)

    found = apply_suppressions(found, suppressions)
    found.sort(key=lambda f: (str(f.path), f.line, f.column, f.rule))
    return LintReport(findings=found, files_checked=[f.path for f in files])


BASELINE_REASON = "accepted by `lint --baseline`: released as it was already applied (never edit it)"


def _baseline(report: LintReport, records: Sequence[_Record], applied: Collection[Path]) -> LintReport:
    """Record as released the files some school has applied (`applied`: their resolved paths), their findings
    accepted, each in its directory's record. A new file is not recorded and keeps its findings: nothing has run it,
    so it can still be fixed. An edited or deleted released file is not a finding to accept: the baseline is then
    refused (restore the file first)."""
    report.release_requested = True
    if any(f.rule.startswith("released-") for f in report.errors):
        return report
    adopted = [(sum_file, [f for f in files if f.path.resolve() in applied]) for sum_file, files in records]
    adopted_paths = {f.path for _, files in adopted for f in files}
    findings = [
        replace(f, suppressed=True, suppression_reason=f.suppression_reason or BASELINE_REASON)
        if f.path in adopted_paths
        else f
        for f in report.findings
    ]
    baseline = LintReport(findings=findings, files_checked=report.files_checked, release_requested=True)
    baseline.released_recorded = _record(adopted)
    not_recorded: set[str] = set()
    for sum_file, files in records:
        entries = read_released(sum_file).entries
        not_recorded.update(f.path.name for f in files if f.path.name not in entries)
    baseline.not_recorded = sorted(not_recorded)
    return baseline


def _record(records: Sequence[_Record]) -> list[str]:
    return [name for sum_file, files in records for name in record_release(sum_file, files)]


def lint_paths(
    paths: Sequence[Path],
    *,
    released_file: ReleasedFile | None,
    use_squawk: bool = True,
    release: bool = False,
    baseline: Collection[Path] | None = None,
) -> LintReport:
    """Lint migration files and directories of them. Raises UsageError for a path that does not exist, and
    MigrationSourceError for a directory the loader refuses.

    `released_file`: the released.sum to check edits against (EACH_DIRECTORY: each directory's own; None: skip
    that check; missing file: nothing released yet). `release=True` then records every linted file in it, but only
    when the lint is clean.
    `baseline`: the resolved paths of the files some school has applied (`adoption.read_applied`): those are
    recorded as they are, their findings accepted (a live fleet adopted mid-life); the others are linted as usual.
    """
    if (release or baseline is not None) and released_file is None:
        raise UsageError("--release and --baseline need a released.sum to record into", hint="pass --released PATH")
    directories = _collect(paths)
    records = _records(released_file, directories)
    report = _lint(directories, records=records, use_squawk=use_squawk)
    if baseline is not None:
        return _baseline(report, records, baseline)
    report.release_requested = release
    if release and report.ok:
        report.released_recorded = _record(records)
    return report


def lint_migrations(
    migrations: Sequence[Migration], *, directories: Sequence[Path], use_squawk: bool = True
) -> LintReport:
    """Lint already-loaded migrations (all of them up to the target, in front of `migrate`; from one directory or
    several sharing one ledger, walked together in version order), each file against its directory's
    released.sum."""
    files = _files_of(migrations)
    records = [(d / SUM_FILENAME, [f for f in files if f.path.parent == d]) for d in directories]
    return _lint([_Directory(directories[0], migrations, files)], records=records, use_squawk=use_squawk)
