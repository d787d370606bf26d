"""A cache of lint results, so that a `migrate` with nothing new does not lint (and run squawk on) every file again.

The key is a digest of everything a lint result depends on: each linted directory's files (path as given, kind, a
digest of the exact bytes: every file, since the rules read the earlier files for context), which of them are
linted, each released.sum's bytes and the files it covers, whether squawk runs and which binary (path, size,
modification time), and the linter itself (the package version and the source of the lint rules, the SQL tokenizer
and the loader). Any edit makes a new key; the value is the report as JSON.

Where: `$ORCHESTRATOR_CACHE_DIR/lint` (empty: no cache), else `$XDG_CACHE_HOME/orchestrator/lint`, else
`~/.cache/orchestrator/lint`; never inside a directory being linted (then no cache). A cache that cannot be read or
written is no cache: no error, the lint simply runs. Entries are written to a temporary file and renamed into place,
so two processes linting at once each see a whole entry or none. Beyond `MAX_ENTRIES` the oldest are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from functools import lru_cache
from pathlib import Path

from .. import __version__
from ..source import Migration, MigrationFile, SourceWarning
from . import squawk
from .findings import Finding, LintReport

CACHE_DIR_ENV = "ORCHESTRATOR_CACHE_DIR"
FORMAT = 1  # bump when the entry's shape changes
MAX_ENTRIES = 64

_PACKAGE = Path(__file__).resolve().parent.parent
# The code whose behaviour a lint result depends on, besides the version: the rules, the tokenizer, the loader.
_LINTER_SOURCES = ("lint/*.py", "sqltext.py", "source.py")


def cache_dir() -> Path | None:
    """The directory lint results are kept in, or None when the cache is turned off (`ORCHESTRATOR_CACHE_DIR=`)."""
    configured = os.environ.get(CACHE_DIR_ENV)
    if configured is not None:
        return Path(configured) / "lint" if configured else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "orchestrator" / "lint"


@lru_cache(maxsize=1)
def linter_digest() -> str:
    """The package version and the source of the code that decides findings: an upgrade or an edit invalidates."""
    h = hashlib.sha256(__version__.encode())
    for pattern in _LINTER_SOURCES:
        for path in sorted(_PACKAGE.glob(pattern)):
            h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def _squawk_identity() -> list[object]:
    found = squawk.find_squawk()
    if found is None:
        return [None]
    try:
        stat = found.stat()
    except OSError:
        return [str(found)]
    return [str(found), stat.st_size, stat.st_mtime_ns]


def key(
    contexts: Iterable[tuple[Sequence[Migration], Sequence[MigrationFile], Sequence[SourceWarning]]],
    *,
    records: Sequence[tuple[Path, Sequence[Path]]],
    use_squawk: bool,
) -> str:
    """The digest of everything a lint result depends on (see the module's docstring). `contexts`: each
    directory's migrations, the files of it to lint, and the entries its loader ignored; `records`: each
    released.sum checked and the files it covers."""
    h = hashlib.sha256(f"{FORMAT}\0{linter_digest()}\0".encode())
    parts: list[object] = [use_squawk, _squawk_identity() if use_squawk else None]
    for migrations, wanted, ignored in contexts:
        parts.append([[str(f.path), f.kind, hashlib.sha256(f.raw).hexdigest()] for m in migrations for f in m.files])
        parts.append([str(f.path) for f in wanted])
        parts.append([repr(w) for w in ignored])
    for sum_file, covered in records:
        released: bytes | None = None
        with contextlib.suppress(OSError):
            released = sum_file.read_bytes()
        digest = hashlib.sha256(released).hexdigest() if released is not None else None
        parts.append([str(sum_file), digest, [str(p) for p in covered]])
    h.update(json.dumps(parts, separators=(",", ":")).encode())
    return h.hexdigest()


def _usable(directory: Path | None, linted: Iterable[Path]) -> Path | None:
    if directory is None:
        return None
    with contextlib.suppress(OSError):
        resolved = directory.resolve()
        if any(resolved.is_relative_to(d.resolve()) for d in linted):
            return None  # never leave files among the migrations
        return resolved
    return None


def load(digest: str, linted: Iterable[Path]) -> LintReport | None:
    """The cached report for `digest`, or None (no cache, no entry, or one that cannot be read)."""
    directory = _usable(cache_dir(), linted)
    if directory is None:
        return None
    entry = directory / f"{digest}.json"
    try:
        data = json.loads(entry.read_text(encoding="utf-8"))
        findings = [Finding(**{**f, "path": Path(f["path"])}) for f in data["findings"]]
        report = LintReport(findings=findings, files_checked=[Path(p) for p in data["files_checked"]])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    with contextlib.suppress(OSError):
        os.utime(entry)  # recently used: the last to be pruned
    return report


def store(digest: str, report: LintReport, linted: Iterable[Path]) -> None:
    """Keep `report` under `digest`, atomically; silently nothing when the cache cannot be written."""
    directory = _usable(cache_dir(), linted)
    if directory is None:
        return
    entry = {
        "findings": [f.to_dict() for f in report.findings],
        "files_checked": [str(p) for p in report.files_checked],
    }
    tmp: str | None = None
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=directory, prefix=".entry-", suffix=".tmp", delete=False
        ) as out:
            tmp = out.name
            json.dump(entry, out, separators=(",", ":"))
        os.replace(tmp, directory / f"{digest}.json")
        tmp = None
        _prune(directory)
    except OSError:
        pass
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def _prune(directory: Path) -> None:
    entries = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime_ns)
    for old in entries[:-MAX_ENTRIES]:
        with contextlib.suppress(OSError):
            old.unlink()
