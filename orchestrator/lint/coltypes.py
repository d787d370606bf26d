"""Which column type changes PostgreSQL makes without rewriting the table, and the column types the up files declare.

`ALTER COLUMN ... TYPE` rewrites the table and its indexes under an ACCESS EXCLUSIVE lock, except when the old type
is binary coercible to the new one or the new type modifier only relaxes the old (PostgreSQL docs, ALTER TABLE,
Notes; the length-coercion support functions varchar_support, numeric_support, timestamp_support, time_support,
varbit_support). Then only the catalog changes: the table's relfilenode stays (tests/test_type_changes.py checks each
pair below on a real server, on every PostgreSQL version of the suite). Here, without a rewrite:

- varchar(n) -> varchar(m >= n), varchar, text; varchar -> text; text -> varchar
- numeric(p, s) -> numeric(q >= p, s), numeric (decimal is numeric; numeric(p) is numeric(p, 0))
- timestamp, timestamptz, time, timetz (p) -> the same type with (q >= p), or without a precision
- varbit(n) -> varbit(m >= n), varbit
- any type to itself

Everything else is a rewrite or not known to be free: char(n) -> char(m) pads every value, char(n) -> text trims
them, arrays are coerced element by element, int -> bigint changes the width; a USING or COLLATE clause, or a column
declared with COLLATE, is never taken as free here (a collation change rebuilds the indexes).

The old type comes from the migrations themselves: `Columns` follows CREATE TABLE, ADD COLUMN, ALTER ... TYPE,
renames and drops through the up files in version order. A column it does not know (created outside the files, or
declared in a way it cannot read) is never assumed safe.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_SPACES = re.compile(r"\s+")
_TYPE = re.compile(
    r"(?:pg_catalog\s*\.\s*)?(?P<name>[a-z][a-z0-9 ]*?)\s*"
    r"(?:\(\s*(?P<first>\d+)\s*(?:,\s*(?P<second>\d+)\s*)?\))?"
    r"(?P<zone>\s+with(?:out)?\s+time\s+zone)?",
)
_FAMILIES = {
    "character varying": "varchar",
    "varchar": "varchar",
    "text": "text",
    "numeric": "numeric",
    "decimal": "numeric",
    "timestamp": "timestamp",
    "timestamp without time zone": "timestamp",
    "timestamptz": "timestamptz",
    "timestamp with time zone": "timestamptz",
    "time": "time",
    "time without time zone": "time",
    "timetz": "timetz",
    "time with time zone": "timetz",
    "bit varying": "varbit",
    "varbit": "varbit",
}
_PRECISION_TYPES = {"timestamp", "timestamptz", "time", "timetz"}
_LENGTH_TYPES = {"varchar", "varbit"}


@dataclass(frozen=True)
class ColumnType:
    """A type as PostgreSQL resolves it: its name (aliases folded) and its modifiers, () when unconstrained."""

    name: str
    modifiers: tuple[int, ...] = ()

    def __str__(self) -> str:
        return f"{self.name}({', '.join(map(str, self.modifiers))})" if self.modifiers else self.name


def parse_type(text: str) -> ColumnType | None:
    """`character varying(50)` -> varchar(50); None for what is not a plain scalar type (arrays, quoted names...)."""
    folded = _SPACES.sub(" ", text.strip().lower())
    m = _TYPE.fullmatch(folded)
    if not m:
        return None
    name = m.group("name").strip() + (" " + _SPACES.sub(" ", m.group("zone").strip()) if m.group("zone") else "")
    modifiers = tuple(int(g) for g in (m.group("first"), m.group("second")) if g is not None)
    family = _FAMILIES.get(name, name)
    if family == "numeric" and len(modifiers) == 1:
        modifiers = (modifiers[0], 0)  # numeric(p) is numeric(p, 0)
    return ColumnType(family, modifiers)


def rewrites(old: ColumnType, new: ColumnType) -> bool:
    """Whether ALTER COLUMN ... TYPE from `old` to `new` (no USING, no COLLATE) rewrites the table (or may)."""
    if old == new:
        return False
    if new.name == "text" or (new.name == "varchar" and not new.modifiers):
        return old.name not in ("varchar", "text")  # binary coercible, nothing to check
    if old.name != new.name or not old.modifiers:
        return True
    if not new.modifiers:
        return False  # the same type, its limit lifted
    if old.name in _LENGTH_TYPES or old.name in _PRECISION_TYPES:
        return new.modifiers[0] < old.modifiers[0]
    if old.name == "numeric":
        (precision, scale), (new_precision, new_scale) = old.modifiers, new.modifiers
        return new_scale != scale or new_precision < precision
    return True


class Columns:
    """Column types by table (unqualified, case-folded names), as the up files declare them so far."""

    def __init__(self) -> None:
        self._tables: dict[str, dict[str, ColumnType | None]] = {}

    def type_of(self, table: str, column: str) -> ColumnType | None:
        return self._tables.get(table, {}).get(column)

    def create_table(self, table: str) -> None:
        self._tables[table] = {}

    def drop_table(self, table: str) -> None:
        self._tables.pop(table, None)

    def rename_table(self, table: str, new: str) -> None:
        if table in self._tables:
            self._tables[new] = self._tables.pop(table)

    def set(self, table: str, column: str, column_type: ColumnType | None) -> None:
        self._tables.setdefault(table, {})[column] = column_type

    def drop(self, table: str, column: str) -> None:
        self._tables.get(table, {}).pop(column, None)

    def rename(self, table: str, column: str, new: str) -> None:
        columns = self._tables.get(table, {})
        if column in columns:
            columns[new] = columns.pop(column)
