"""`orchestrator new`: write a new reversible migration pair, exactly as `sqlx migrate add -r` does.

Names are `<UTC %Y%m%d%H%M%S>_<description, spaces as _>.up.sql` / `.down.sql`, with SQLx's placeholder content.
Unlike SQLx, we refuse a version that is already taken (two `new` in the same second would otherwise share one,
and SQLx refuses duplicate versions only later, when it runs) and descriptions that make awkward file names.
Existing names are read with the loader's own rules (`source.parse_file_name`), so `0020250401093015_x.sql` takes
version 20250401093015 too, and a name the loader would refuse is refused here first.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from .errors import Location, MigrationSourceError, UsageError
from .source import parse_file_name

UP_CONTENT = "-- Add up migration script here\n"
DOWN_CONTENT = "-- Add down migration script here\n"

# Letters, digits, `_`, `-` and spaces: safe in file names on every OS, in shells and in URLs.
_SAFE_DESCRIPTION = re.compile(r"[^\W_][\w\- ]*")


def new_migration(directory: Path, description: str, *, now: datetime | None = None) -> tuple[Path, Path]:
    """Create the up and down files of a new migration in `directory`; returns (up path, down path).

    `now` defaults to the current time; a naive datetime is taken as UTC.
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
    for existing in sorted(directory.iterdir()):
        parsed = parse_file_name(existing)
        if parsed is not None and parsed[0] == int(version):
            raise MigrationSourceError(
                f"version {version} is already used by {existing.name}",
                location=Location(existing),
                hint="wait a second and run it again: every migration needs its own version",
            )
    up, down = directory / f"{stem}.up.sql", directory / f"{stem}.down.sql"
    # "x": never overwrite, even if a file appeared since the check above.
    with up.open("x", encoding="utf-8", newline="\n") as f:
        f.write(UP_CONTENT)
    with down.open("x", encoding="utf-8", newline="\n") as f:
        f.write(DOWN_CONTENT)
    return up, down
