"""The files a command writes (report, JUnit, metrics, HTML): checked before the first connection, written atomically.

A run that migrates 500 schools and then cannot write its report has lost the record of what it did, so every output
path is tried first (`check_writable`, exit 2 before any connection). Each file is then written to a temporary file
beside it, flushed to disk and renamed over the old one (`write_atomically`): a reader (node_exporter's textfile
collector, a CI step, `--resume`) sees the previous file or the new one, never half of one.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import UnwritableOutput
from .settings import Outputs


@dataclass(frozen=True)
class OutputFile:
    """A path named by a flag (an output, or an input it must not land on)."""

    flag: str  # e.g. "--report": the message names what the operator typed
    path: Path


def check_outputs(outputs: Outputs, extra: Sequence[OutputFile] = (), inputs: Sequence[OutputFile] = ()) -> None:
    """Before the first connection: every output file of the run can be written, lands on none of the `inputs` (the
    registry, a migrations directory), and the Pushgateway's URL is one. Raises InvalidInput (exit 2)."""
    named = (("--report", outputs.report), ("--junit", outputs.junit), ("--metrics", outputs.metrics))
    files = [*(OutputFile(flag, path) for flag, path in named if path is not None), *extra]
    check_writable(files)
    _refuse_inputs(files, inputs)
    if outputs.pushgateway is not None:
        from .metrics import check_pushgateway  # prometheus_client: only when a push is asked for

        check_pushgateway(outputs.pushgateway)


def check_writable(files: Sequence[OutputFile]) -> None:
    """Each file can be written where it is named: raises UnwritableOutput (exit 2) naming the flag and the path.

    A directory not there yet is fine when its nearest existing ancestor is a writable directory (it is created when
    the file is written, as the manifests' report directories are). Whether a directory is writable is found by
    creating and removing a temporary file in it: permission bits say nothing to root, and nothing about /proc, /sys
    or a read-only mount."""
    seen: dict[Path, str] = {}
    for file in files:
        resolved = Path(os.path.realpath(file.path))
        if resolved in seen:
            raise UnwritableOutput(
                f"{seen[resolved]} and {file.flag} both name {file.path}: one would overwrite the other",
                hint="give each output its own file",
            )
        seen[resolved] = file.flag
        _check_one(file)


def _refuse_inputs(files: Sequence[OutputFile], inputs: Sequence[OutputFile]) -> None:
    """A typo such as `--report tenants.yaml` would replace the registry with a report."""
    for file in files:
        resolved = Path(os.path.realpath(file.path))
        for given in inputs:
            source = Path(os.path.realpath(given.path))
            if resolved == source or (source.is_dir() and resolved.is_relative_to(source)):
                what = "would replace" if resolved == source else "would land in"
                raise UnwritableOutput(
                    f"{file.flag} {file.path} {what} the input {given.flag} {given.path}",
                    hint="write the outputs somewhere else, e.g. ./reports/",
                )


def _check_one(file: OutputFile) -> None:
    flag, path = file.flag, file.path
    where = f"{flag} {path}"
    try:
        mode = path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        mode = None  # not there yet; a parent that is a file is said below
    except OSError as exc:
        raise UnwritableOutput(f"{where}: cannot be examined ({exc.strerror})", hint=_ELSEWHERE) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise UnwritableOutput(f"{where} is a directory", hint=f"name a file in it, e.g. {path / _example(flag)}")
    if mode is not None and not stat.S_ISREG(mode):
        raise UnwritableOutput(
            f"{where} is not a regular file (a device, pipe or socket): it would be replaced", hint=_ELSEWHERE
        )
    directory = path.parent
    while not directory.exists() and directory != directory.parent:
        directory = directory.parent  # created when the file is written
    if not directory.is_dir():
        raise UnwritableOutput(f"{where}: {directory} is not a directory", hint=_ELSEWHERE)
    try:
        fd, probe = tempfile.mkstemp(dir=directory, prefix=".orchestrator-probe.", suffix=".tmp")
    except OSError as exc:
        missing = "" if directory == path.parent else f"its directory {path.parent} does not exist, and "
        raise UnwritableOutput(
            f"{where}: {missing}cannot create a file in {directory} ({exc.strerror})",
            hint="name a file in a directory you can write (a reports volume, the working directory), "
            "or make that directory writable for this user",
        ) from None
    os.close(fd)
    os.unlink(probe)


_ELSEWHERE = "name a regular file in a directory you can write, e.g. ./reports/report.json"


def _example(flag: str) -> str:
    return {"--junit": "junit.xml", "--metrics": "orchestrator.prom", "--html": "audit.html"}.get(flag, "report.json")


def write_atomically(path: Path, text: str | Iterable[str]) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`: readers see the old
    file or the new one, never half a file, and a failure (a full disk, an interrupt) leaves the old one as it was.
    A symlink is followed (the file it names was checked, and is the one replaced): renaming over the link itself
    would replace e.g. /dev/stdout (-> /proc/self/fd/1) with a regular file, as root."""
    path = Path(os.path.realpath(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines([text] if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())  # the data on disk before the rename makes it the file
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_directory(path.parent)


def _sync_directory(directory: Path) -> None:
    """The rename itself on disk (a crash right after it then cannot bring the old file back)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # a platform or filesystem without directory handles: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
