"""A digest of a database's own catalog rows: equal for a database and its copies, different once anything is defined,
dropped or altered in one of them.

Why not the audit's schema fingerprint: it describes a schema (the same for any two databases the files built), and
reading it costs 50-170 ms for 60-300 files; a spare must prove it is an untouched copy of one build, cheaply.
`CREATE DATABASE ... TEMPLATE` copies the catalogs row for row, object ids included, so the rows of every object
made in the database (oid >= 16384, FirstNormalObjectId) hash the same in the copy; any DDL in it changes, adds or
removes rows, and new objects get new ids from the server-wide counter, so a database built apart (a forged copy)
does not match either. Left out: what VACUUM and ANALYZE change on their own (relpages, reltuples, relallvisible,
the frozen xids), and the relation files' numbers (a copy strategy is free to pick new ones). Not covered: rows in
tables (the ledger is read on its own).
"""

from __future__ import annotations

import asyncpg

FIRST_NORMAL_OID = 16384
# pg_class without what VACUUM and ANALYZE change (relpages, reltuples, relallvisible, the frozen xids) and the file's
# number (relfilenode): every other column of PostgreSQL 12 and later, written out.
_CLASS_ROW = (
    "ROW(c.oid, c.relname, c.relnamespace, c.reltype, c.reloftype, c.relowner, c.relam, c.reltoastrelid, c.relkind, "
    "c.relnatts, c.relchecks, c.relhasrules, c.relhastriggers, c.relrowsecurity, c.relforcerowsecurity, "
    "c.relpersistence, c.relispartition, c.relreplident, c.relacl, c.reloptions, c.relpartbound)"
)
# pg_attribute, the largest (10,000 rows for 300 files): what DDL sets, written out (a third cheaper than every column).
_ATTRIBUTE_ROW = (
    "ROW(c.attrelid, c.attnum, c.attname, c.atttypid, c.atttypmod, c.attndims, c.attnotnull, c.atthasdef, "
    "c.atthasmissing, c.attidentity, c.attgenerated, c.attisdropped, c.attislocal, c.attinhcount, c.attcollation, "
    "c.attstattarget, c.attstorage, c.attacl, c.attoptions, c.attfdwoptions, c.attmissingval)"
)
# (catalog, the row as text, the column naming the object the row is about, the order of its rows). Rows are
# ordered by key, not by their text: sorting 10,000 texts costs 300 ms, the whole digest 10-40 ms.
_CATALOGS: tuple[tuple[str, str, str, str], ...] = (
    ("pg_namespace", "c::text", "oid", "oid"),
    ("pg_class", _CLASS_ROW + "::text", "oid", "oid"),
    ("pg_attribute", _ATTRIBUTE_ROW + "::text", "attrelid", "attrelid, attnum"),
    ("pg_attrdef", "c::text", "oid", "oid"),
    ("pg_constraint", "c::text", "oid", "oid"),
    ("pg_index", "c::text", "indexrelid", "indexrelid"),
    ("pg_inherits", "c::text", "inhrelid", "inhrelid, inhseqno"),
    ("pg_sequence", "c::text", "seqrelid", "seqrelid"),
    ("pg_type", "c::text", "oid", "oid"),
    ("pg_enum", "c::text", "oid", "oid"),
    ("pg_proc", "c::text", "oid", "oid"),
    ("pg_trigger", "c::text", "oid", "oid"),
    ("pg_policy", "c::text", "oid", "oid"),
    ("pg_rewrite", "c::text", "oid", "oid"),
    ("pg_extension", "c::text", "oid", "oid"),
    ("pg_description", "c::text", "objoid", "objoid, classoid, objsubid"),
    ("pg_default_acl", "c::text", "oid", "oid"),
    ("pg_statistic_ext", "c::text", "oid", "oid"),
)


def _digest_of(catalog: str, row: str, key: str, order: str) -> str:
    return (
        f"(SELECT coalesce(md5(string_agg({row}, E'\\n' ORDER BY {order})), '') FROM {catalog} c "
        f"WHERE c.{key} >= {FIRST_NORMAL_OID})"
    )


DIGEST_SQL = "SELECT md5(concat_ws(' ',\n  " + ",\n  ".join(_digest_of(*entry) for entry in _CATALOGS) + "\n))"


async def catalog_digest(conn: asyncpg.Connection) -> str:
    """The digest of `conn`'s database's catalog rows (one query)."""
    return str(await conn.fetchval(DIGEST_SQL))
