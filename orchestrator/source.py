"""Where migrations come from: a directory of SQLx-format files, read exactly as SQLx 0.8.6's resolver reads it.

This is the one loader: `migrate`, `audit` and `lint` (and the gate in front of `migrate`) all read migrations here,
so what one accepts, all accept.

SQLx's rules (see docs/sqlx-compat.md), checked against the real `sqlx` CLI: `<VERSION>_<DESCRIPTION>.sql`, or
`.up.sql` (with or without a `.down.sql` of the same version); split on the first `_`; VERSION is a signed 64-bit
integer (`+` allowed, as Rust parses it); DESCRIPTION is the rest, its suffix trimmed (repeatedly, as Rust's
`trim_end_matches` does: `1_a.sql.sql` is `a`) and `_` made a space (dots stay: `v1.2 init`); up and down files pair
by version alone; names without `_` or not ending in `.sql`, and entries that are not regular files (directories,
named pipes, links to devices), are ignored; an entry whose type cannot be read (a link that leads nowhere) is an
error, whatever its name; the checksum is SHA-384 of the up file's exact bytes; a file starting with
`-- no-transaction` runs outside a transaction.

What SQLx accepts and the platform would rather not have (an up without a down, a down beside a `.sql` file or named
differently from its up, a `+` in a version, a migration-named entry that is ignored) loads, and `lint` reports it
as a warning (lint/naming.py). Refused here, naming the file, before anything is touched, because SQLx itself fails
on them later or reads them in a way nothing can rely on: two files whose versions are the same number (SQLx fails on
the second, half way through a run), a down file without an up (SQLx never runs it forward, yet counts its version as
present, so a deleted up file goes unnoticed), non-UTF-8 files and file names, and several statements in a
`-- no-transaction` file. CRLF line endings and a BOM are warnings: they are legal, but they change the checksum,
which is how "modified" surprises start.

Several directories (`--migrations main --migrations deferred`: an application running two SQLx migrators, the
second with `ignore_missing`, over one `_sqlx_migrations`) form one source, ordered by version, since they share
one ledger. Each directory is read on its own by the rules above (SQLx reads each migrator's directory alone); a
version found in two of them is refused, naming both files: one ledger holds a version once, and the second
migrator would find it applied with another file's checksum.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Callable, Iterator
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
    def up_kind(self) -> MigrationKind:
        """`up` for an `.up.sql` file (with or without a down file), `simple` for a plain `.sql` one."""
        return file_kind(self.up_path.name)

    @property
    def no_transaction(self) -> bool:
        return self.up_sql.startswith(NO_TRANSACTION_MARKER)

    @property
    def down_no_transaction(self) -> bool:
        return self.down_sql is not None and self.down_sql.startswith(NO_TRANSACTION_MARKER)

    @property
    def directory(self) -> Path:
        """The directory it was read from (a source may hold several)."""
        return self.up_path.parent

    @property
    def filename(self) -> str:
        return self.up_path.name

    @property
    def down_filename(self) -> str | None:
        return self.down_path.name if self.down_path else None

    @property
    def files(self) -> tuple[MigrationFile, ...]:
        """Its up (or simple) file, then its down file if it has one."""
        up = MigrationFile(self.up_path, self.version, self.description, self.up_kind, self.up_sql)
        if self.down_path is None or self.down_sql is None:
            return (up,)
        down_description = describe(self.down_path.name.split("_", 1)[-1], "down")
        return up, MigrationFile(self.down_path, self.version, down_description, "down", self.down_sql)


@dataclass(frozen=True)
class MigrationSource:
    """The resolved migrations of one directory, or of several sharing one ledger, ascending by version."""

    directories: tuple[Path, ...]
    migrations: tuple[Migration, ...]
    warnings: tuple[SourceWarning, ...] = field(default=())
    #: entries named like migrations that SQLx ignores (not regular files), each with what it is
    ignored: tuple[SourceWarning, ...] = field(default=())

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

    def subset(self, keep: Callable[[Migration], bool]) -> MigrationSource:
        """The migrations `keep` accepts, from the same directories (e.g. what a school applied, for its reference)."""
        return MigrationSource(self.directories, tuple(m for m in self.migrations if keep(m)))

    @property
    def where(self) -> str:
        """The directories, for messages: `migrations`, or `main + deferred`."""
        return " + ".join(str(d) for d in self.directories)


# SQLx's checksum: SHA-384 of the file's bytes. A ledger row holding anything shorter was written by another tool.
CHECKSUM_BYTES = 48


def checksum(data: bytes) -> bytes:
    return hashlib.sha384(data).digest()


# --- names and versions -------------------------------------------------------------------------------------------

_VERSION = re.compile(r"[+-]?[0-9]+")  # what Rust's i64 parse accepts (ASCII digits, one optional sign)
_SUFFIXES: dict[MigrationKind, str] = {"up": ".up.sql", "down": ".down.sql", "simple": ".sql"}
_NAMING_HINT = (
    "name it <VERSION>_<description>.sql (or a .up.sql/.down.sql pair) with VERSION in ASCII digits, e.g. "
    "20250301000000_add_library.up.sql (`orchestrator new add library` writes such a pair)"
)


def is_migration_name(name: str) -> bool:
    """SQLx's own test: names without `_` or not ending in `.sql` are ignored (released.sum among them)."""
    return "_" in name and name.endswith(".sql")


def parse_version(text: str, location: Location) -> int:
    """VERSION as SQLx reads it (Rust's i64 parse): ASCII digits after an optional `+` or `-`, in 64 bits.

    Python's int() also takes spaces, `_` and any Unicode digit (Arabic-Indic ones too); SQLx refuses those, so they
    are refused here.
    """
    if not _VERSION.fullmatch(text):
        raise MigrationSourceError(
            f"the version {text!r} is not a plain integer (ASCII digits 0-9, optionally after a `-`); SQLx refuses "
            "it too",
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


def file_kind(name: str) -> MigrationKind:
    """SQLx's MigrationType::from_filename."""
    return "up" if name.endswith(".up.sql") else "down" if name.endswith(".down.sql") else "simple"


def describe(rest: str, kind: MigrationKind) -> str:
    """The description SQLx derives from the name after the first `_`: the suffix trimmed as Rust's
    `trim_end_matches` trims it (every repetition: `a.sql.sql` -> `a`), then `_` -> space. Dots stay."""
    suffix = _SUFFIXES[kind]
    while rest.endswith(suffix):
        rest = rest[: -len(suffix)]
    return rest.replace("_", " ")


def parse_file_name(path: Path) -> tuple[int, str, MigrationKind] | None:
    """(version, description, kind) for a migration file name, None for a name SQLx ignores."""
    name = path.name
    if not is_migration_name(name):
        return None
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # SQLx would record the description with U+FFFD in place of the bad bytes; our reports are UTF-8 text.
        raise MigrationSourceError(
            "the file name is not valid UTF-8",
            location=Location(path),
            hint="rename it using UTF-8 (SQLx does not compare descriptions, so a rename is safe even where it is "
            "applied)",
        ) from None
    version_text, rest = name.split("_", 1)
    version = parse_version(version_text, Location(path))
    kind = file_kind(rest)
    return version, describe(rest, kind), kind


# --- reading ------------------------------------------------------------------------------------------------------

_UNREADABLE_HINT = (
    "SQLx reads the type of every entry of the directory first and refuses the whole directory when it cannot: "
    "make it a regular file (or a symbolic link to one), or remove it"
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


def _link_text(path: Path) -> str:
    return f"a symbolic link to {os.readlink(path)}, which is " if path.is_symlink() else ""


def _mode(path: Path) -> int:
    """The type of `path`, symbolic links followed: what SQLx asks of every entry, whatever its name, before it
    looks at the name (std::fs::metadata). When that fails, SQLx refuses the directory; so does this."""
    try:
        return os.stat(path).st_mode
    except OSError as exc:
        link = _link_text(path)
        if exc.errno == errno.ELOOP:
            problem = "is a symbolic link that never reaches a file (it points to itself, or links loop)"
        elif exc.errno == errno.ENOENT and link:
            problem = f"is {link}missing"
        else:
            problem = f"cannot be read: {exc.strerror}"
        raise MigrationSourceError(problem, location=Location(path), hint=_UNREADABLE_HINT) from None


def _read_regular_file(path: Path) -> bytes:
    """The bytes of `path`, already seen to be a regular file (symbolic links followed)."""
    location = Location(path)
    try:
        # O_NONBLOCK: should the file have been swapped for a named pipe since it was looked at, open does not wait.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise MigrationSourceError(
                    "is not a regular file (it was replaced while being read)",
                    location=location,
                    hint="run again once nothing is changing the migrations directory",
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


def _orphan_down(path: Path) -> MigrationSourceError:
    up = path.name.removesuffix(".down.sql")
    return MigrationSourceError(
        "down file has no up file",
        location=Location(path),
        hint=f"add {up}.up.sql, or remove the down file. (SQLx never runs it forward, but it counts its version as "
        "present: a deleted up file goes unnoticed, and `sqlx migrate revert` still runs this down where the "
        "version is applied. Refused here before anything is touched.)",
    )


def _named(directory: Path) -> tuple[list[tuple[Path, int, str, MigrationKind]], list[SourceWarning]]:
    """Every regular file named like a migration, with its parsed name, and the migration-named entries SQLx
    ignores (not regular files). Names are checked before any file is read: a bad version, one used twice by ups
    (or by downs), or a down without an up, is refused here."""
    if not directory.is_dir():
        what = "is not a directory" if directory.exists() else "does not exist"
        raise MigrationSourceError(
            f"migrations directory {directory} {what}",
            hint="pass --migrations DIR pointing at the folder of SQLx migration files",
        )
    named = []
    ignored = []
    seen: dict[tuple[int, bool], Path] = {}
    for path in sorted(directory.iterdir()):
        mode = _mode(path)
        if not is_migration_name(path.name):
            continue
        if not stat.S_ISREG(mode):
            what = f"is {_link_text(path)}{_file_type(mode)}, not a regular file"
            ignored.append(SourceWarning(path, f"{what}: SQLx ignores it, and so does this tool, so it never runs"))
            continue
        parsed = parse_file_name(path)
        assert parsed is not None
        version, _, kind = parsed
        key = (version, kind == "down")
        if key in seen:
            raise _used_twice(seen[key], path, version)
        seen[key] = path
        named.append((path, *parsed))
    for (version, is_down), path in seen.items():
        if is_down and (version, False) not in seen:
            raise _orphan_down(path)
    return named, ignored


def load_migrations(*directories: Path | str) -> MigrationSource:
    """Read and validate every migration in `directories` (one or more, sharing one ledger): the one loader of
    migrate, audit and lint.

    Up and down files pair by version within a directory, as in SQLx: an up without a down, a down beside a plain
    `.sql` file, or a down named differently from its up, all load (lint warns about them). Raises
    MigrationSourceError naming the file, what is wrong and what to do.
    """
    if not directories:
        raise MigrationSourceError("no migrations directory given", hint="pass --migrations DIR")
    sources = [_load_directory(Path(d)) for d in _distinct(directories)]
    if len(sources) == 1:
        return sources[0]
    by_version: dict[int, Migration] = {}
    for source in sources:
        for m in source:
            if (other := by_version.get(m.version)) is not None:
                raise _in_two_directories(other, m)
            by_version[m.version] = m
    return MigrationSource(
        tuple(s.directories[0] for s in sources),
        tuple(by_version[v] for v in sorted(by_version)),
        tuple(w for s in sources for w in s.warnings),
        tuple(w for s in sources for w in s.ignored),
    )


def _distinct(directories: tuple[Path | str, ...]) -> list[Path]:
    """The directories as given, each once: the same directory twice (however spelled) is a mistake, said so."""
    seen: dict[Path, Path] = {}
    for given in map(Path, directories):
        key = given.resolve()
        if key in seen:
            raise MigrationSourceError(
                f"migrations directory {given} is given twice"
                + (f" (as {seen[key]} too)" if str(seen[key]) != str(given) else ""),
                hint="give each --migrations directory once",
            )
        seen[key] = given
    return list(seen.values())


def _in_two_directories(first: Migration, second: Migration) -> MigrationSourceError:
    return MigrationSourceError(
        f"version {second.version} is in two migrations directories: {first.up_path} and {second.up_path}",
        location=Location(second.up_path),
        hint="the directories share one _sqlx_migrations ledger, which holds a version once (the second "
        "migrator would find it applied with the other file's checksum, `modified`): give one of them a new "
        "version (`orchestrator new --migrations DIR ...` picks a fresh one)",
    )


def _load_directory(directory: Path) -> MigrationSource:
    """One directory, read as SQLx reads a migrator's `--source`."""
    ups: dict[int, MigrationFile] = {}
    downs: dict[int, MigrationFile] = {}
    warnings: list[SourceWarning] = []
    named, ignored = _named(directory)
    for entry in named:
        file = _read(*entry)
        (downs if file.kind == "down" else ups)[file.version] = file
        _check_no_transaction(file)
        warnings.extend(_warnings(file))

    migrations = []
    for version in sorted(ups):
        up = ups[version]
        down = downs.get(version)
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
    return MigrationSource((directory,), tuple(migrations), tuple(warnings + ignored), tuple(ignored))
