"""Where migrations come from: a directory of SQLx-format files, read with SQLx's rules and a few stricter ones.

This is the one loader: `migrate`, `audit` and `lint` (and the gate in front of `migrate`) all read migrations here,
so what one accepts, all accept.

SQLx's rules (see docs/sqlx-compat.md): `<VERSION>_<DESCRIPTION>.sql`, or the reversible pair `.up.sql` + `.down.sql`;
split on the first `_`; VERSION is a signed 64-bit integer; names without `_` or not ending in `.sql` are ignored;
the checksum is SHA-384 of the up file's exact bytes; a file starting with `-- no-transaction` runs outside a
transaction.

Stricter than SQLx: a VERSION that is not plain ASCII digits (`+1`, ` 1`, Arabic-Indic digits), two files whose
versions are the same number (`1_a.sql`, `0001_b.sql`), an up without its down (or the reverse), non-UTF-8 files,
multi-statement no-transaction files, and anything named like a migration that is not a regular file (a directory,
a named pipe, a link to a device, a link that leads nowhere) are refused here, naming the file, before anything is
touched. CRLF line endings and a BOM are warnings: they are legal, but they change the checksum, which is how "modified"
surprises start.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

from .errors import Location, MigrationSourceError
from .sqltext import SqlText

NO_TRANSACTION_MARKER = "-- no-transaction"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1

MigrationKind = Literal["simple", "up", "down"]


@dataclass(frozen=True)
class SourceWarning:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True)
class MigrationFile:
    """One file of a migration: an up (or simple) script, or a down script."""

    path: Path
    version: int
    description: str
    kind: MigrationKind
    text: str  # the bytes decoded as strict UTF-8, so encoding it again gives back the exact bytes

    @property
    def raw(self) -> bytes:
        return self.text.encode("utf-8")

    @property
    def no_transaction(self) -> bool:
        # Exactly SQLx's test: the text starts with the marker (so not after a BOM).
        return self.text.startswith(NO_TRANSACTION_MARKER)

    @property
    def stem(self) -> str:
        """The name without `.sql`, `.up.sql` or `.down.sql`."""
        return self.path.name[: -len(_SUFFIXES[self.kind])]

    @cached_property
    def sql(self) -> SqlText:
        """The text, tokenized once on first use: statements, a masked copy, line numbers."""
        return SqlText(self.text)


@dataclass(frozen=True)
class Migration:
    """One migration: an up script and, for reversible migrations, its down script."""

    version: int
    description: str
    up_path: Path
    up_sql: str
    checksum: bytes  # SHA-384 of the up file's exact bytes, as SQLx stores it
    down_path: Path | None = None
    down_sql: str | None = None

    @property
    def reversible(self) -> bool:
        return self.down_sql is not None

    @property
    def no_transaction(self) -> bool:
        return self.up_sql.startswith(NO_TRANSACTION_MARKER)

    @property
    def down_no_transaction(self) -> bool:
        return self.down_sql is not None and self.down_sql.startswith(NO_TRANSACTION_MARKER)

    @property
    def filename(self) -> str:
        return self.up_path.name

    @property
    def down_filename(self) -> str | None:
        return self.down_path.name if self.down_path else None

    @property
    def files(self) -> tuple[MigrationFile, ...]:
        """Its up (or simple) file, then its down file if it has one."""
        up = MigrationFile(
            self.up_path, self.version, self.description, "up" if self.reversible else "simple", self.up_sql
        )
        if self.down_path is None or self.down_sql is None:
            return (up,)
        return up, MigrationFile(self.down_path, self.version, self.description, "down", self.down_sql)


@dataclass(frozen=True)
class MigrationSource:
    """The resolved migrations of one directory, ascending by version."""

    directory: Path
    migrations: tuple[Migration, ...]
    warnings: tuple[SourceWarning, ...] = field(default=())

    def __iter__(self) -> Iterator[Migration]:
        return iter(self.migrations)

    def __len__(self) -> int:
        return len(self.migrations)

    @property
    def versions(self) -> list[int]:
        return [m.version for m in self.migrations]

    @property
    def latest(self) -> int | None:
        return self.migrations[-1].version if self.migrations else None

    def get(self, version: int) -> Migration | None:
        for m in self.migrations:
            if m.version == version:
                return m
        return None

    def up_to(self, target: int | None) -> tuple[Migration, ...]:
        return self.migrations if target is None else tuple(m for m in self.migrations if m.version <= target)


def checksum(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


# --- names and versions -------------------------------------------------------------------------------------------

_VERSION = re.compile(r"-?[0-9]+")  # what SQLx's i64 parse accepts, less its leading `+`
_SUFFIXES: dict[MigrationKind, str] = {"up": ".up.sql", "down": ".down.sql", "simple": ".sql"}
_NAMING_HINT = (
    "name it <VERSION>_<description>.sql (or a .up.sql/.down.sql pair) with VERSION in plain ASCII digits, e.g. "
    "20250301000000_add_library.up.sql (`orchestrator new add library` writes such a pair)"
)


def is_migration_name(name: str) -> bool:
    """SQLx's own test: names without `_` or not ending in `.sql` are ignored (released.sum among them)."""
    return "_" in name and name.endswith(".sql")


def parse_version(text: str, location: Location) -> int:
    """VERSION as SQLx reads it, a signed 64-bit integer, but only from ASCII digits with an optional `-`.

    Python's int() also takes `+`, spaces, `_` and any Unicode digit (Arabic-Indic ones too); SQLx would refuse or read
    those differently, so they are refused here.
    """
    if not _VERSION.fullmatch(text):
        raise MigrationSourceError(
            f"the version {text!r} is not a plain integer (ASCII digits 0-9, optionally after a `-`)",
            location=location,
            hint=_NAMING_HINT,
        )
    version = int(text)
    if not I64_MIN <= version <= I64_MAX:
        raise MigrationSourceError(
            f"the version {text} does not fit in a signed 64-bit integer ({I64_MIN} to {I64_MAX})",
            location=location,
            hint=_NAMING_HINT,
        )
    return version


def parse_file_name(path: Path) -> tuple[int, str, MigrationKind] | None:
    """(version, description, kind) for a migration file name, None for a name SQLx ignores."""
    name = path.name
    if not is_migration_name(name):
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise MigrationSourceError(
            "the file name is not valid UTF-8", location=Location(path), hint="rename it using UTF-8"
        ) from None
    version_text, rest = name.split("_", 1)
    version = parse_version(version_text, Location(path))
    kind: MigrationKind = "up" if rest.endswith(".up.sql") else "down" if rest.endswith(".down.sql") else "simple"
    return version, rest[: -len(_SUFFIXES[kind])].replace("_", " "), kind


# --- reading ------------------------------------------------------------------------------------------------------

_NOT_A_FILE_HINT = (
    "a name of the form <VERSION>_<description>.sql is read as a migration: make it a regular file (or a symbolic "
    "link to one), or rename it so that it does not end in .sql"
)


def _file_type(mode: int) -> str:
    kinds = (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    )
    return next((name for test, name in kinds if test(mode)), "a special file")


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path` when it is a regular file (symbolic links followed). Anything else is refused without
    being read, so a named pipe cannot block the loader and a link to /dev/zero cannot feed it forever."""
    location = Location(path)
    link = f"a symbolic link to {os.readlink(path)}, which is " if path.is_symlink() else ""
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            problem = "is a symbolic link that never reaches a file (it points to itself, or links loop)"
        elif exc.errno == errno.ENOENT and link:
            problem = f"is {link}missing"
        else:
            problem = f"cannot be read: {exc.strerror}"
        raise MigrationSourceError(problem, location=location, hint=_NOT_A_FILE_HINT) from None
    if not stat.S_ISREG(info.st_mode):
        raise MigrationSourceError(
            f"is {link}{_file_type(info.st_mode)}, not a regular file", location=location, hint=_NOT_A_FILE_HINT
        )
    try:
        # O_NONBLOCK: should the file have been swapped for a named pipe since the check above, open does not wait.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise MigrationSourceError(
                    "is not a regular file (it was replaced while being read)", location=location, hint=_NOT_A_FILE_HINT
                )
            return f.read()
    except OSError as exc:
        raise MigrationSourceError(f"cannot be read: {exc.strerror}", location=location) from None


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MigrationSourceError(
            f"not valid UTF-8 (byte {exc.start})",
            location=Location(path, line),
            hint="re-save the file as UTF-8; SQLx refuses it too",
        ) from None


def _read(path: Path, version: int, description: str, kind: MigrationKind) -> MigrationFile:
    return MigrationFile(path, version, description, kind, _decode(path, _read_regular_file(path)))


# --- the directory ------------------------------------------------------------------------------------------------


def _check_no_transaction(file: MigrationFile) -> None:
    if not file.no_transaction:
        return
    statements = file.sql.statements
    if len(statements) > 1:
        raise MigrationSourceError(
            f"a `-- no-transaction` file must hold exactly one statement; this one holds {len(statements)}",
            location=Location(file.path, statements[1].line),
            hint="SQLx sends the file as one query, so several statements still run in an implicit transaction "
            "(and CREATE INDEX CONCURRENTLY fails there): put each statement in its own migration",
        )


def _warnings(file: MigrationFile) -> list[SourceWarning]:
    found = []
    if file.text.startswith("\ufeff"):
        found.append(SourceWarning(file.path, "starts with a UTF-8 byte-order mark; it is part of the checksum"))
    if "\r\n" in file.text:
        found.append(
            SourceWarning(
                file.path,
                "has CRLF line endings; the checksum depends on them, so a checkout with LF endings will look "
                "'modified' (set `*.sql -text` in .gitattributes)",
            )
        )
    return found


def _used_twice(first: Path, second: Path, version: int) -> MigrationSourceError:
    first_text, second_text = (p.name.split("_", 1)[0] for p in (first, second))
    same_number = f" ({first_text} and {second_text} are the same number)" if first_text != second_text else ""
    return MigrationSourceError(
        f"version {version} is used twice: {first.name} and {second.name}{same_number}",
        location=Location(second),
        hint="every migration needs its own version; rename one (`orchestrator new` picks a fresh one)",
    )


def _named(directory: Path) -> list[tuple[Path, int, str, MigrationKind]]:
    """Every entry named like a migration, with its parsed name. Names are checked before any file is read: a bad
    version, or one used twice by ups (or by downs), is refused here."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise MigrationSourceError(
            f"migrations directory {directory} {what}",
            hint="pass --migrations DIR pointing at the folder of SQLx migration files",
        )
    named = []
    seen: dict[tuple[int, bool], Path] = {}
    for path in sorted(directory.iterdir()):
        parsed = parse_file_name(path)
        if parsed is None:
            continue
        version, _, kind = parsed
        key = (version, kind == "down")
        if key in seen:
            raise _used_twice(seen[key], path, version)
        seen[key] = path
        named.append((path, *parsed))
    return named


def load_migrations(directory: Path | str) -> MigrationSource:
    """Read and validate every migration in `directory`: the one loader of migrate, audit and lint.

    Raises MigrationSourceError naming the file, what is wrong and what to do.
    """
    directory = Path(directory)
    ups: dict[int, MigrationFile] = {}
    downs: dict[int, MigrationFile] = {}
    warnings: list[SourceWarning] = []
    for named in _named(directory):
        file = _read(*named)
        (downs if file.kind == "down" else ups)[file.version] = file
        _check_no_transaction(file)
        warnings.extend(_warnings(file))

    migrations = []
    for version in sorted(ups):
        up = ups[version]
        down = downs.pop(version, None)
        if up.kind == "up" and down is None:
            raise MigrationSourceError(
                "reversible migration has no down file",
                location=Location(up.path),
                hint=f"add {up.stem}.down.sql that undoes it",
            )
        if up.kind == "simple" and down is not None:
            raise MigrationSourceError(
                f"down file belongs to a migration that is not reversible ({up.path.name})",
                location=Location(down.path),
                hint=f"rename {up.path.name} to end in .up.sql, or remove the down file",
            )
        if down is not None and down.description != up.description:
            raise MigrationSourceError(
                f"down file's description {down.description!r} differs from its up file's {up.description!r}",
                location=Location(down.path),
                hint=f"name it {up.stem}.down.sql",
            )
        migrations.append(
            Migration(
                version=version,
                description=up.description,
                up_path=up.path,
                up_sql=up.text,
                checksum=checksum(up.raw),
                down_path=down.path if down else None,
                down_sql=down.text if down else None,
            )
        )
    for orphan in downs.values():
        raise MigrationSourceError(
            "down file has no up file",
            location=Location(orphan.path),
            hint=f"add {orphan.stem}.up.sql, or remove the down file",
        )
    return MigrationSource(directory, tuple(migrations), tuple(warnings))
