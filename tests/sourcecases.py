"""Migration directories the loader must refuse, and shapes it must accept because SQLx 0.8.6 does.

INVALID_SOURCES is shared by tests/test_source.py (the loader's message) and tests/test_lint.py (`lint` and `migrate`
both exit 2 with that same message); each case names the file the error must point at and a fragment of what it must
say. SQLX_SHAPES is shared by tests/test_source.py, tests/test_lint.py (the warnings) and tests/test_sqlx_interop.py
(the real `sqlx` CLI resolves the same versions and descriptions).
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
    pytest.param({" 1_a.sql": SQL}, " 1_a.sql", "' 1' is not a plain integer", id="leading-space"),
    pytest.param(
        {f"{ARABIC_INDIC_VERSION}_a.sql": SQL}, f"{ARABIC_INDIC_VERSION}_a.sql", "not a plain integer", id="arabic"
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
    # SQLx reads every entry's type before its name: a dangling link refuses the directory whatever its name.
    pytest.param(
        {"1_a.sql": SQL, "notes.txt": Link("gone.txt")},
        "notes.txt",
        "symbolic link to gone.txt, which is missing",
        id="dangling-link-not-a-migration",
    ),
    pytest.param({"_a.sql": SQL}, "_a.sql", "'' is not a plain integer", id="no-version"),
    pytest.param({"1_a.sql": SQL, "2_b.down.sql": SQL}, "2_b.down.sql", "down file has no up file", id="orphan-down"),
    pytest.param(
        {"1_a.up.sql": SQL, "1_a.down.sql": SQL, "2_a.down.sql": SQL},
        "2_a.down.sql",
        "down file has no up file",
        id="orphan-down-among-pairs",
    ),
    pytest.param({"1_a.sql": b"SELECT '\xff';\n"}, "1_a.sql:1", "not valid UTF-8", id="not-utf8"),
    pytest.param(
        {"1_a.sql": "-- no-transaction\nCREATE INDEX CONCURRENTLY a ON t (a);\nCREATE INDEX b ON t (b);\n"},
        "1_a.sql:3",
        "must hold exactly one statement",
        id="no-transaction-two-statements",
    ),
]


#: A directory of every shape SQLx 0.8.6 resolves without complaint (checked against the real CLI in
#: tests/test_sqlx_interop.py), with the (version, description) SQLx derives and whether a down file goes with it.
SQLX_SHAPES: dict[str, Entry] = {
    "1_create_a.up.sql": "CREATE TABLE a (id int);\n",  # a pair
    "1_create_a.down.sql": "DROP TABLE a;\n",
    "2_create_b.up.sql": "CREATE TABLE b (id int);\n",  # an up without a down (revert skips it in SQLx)
    "3_wrapped.sql": "BEGIN;\nCREATE TABLE c (id int);\nCOMMIT;\n",  # wraps itself in a transaction
    "4_v1.2_init.up.sql": "CREATE TABLE d (id int);\n",  # dots stay in the description
    "4_v1.2_init.down.sql": "DROP TABLE d;\n",
    "5_plain.sql": "CREATE TABLE e (id int);\n",  # a plain file with a down: SQLx pairs by version
    "5_plain.down.sql": "DROP TABLE e;\n",
    "6_add_f.up.sql": "CREATE TABLE f (id int);\n",  # a down named differently: paired by version all the same
    "6_drop_f.down.sql": "DROP TABLE f;\n",
    "+7_signed.sql": "CREATE TABLE g (id int);\n",  # Rust's i64 parse takes a `+`
    "8_twice.sql.sql": "CREATE TABLE h (id int);\n",  # the suffix is trimmed as often as it repeats
    "9_.sql": "CREATE TABLE i (id int);\n",  # an empty description
    "10_a_directory.sql": Dir(),  # not regular files: SQLx ignores them
    "11_a_pipe.sql": Fifo(),
    "12_a_device.up.sql": Link("/dev/zero"),
    "13_up.sql": "CREATE TABLE j (id int);\n",  # `up.sql` is a description, not a suffix
    "released.sum": "not a migration\n",
    "README": "not a migration\n",
}
#: version -> (description, has a down file)
SQLX_SHAPES_RESOLVED: dict[int, tuple[str, bool]] = {
    1: ("create a", True),
    2: ("create b", False),
    3: ("wrapped", False),
    4: ("v1.2 init", True),
    5: ("plain", True),
    6: ("add f", True),
    7: ("signed", False),
    8: ("twice", False),
    9: ("", False),
    13: ("up", False),
}


# An application with two SQLx migrators over one ledger: its main directory, and a deferred one of
# `-- no-transaction` files that runs with `ignore_missing` (shared by tests/test_multidir.py and
# tests/test_sqlx_interop.py). The deferred version sits between main ones: one source is ordered by version.
V1, V_DEFERRED, V3, V4 = 20250101000000, 20250201000000, 20250301000000, 20250401000000
MAIN_SET: dict[str, Entry] = {
    f"{V1}_create_students.up.sql": "CREATE TABLE students (id bigint PRIMARY KEY, email text);\n",
    f"{V1}_create_students.down.sql": "DROP TABLE students;\n",
    f"{V3}_create_grades.up.sql": "CREATE TABLE grades (id bigint PRIMARY KEY, score integer);\n",
    f"{V3}_create_grades.down.sql": "DROP TABLE grades;\n",
    f"{V4}_create_rooms.up.sql": "CREATE TABLE rooms (id bigint PRIMARY KEY);\n",
    f"{V4}_create_rooms.down.sql": "DROP TABLE rooms;\n",
}
DEFERRED_SET: dict[str, Entry] = {
    f"{V_DEFERRED}_index_students_email.up.sql": (
        "-- no-transaction\nCREATE INDEX CONCURRENTLY students_email_idx ON students (email);\n"
    ),
    f"{V_DEFERRED}_index_students_email.down.sql": "-- no-transaction\nDROP INDEX CONCURRENTLY students_email_idx;\n",
}
