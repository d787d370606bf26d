"""Shapes SQLx accepts in a migrations directory that the platform would rather not have: warnings, not refusals.

The loader (source.py) accepts what SQLx 0.8.6's resolver accepts, so that a real SQLx project loads as it is; where
the platform's rule is stricter than SQLx, the difference is reported here:

- `up-without-down`: an `.up.sql` file with no `.down.sql` (neither tool can revert past it);
- `down-beside-plain-file`: a `.down.sql` next to a plain `.sql` file of its version (SQLx pairs them by version);
- `down-named-differently`: a down file whose description differs from its up file's;
- `version-with-sign`: a `+` before the version (`+7_x.sql` is version 7 for SQLx);
- `ignored-entry`: something named like a migration that is not a regular file, which SQLx (and we) ignore.

Each is a warning on the file concerned (line 1), subject to suppressions and to the released-file exemption like
every other finding.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path

from ..source import Migration, SourceWarning
from .catalog import finding
from .findings import Finding


def naming_findings(migrations: Sequence[Migration], wanted: Container[Path]) -> list[Finding]:
    """The naming warnings of the files of `migrations` whose path is in `wanted`."""
    found = []
    for m in migrations:
        up, *downs = m.files
        for file in m.files:
            if file.path in wanted and file.path.name.startswith("+"):
                found.append(
                    finding("version-with-sign", file.path, 1, 1, f"the version has a `+` sign: SQLx reads {m.version}")
                )
        if up.path in wanted and up.kind == "up" and not downs:
            found.append(
                finding(
                    "up-without-down",
                    up.path,
                    1,
                    1,
                    f"reversible migration {m.version} has no down file ({up.stem}.down.sql): it cannot be reverted",
                )
            )
        for down in downs:
            if down.path not in wanted:
                continue
            if up.kind == "simple":
                found.append(
                    finding(
                        "down-beside-plain-file",
                        down.path,
                        1,
                        1,
                        f"this down file makes {up.path.name}, a plain .sql file, reversible",
                    )
                )
            if down.description != up.description:
                found.append(
                    finding(
                        "down-named-differently",
                        down.path,
                        1,
                        1,
                        f"its description {down.description!r} differs from its up file's {up.description!r} "
                        f"({up.path.name})",
                    )
                )
    return found


def ignored_findings(ignored: Sequence[SourceWarning]) -> list[Finding]:
    """A warning for each migration-named entry the loader ignored, as SQLx does."""
    return [finding("ignored-entry", w.path, 1, 1, w.message) for w in ignored]
