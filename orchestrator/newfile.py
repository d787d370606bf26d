"""`orchestrator new`: write a new migration, exactly as `sqlx migrate add` does: a reversible pair
(`-r`, and the default in an empty directory) or one simple file (`--simple`).

Names are `<UTC %Y%m%d%H%M%S>_<description, spaces as _>.up.sql` / `.down.sql` (or `.sql`), with SQLx's placeholder
content. A directory keeps one convention, as with sqlx, whose `migrate add` makes the new migration the kind of
the directory's first one (whatever `-r` says). Without a flag we follow it too; a flag that contradicts it is
refused (exit 2) rather than silently overridden. Unlike SQLx, we refuse a version that is already taken (two `new`
in the same second would otherwise share one, and SQLx refuses duplicate versions only later, when it runs) and
descriptions that make awkward file names. Existing names are read with the loader's own rules
(`source.parse_file_name`), so `0020250401093015_x.sql` takes version 20250401093015 too, and a name the loader
would refuse is refused here first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from .errors import Location, MigrationSourceError, UsageError
from .source import parse_file_name

UP_CONTENT = "-- Add up migration script here\n"
DOWN_CONTENT = "-- Add down migration script here\n"
SIMPLE_CONTENT = "-- Add migration script here\n"

# Letters, digits, `_`, `-` and spaces: safe in file names on every OS, in shells and in URLs.
_SAFE_DESCRIPTION = re.compile(r"[^\W_][\w\- ]*")


def new_migration(
    directory: Path, description: str, *, reversible: bool | None = None, now: datetime | None = None
) -> tuple[Path, ...]:
    """Create a new migration in `directory`; returns its paths (up and down, or the one simple file).

    `reversible`: True a pair, False one file, None the directory's convention (a pair when it is empty). `now`
    defaults to the current time; a naive datetime is taken as UTC.
    """
    description = description.strip()
    if not _SAFE_DESCRIPTION.fullmatch(description):
        raise UsageError(
            f"the description {description!r} cannot be used in a file name",
            hint="use letters, digits, spaces, `_` and `-`, starting with a letter or digit, e.g. "
            "`orchestrator new add library books`",
        )
    when = now or datetime.now(UTC)
    when = when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)
    version = when.strftime("%Y%m%d%H%M%S")
    stem = f"{version}_{description.replace(' ', '_')}"

    directory.mkdir(parents=True, exist_ok=True)  # as sqlx does
    existing = [(parsed, path) for path in sorted(directory.iterdir()) if (parsed := parse_file_name(path))]
    reversible = _convention(existing, reversible)
    for (taken, _, _), path in existing:
        if taken == int(version):
            raise MigrationSourceError(
                f"version {version} is already used by {path.name}",
                location=Location(path),
                hint="wait a second and run it again: every migration needs its own version",
            )
    files = (
        {f"{stem}.up.sql": UP_CONTENT, f"{stem}.down.sql": DOWN_CONTENT}
        if reversible
        else {f"{stem}.sql": SIMPLE_CONTENT}
    )
    written = []
    for name, content in files.items():
        # "x": never overwrite, even if a file appeared since the check above.
        with (directory / name).open("x", encoding="utf-8", newline="\n") as f:
            f.write(content)
        written.append(directory / name)
    return tuple(written)


def _convention(existing: Sequence[tuple[tuple[int, str, str], Path]], asked: bool | None) -> bool:
    """Whether the new migration is reversible: the directory's first migration decides, as in `sqlx migrate add`."""
    if not existing:
        return True if asked is None else asked
    (_, _, kind), first = min(existing, key=lambda entry: entry[0][0])
    reversible = kind != "simple"
    if asked is not None and asked != reversible:
        have, want = ("reversible (.up.sql/.down.sql)", "--simple") if reversible else ("simple (one .sql)", "-r")
        raise UsageError(
            f"the migrations in {first.parent} are {have}, from the first, {first.name}; {want} would mix the two",
            hint=f"drop {want}: the new migration follows the directory, as `sqlx migrate add` makes it (it ignores "
            "-r where the first migration says otherwise)",
        )
    return reversible
