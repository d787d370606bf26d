"""Where migrations come from: a directory of SQLx-format files, read with SQLx's rules and a few stricter ones.

SQLx's rules (see docs/sqlx-compat.md): `<VERSION>_<DESCRIPTION>.sql`, or the reversible pair `.up.sql` + `.down.sql`;
split on the first `_`; names without `_` or not ending in `.sql` are ignored; the checksum is SHA-384 of the up
file's exact bytes; a file starting with `-- no-transaction` runs outside a transaction.

Stricter than SQLx: duplicate versions, an up without its down (or the reverse), non-UTF-8 files and multi-statement
no-transaction files are refused here, before anything is touched. CRLF line endings and a BOM are warnings: they
are legal, but they change the checksum, which is how "modified" surprises start.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import Location, MigrationSourceError
from .sqltext import split_statements

NO_TRANSACTION_MARKER = "-- no-transaction"
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


@dataclass(frozen=True)
class SourceWarning:
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


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


@dataclass
class _Parsed:
    path: Path
    version: int
    description: str
    kind: str  # "simple" | "up" | "down"
    text: str
    raw: bytes


def _parse_name(path: Path) -> tuple[int, str, str] | None:
    """(version, description, kind) for a migration file name, None for a name SQLx ignores."""
    name = path.name
    if "_" not in name or not name.endswith(".sql"):
        return None
    version_text, rest = name.split("_", 1)
    loc = Location(path)
    try:
        version = int(version_text, 10)
    except ValueError:
        raise MigrationSourceError(
            f"the version {version_text!r} is not an integer",
            location=loc,
            hint="name the file <VERSION>_<description>.sql, e.g. 20250301000000_add_library.sql "
            "(`orchestrator new add library` writes one)",
        ) from None
    if not version_text.isdigit() and not (version_text.startswith("-") and version_text[1:].isdigit()):
        raise MigrationSourceError(f"the version {version_text!r} is not a plain integer", location=loc)
    if not I64_MIN <= version <= I64_MAX:
        raise MigrationSourceError(f"the version {version_text} does not fit in a signed 64-bit integer", location=loc)
    if rest.endswith(".up.sql"):
        kind, stem = "up", rest[: -len(".up.sql")]
    elif rest.endswith(".down.sql"):
        kind, stem = "down", rest[: -len(".down.sql")]
    else:
        kind, stem = "simple", rest[: -len(".sql")]
    return version, stem.replace("_", " "), kind


def _read(path: Path, version: int, description: str, kind: str) -> _Parsed:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise MigrationSourceError(
            f"not valid UTF-8 (byte {exc.start})",
            location=Location(path, line),
            hint="re-save the file as UTF-8; SQLx refuses it too",
        ) from None
    return _Parsed(path, version, description, kind, text, raw)


def _check_no_transaction(p: _Parsed) -> None:
    if not p.text.startswith(NO_TRANSACTION_MARKER):
        return
    statements = split_statements(p.text)
    if len(statements) > 1:
        raise MigrationSourceError(
            f"a `-- no-transaction` file must hold exactly one statement; this one holds {len(statements)}",
            location=Location(p.path, statements[1].line),
            hint="SQLx sends the file as one query, so several statements still run in an implicit transaction "
            "(and CREATE INDEX CONCURRENTLY fails there): put each statement in its own migration",
        )


def _warnings(p: _Parsed) -> list[SourceWarning]:
    found = []
    if p.raw.startswith(b"\xef\xbb\xbf"):
        found.append(SourceWarning(p.path, "starts with a UTF-8 byte-order mark; it is part of the checksum"))
    if b"\r\n" in p.raw:
        found.append(
            SourceWarning(
                p.path,
                "has CRLF line endings; the checksum depends on them, so a checkout with LF endings will look "
                "'modified' (set `*.sql -text` in .gitattributes)",
            )
        )
    return found


def load_migrations(directory: Path | str) -> MigrationSource:
    """Read and validate every migration in `directory`. Raises MigrationSourceError naming the file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise MigrationSourceError(
            f"migrations directory {directory} does not exist",
            hint="pass --migrations DIR pointing at the folder of SQLx migration files",
        )
    ups: dict[int, _Parsed] = {}
    downs: dict[int, _Parsed] = {}
    warnings: list[SourceWarning] = []
    for path in sorted(directory.iterdir()):
        if not path.is_file():
            continue
        parsed_name = _parse_name(path)
        if parsed_name is None:
            continue
        p = _read(path, *parsed_name)
        target = downs if p.kind == "down" else ups
        if p.version in target:
            raise MigrationSourceError(
                f"version {p.version} is used twice: {target[p.version].path.name} and {path.name}",
                location=Location(path),
                hint="every migration needs its own version; rename one (`orchestrator new` picks a fresh one)",
            )
        target[p.version] = p
        _check_no_transaction(p)
        warnings.extend(_warnings(p))

    migrations = []
    for version in sorted(ups):
        up = ups[version]
        down = downs.pop(version, None)
        if up.kind == "up" and down is None:
            raise MigrationSourceError(
                "reversible migration has no down file",
                location=Location(up.path),
                hint=f"add {up.path.name[: -len('.up.sql')]}.down.sql that undoes it",
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
                hint=f"name it {up.path.name[: -len('.up.sql')]}.down.sql",
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
            hint=f"add {orphan.path.name[: -len('.down.sql')]}.up.sql, or remove the down file",
        )
    return MigrationSource(directory, tuple(migrations), tuple(warnings))
