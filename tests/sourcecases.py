"""Migration directories the loader must refuse: one case per way a directory can be wrong.

Shared by tests/test_source.py (the loader's message) and tests/test_lint.py (`lint` and `migrate` both exit 2 with
that same message). Each case names the file the error must point at and a fragment of what it must say.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

SQL = "SELECT 1;\n"


@dataclass(frozen=True)
class Dir:
    """A directory under a migration's name."""


@dataclass(frozen=True)
class Fifo:
    """A named pipe: reading it would wait for a writer forever."""


@dataclass(frozen=True)
class Link:
    target: str


Entry = str | bytes | Dir | Fifo | Link


def make(directory: Path, entries: dict[str, Entry]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, entry in entries.items():
        path = directory / name
        if isinstance(entry, Dir):
            path.mkdir()
        elif isinstance(entry, Fifo):
            os.mkfifo(path)
        elif isinstance(entry, Link):
            path.symlink_to(entry.target)
        else:
            path.write_bytes(entry.encode() if isinstance(entry, str) else entry)
    return directory


ARABIC_INDIC_VERSION = "".join(chr(0x0660 + int(d)) for d in "20250301000000")

#: (entries, the file the error names, what it says)
INVALID_SOURCES = [
    pytest.param({"1_a.sql": SQL, "1_b.sql": SQL}, "1_b.sql", "version 1 is used twice", id="one-version-twice"),
    pytest.param(
        {"0001_a.sql": SQL, "1_b.sql": SQL}, "1_b.sql", "(0001 and 1 are the same number)", id="leading-zero-twice"
    ),
    pytest.param(
        {"1_a.up.sql": SQL, "1_a.down.sql": SQL, "01_b.down.sql": SQL}, "1_a.down.sql", "used twice", id="two-downs"
    ),
    pytest.param({f"{'1' * 25}_a.sql": SQL}, f"{'1' * 25}_a.sql", "signed 64-bit", id="25-digit-version"),
    pytest.param({f"{2**63}_a.sql": SQL}, f"{2**63}_a.sql", "signed 64-bit", id="above-i64"),
    pytest.param({f"-{2**63 + 1}_a.sql": SQL}, f"-{2**63 + 1}_a.sql", "signed 64-bit", id="below-i64"),
    pytest.param({"+1_a.sql": SQL}, "+1_a.sql", "'+1' is not a plain integer", id="plus-sign"),
    pytest.param({" 1_a.sql": SQL}, " 1_a.sql", "' 1' is not a plain integer", id="leading-space"),
    pytest.param(
        {f"{ARABIC_INDIC_VERSION}_a.sql": SQL}, f"{ARABIC_INDIC_VERSION}_a.sql", "not a plain integer", id="arabic"
    ),
    pytest.param(
        {"1_a.up.sql": Dir(), "1_a.down.sql": SQL}, "1_a.up.sql", "is a directory, not a regular file", id="directory"
    ),
    pytest.param({"1_a.sql": Fifo()}, "1_a.sql", "is a named pipe (FIFO), not a regular file", id="fifo"),
    pytest.param(
        {"1_a.sql": Link("/dev/zero")},
        "1_a.sql",
        "is a symbolic link to /dev/zero, which is a character device, not a regular file",
        id="link-to-dev-zero",
    ),
    pytest.param(
        {"1_a.up.sql": Link("1_a.up.sql"), "1_a.down.sql": SQL},
        "1_a.up.sql",
        "symbolic link that never reaches a file",
        id="self-link",
    ),
    pytest.param(
        {"1_a.sql": Link("gone.sql")}, "1_a.sql", "symbolic link to gone.sql, which is missing", id="dangling-link"
    ),
    pytest.param({"1_a.up.sql": SQL}, "1_a.up.sql", "reversible migration has no down file", id="missing-down"),
    pytest.param({"1_a.sql": SQL, "2_b.down.sql": SQL}, "2_b.down.sql", "down file has no up file", id="orphan-down"),
    pytest.param({"1_a.sql": b"SELECT '\xff';\n"}, "1_a.sql:1", "not valid UTF-8", id="not-utf8"),
    pytest.param(
        {"1_a.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY a ON t (a);\nCREATE INDEX b ON t (b);\n"},
        "1_a.sql:3",
        "must hold exactly one statement",
        id="no-transaction-two-statements",
    ),
]
