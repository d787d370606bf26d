"""The record of released migrations, `migrations/released.sum`, in the spirit of Atlas's atlas.sum.

Format (SQLx ignores the file: its name does not end in `.sql`):

    sha384:<hex>                                   <- checksum of every line below, so hand edits show
    20250101000000_initial_schema.down.sql sha384:<hex of the file's exact bytes>
    20250101000000_initial_schema.up.sql sha384:<hex>

`orchestrator lint --release` records every current file. From then on a listed file whose bytes changed is an
error (`released-file-edited`), and so is a listed file that disappeared. Files not listed are new and may be
edited freely. No sum file means nothing has been released yet.

The header covers the lines as text (line endings folded), so a checkout that turns released.sum itself into CRLF
does not look like a hand edit. Two branches that each release produce a conflict here on purpose: whoever
merges re-records after a clean lint.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import Location, MigrationSourceError
from ..output_files import write_atomically
from ..source import MigrationFile
from .catalog import finding
from .findings import Finding

SUM_FILENAME = "released.sum"
_DIGEST = r"sha384:[0-9a-f]{96}"
_HEADER = re.compile(rf"^{_DIGEST}$")
_ENTRY = re.compile(rf"^(?P<name>\S.*) (?P<digest>{_DIGEST})$")


def digest(raw: bytes) -> str:
    """`sha384:<hex>` of exact bytes: the same SHA-384 SQLx stores (as bytes) in _sqlx_migrations.checksum."""
    return "sha384:" + hashlib.sha384(raw).hexdigest()


def _body_digest(lines: Iterable[str]) -> str:
    return digest("".join(f"{line}\n" for line in lines).encode("utf-8"))


@dataclass(frozen=True)
class ReleasedSum:
    """The parsed released.sum: file name -> digest, and where each name sits in the sum file."""

    path: Path
    entries: dict[str, str] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)
    #: False when the header no longer matches the list (edited by hand, or a merge)
    intact: bool = True
    exists: bool = False


def read_released(path: Path) -> ReleasedSum:
    """Parse `path`; a missing file means nothing released yet. Raises MigrationSourceError when malformed."""
    if not path.is_file():
        return ReleasedSum(path)
    hint = "restore it from version control, or re-record it with `orchestrator lint --release`"
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MigrationSourceError("released.sum is not valid UTF-8", location=Location(path), hint=hint) from None
    lines = text.splitlines()
    if not lines or not _HEADER.match(lines[0]):
        raise MigrationSourceError(
            "released.sum must start with a `sha384:<hex>` checksum line", location=Location(path, 1), hint=hint
        )
    entries: dict[str, str] = {}
    where: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        m = _ENTRY.match(line)
        if not m:
            raise MigrationSourceError(
                f"expected `<file name> sha384:<hex>`, got {line!r}", location=Location(path, number), hint=hint
            )
        name = m.group("name")
        if name in entries:
            raise MigrationSourceError(f"{name} is listed twice", location=Location(path, number), hint=hint)
        entries[name], where[name] = m.group("digest"), number
    intact = lines[0] == _body_digest(lines[1:])
    return ReleasedSum(path, entries, where, intact, exists=True)


def render_released(entries: Mapping[str, str]) -> str:
    body = [f"{name} {entries[name]}" for name in sorted(entries)]
    return "".join(f"{line}\n" for line in [_body_digest(body), *body])


def write_released(path: Path, entries: Mapping[str, str]) -> None:
    """Write the sum file atomically and durably (output_files.write_atomically: flushed to disk, then renamed), so
    an interrupted release or a crash never leaves half a record."""
    write_atomically(path, render_released(entries))


def record_release(path: Path, files: Sequence[MigrationFile]) -> list[str]:
    """Record `files` as released in `path` (keeping earlier entries); returns the names newly recorded."""
    current = read_released(path)
    entries = dict(current.entries)
    for file in files:
        entries[file.path.name] = digest(file.raw)
    write_released(path, entries)
    return sorted(name for name in entries if name not in current.entries)


def _line_ending_change(raw: bytes, recorded: str) -> str | None:
    """How the line endings changed, when they are the only difference from the recorded bytes."""
    lf = raw.replace(b"\r\n", b"\n")
    if b"\r\n" in raw and digest(lf) == recorded:
        return "released with LF line endings, now CRLF"
    if digest(lf.replace(b"\n", b"\r\n")) == recorded:
        return "released with CRLF line endings, now LF"
    return None


def check_released(released: ReleasedSum, files: Sequence[MigrationFile]) -> list[Finding]:
    """Findings for edited or deleted released files, and for a sum file edited by hand."""
    found: list[Finding] = []
    if not released.intact:
        found.append(
            finding(
                "released-sum-edited",
                released.path,
                1,
                1,
                "the checksum on the first line does not match the list: released.sum was edited by hand",
            )
        )
    by_name = {f.path.name: f for f in files}
    for name, recorded in released.entries.items():
        file = by_name.get(name)
        if file is None:
            if not (released.path.parent / name).exists():
                found.append(
                    finding(
                        "released-file-deleted",
                        released.path,
                        released.lines[name],
                        1,
                        f"released migration {name} was deleted",
                    )
                )
            continue
        if digest(file.raw) == recorded:
            continue
        change = _line_ending_change(file.raw, recorded)
        message = (
            f"released migration was edited: it differs only in line endings ({change})"
            if change
            else "released migration was edited (its bytes differ from the ones recorded in released.sum)"
        )
        why = None
        if file.kind == "down":
            why = (
                "databases that applied the released up expect this exact down: an edited down was not tested "
                "against them, and a rollback across the fleet is no time to find out"
            )
        instead = None
        if change:
            instead = (
                "restore the released line endings (`git checkout <release> -- <file>`) and add `*.sql -text` "
                "to .gitattributes so git stops converting them"
            )
        found.append(finding("released-file-edited", file.path, 1, 1, message, why=why, instead=instead))
    return found
