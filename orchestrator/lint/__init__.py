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
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import Location, MigrationSourceError, UsageError
from ..source import Migration, MigrationFile, MigrationSource, SourceWarning, is_migration_name, load_migrations
from . import cache
from .findings import Finding, LintReport
from .released import SUM_FILENAME, check_released, digest, read_released, record_release

if TYPE_CHECKING:
    from .suppress import Suppression

__all__ = [
    "SUM_FILENAME",
    "Finding",
    "LintReport",
    "default_released_file",
    "lint_migrations",
    "lint_paths",
]


def default_released_file(paths: Sequence[Path]) -> Path:
    """`<dir>/released.sum` for the first path given (a migrations directory, or the directory of a file)."""
    first = paths[0] if paths else Path("migrations")
    return (first if first.is_dir() else first.parent) / SUM_FILENAME


def _files_of(migrations: Sequence[Migration]) -> list[MigrationFile]:
    return [file for m in migrations for file in m.files]


@dataclass
class _Directory:
    """The files to lint from one directory, with all of its migrations (the context the rules need)."""

    migrations: Sequence[Migration]
    files: list[MigrationFile] = field(default_factory=list)
    ignored: Sequence[SourceWarning] = ()


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
            directories[directory] = source, _Directory(source.migrations)
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


def _lint(directories: Sequence[_Directory], *, released_file: Path | None, use_squawk: bool) -> LintReport:
    """`_lint_files`, or its result for exactly these inputs from the lint cache (cache.py)."""
    linted = {f.path.parent for directory in directories for m in directory.migrations for f in m.files}
    digest = cache.key(
        ((d.migrations, d.files, d.ignored) for d in directories), released_file=released_file, use_squawk=use_squawk
    )
    cached = cache.load(digest, linted)
    if cached is not None:
        return cached
    report = _lint_files(directories, released_file=released_file, use_squawk=use_squawk)
    cache.store(digest, report, linted)
    return report


def _lint_files(directories: Sequence[_Directory], *, released_file: Path | None, use_squawk: bool) -> LintReport:
    """Rules on the files not yet released; released ones only for edits (they are applied: the rules can no longer
    change them, and a suppression comment would change their checksum)."""
    # The rules load here, not with the package: a `migrate` whose files the cache knows never needs them.
    from .naming import ignored_findings, naming_findings
    from .rules import check_migrations
    from .squawk import drop_duplicates, run_squawk
    from .suppress import apply_suppressions, parse_suppressions

    files = [file for directory in directories for file in directory.files]
    ours: list[Finding] = []
    released = read_released(released_file) if released_file is not None else None
    if released is not None:
        ours += check_released(released, files)
    if released is not None:
        files = [f for f in files if released.entries.get(f.path.name) != digest(f.raw)]
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


def _baseline(
    report: LintReport, released_file: Path, files: Sequence[MigrationFile], applied: Collection[str]
) -> LintReport:
    """Record as released the files some school has applied (`applied`: their names), their findings accepted. A new
    file is not recorded and keeps its findings: nothing has run it, so it can still be fixed. An edited or deleted
    released file is not a finding to accept: the baseline is then refused (restore the file first)."""
    report.release_requested = True
    if any(f.rule.startswith("released-") for f in report.errors):
        return report
    adopted = [f for f in files if f.path.name in applied]
    adopted_paths = {f.path for f in adopted}
    findings = [
        replace(f, suppressed=True, suppression_reason=f.suppression_reason or BASELINE_REASON)
        if f.path in adopted_paths
        else f
        for f in report.findings
    ]
    baseline = LintReport(findings=findings, files_checked=report.files_checked, release_requested=True)
    baseline.released_recorded = record_release(released_file, adopted)
    released = read_released(released_file).entries
    baseline.not_recorded = sorted({f.path.name for f in files if f.path.name not in released})
    return baseline


def lint_paths(
    paths: Sequence[Path],
    *,
    released_file: Path | None,
    use_squawk: bool = True,
    release: bool = False,
    baseline: Collection[str] | None = None,
) -> LintReport:
    """Lint migration files and directories of them. Raises UsageError for a path that does not exist, and
    MigrationSourceError for a directory the loader refuses.

    `released_file`: the released.sum to check edits against (None: skip that check; missing file: nothing
    released yet). `release=True` then records every linted file in it, but only when the lint is clean.
    `baseline`: the names of the files some school has applied (`adoption.read_applied`): those are recorded as
    they are, their findings accepted (a live fleet adopted mid-life); the others are linted as usual.
    """
    if (release or baseline is not None) and released_file is None:
        raise UsageError("--release and --baseline need a released.sum to record into", hint="pass --released PATH")
    directories = _collect(paths)
    files = [file for directory in directories for file in directory.files]
    report = _lint(directories, released_file=released_file, use_squawk=use_squawk)
    if baseline is not None:
        assert released_file is not None
        return _baseline(report, released_file, files, baseline)
    report.release_requested = release
    if release and released_file is not None and report.ok:
        report.released_recorded = record_release(released_file, files)
    return report


def lint_migrations(migrations: Sequence[Migration], *, directory: Path, use_squawk: bool = True) -> LintReport:
    """Lint already-loaded migrations (all of them up to the target, in front of `migrate`), against
    `directory`/released.sum."""
    return _lint(
        [_Directory(migrations, _files_of(migrations))], released_file=directory / SUM_FILENAME, use_squawk=use_squawk
    )
