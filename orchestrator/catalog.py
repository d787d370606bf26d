"""A digest of what a database holds: equal for a database and its copies, different once anything is defined,
dropped, altered, granted or written in one of them.

Why not the audit's schema fingerprint: it describes a schema (the same for any two databases the files built), and
reading it costs 50-170 ms for 60-300 files; a spare must prove it is an untouched copy of one build, cheaply.
`CREATE DATABASE ... TEMPLATE` copies the catalogs row for row, object ids included, so the rows of every object
made in the database (oid >= 16384, FirstNormalObjectId) hash the same in the copy; any DDL in it changes, adds or
removes rows, and new objects get new ids from the server-wide counter, so a database built apart (a forged copy)
does not match either. Of the objects initdb made (oid < 16384), the owner and grants are digested (the database's
owner owns its `public` schema from PostgreSQL 15 on, and may open it to everyone). Also digested: the rows of
every table and the state of every sequence the role may read (a copy's are the build's), and the subscriptions
that write into the database (a copy has none). Left out: what VACUUM and ANALYZE change on their own (relpages,
reltuples, relallvisible, the frozen xids, statistics), and the rows of unlogged tables (a crash empties them, the
template's too: every later copy would differ from the template's marker and be set aside). Not seen: rows a
row-level security policy hides from the reading role (a table with FORCE ROW LEVEL SECURITY, read by a role
without BYPASSRLS): reading with row_security off would make such a project's template need a BYPASSRLS role
(tests/test_adversary_digest.py keeps the case as a strict xfail).

The digest names its version (`v2:`): a marker holding another version's (an older release's) is not compared with
it; the template is rebuilt once and its spares made again (template.py).
"""

from __future__ import annotations

import asyncpg

from .connection import quote_ident

FIRST_NORMAL_OID = 16384
DIGEST_VERSION = "v2:"
# pg_class without what VACUUM and ANALYZE change (relpages, reltuples, relallvisible, the frozen xids): every other
# column of PostgreSQL 12 and later, written out. The file's number (relfilenode) too: a copy keeps it (its pg_class
# rows are the template's, and name its files), and whatever rewrites a relation gives it a new one: REINDEX over
# another body of an expression index's function (then put back), VACUUM FULL, CLUSTER, TRUNCATE, REFRESH.
_CLASS_ROW = (
    "ROW(c.oid, c.relname, c.relnamespace, c.reltype, c.reloftype, c.relowner, c.relam, c.relfilenode, "
    "c.reltoastrelid, c.relkind, c.relnatts, c.relchecks, c.relhasrules, c.relhastriggers, c.relrowsecurity, "
    "c.relforcerowsecurity, c.relpersistence, c.relispopulated, c.relispartition, c.relreplident, c.relacl, "
    "c.reloptions, c.relpartbound)"
)
# pg_attribute, the largest (10,000 rows for 300 files): what DDL sets, written out (a third cheaper than every column).
# `{compression}`: attcompression (ALTER COLUMN ... SET COMPRESSION) from PostgreSQL 14 on.
_ATTRIBUTE_ROW = (
    "ROW(c.attrelid, c.attnum, c.attname, c.atttypid, c.atttypmod, c.attndims, c.attnotnull, c.atthasdef, "
    "c.atthasmissing, c.attidentity, c.attgenerated, c.attisdropped, c.attislocal, c.attinhcount, c.attcollation, "
    "c.attstattarget, c.attstorage{compression}, c.attacl, c.attoptions, c.attfdwoptions, c.attmissingval)"
)
# (catalog, the row as text, the column naming the object the row is about, the order of its rows, the first
# PostgreSQL major that has it). Rows are ordered by key, not by their text: sorting 10,000 texts costs 300 ms, the
# whole digest 10-40 ms.
_CATALOGS: tuple[tuple[str, str, str, str, int], ...] = (
    ("pg_namespace", "c::text", "oid", "oid", 0),
    ("pg_class", _CLASS_ROW + "::text", "oid", "oid", 0),
    ("pg_attribute", _ATTRIBUTE_ROW + "::text", "attrelid", "attrelid, attnum", 0),
    ("pg_attrdef", "c::text", "oid", "oid", 0),
    ("pg_constraint", "c::text", "oid", "oid", 0),
    ("pg_index", "c::text", "indexrelid", "indexrelid", 0),
    ("pg_inherits", "c::text", "inhrelid", "inhrelid, inhseqno", 0),
    ("pg_sequence", "c::text", "seqrelid", "seqrelid", 0),
    ("pg_type", "c::text", "oid", "oid", 0),
    ("pg_enum", "c::text", "oid", "oid", 0),
    ("pg_proc", "c::text", "oid", "oid", 0),
    ("pg_trigger", "c::text", "oid", "oid", 0),
    ("pg_policy", "c::text", "oid", "oid", 0),
    ("pg_rewrite", "c::text", "oid", "oid", 0),
    ("pg_extension", "c::text", "oid", "oid", 0),
    ("pg_description", "c::text", "objoid", "objoid, classoid, objsubid", 0),
    ("pg_default_acl", "c::text", "oid", "oid", 0),
    ("pg_statistic_ext", "c::text", "oid", "oid", 0),
    # v2: every other catalog of objects made in a database.
    ("pg_aggregate", "c::text", "aggfnoid", "aggfnoid", 0),
    ("pg_am", "c::text", "oid", "oid", 0),
    ("pg_amop", "c::text", "oid", "oid", 0),
    ("pg_amproc", "c::text", "oid", "oid", 0),
    ("pg_cast", "c::text", "oid", "oid", 0),
    ("pg_collation", "c::text", "oid", "oid", 0),
    ("pg_conversion", "c::text", "oid", "oid", 0),
    ("pg_event_trigger", "c::text", "oid", "oid", 0),
    ("pg_foreign_data_wrapper", "c::text", "oid", "oid", 0),
    ("pg_foreign_server", "c::text", "oid", "oid", 0),
    ("pg_foreign_table", "c::text", "ftrelid", "ftrelid", 0),
    ("pg_init_privs", "c::text", "objoid", "objoid, classoid, objsubid", 0),
    ("pg_language", "c::text", "oid", "oid", 0),
    ("pg_opclass", "c::text", "oid", "oid", 0),
    ("pg_operator", "c::text", "oid", "oid", 0),
    ("pg_opfamily", "c::text", "oid", "oid", 0),
    ("pg_partitioned_table", "c::text", "partrelid", "partrelid", 0),
    ("pg_publication", "c::text", "oid", "oid", 0),
    ("pg_publication_namespace", "c::text", "oid", "oid", 15),
    ("pg_publication_rel", "c::text", "oid", "oid", 0),
    ("pg_range", "c::text", "rngtypid", "rngtypid", 0),
    ("pg_seclabel", "c::text", "objoid", "objoid, classoid, objsubid", 0),
    ("pg_transform", "c::text", "oid", "oid", 0),
    ("pg_ts_config", "c::text", "oid", "oid", 0),
    ("pg_ts_config_map", "c::text", "mapcfg", "mapcfg, maptokentype, mapseqno", 0),
    ("pg_ts_dict", "c::text", "oid", "oid", 0),
    ("pg_ts_parser", "c::text", "oid", "oid", 0),
    ("pg_ts_template", "c::text", "oid", "oid", 0),
    ("pg_user_mappings", "ROW(c.umid, c.srvid, c.umuser)::text", "umid", "umid", 0),  # the catalog is not readable
    # What depends on what, of objects made in the database: ALTER EXTENSION ... ADD and ALTER ... DEPENDS ON
    # EXTENSION change nothing else (the object then leaves pg_dump's output, or is dropped with the extension).
    ("pg_depend", "c::text", "objid", "objid, classid, objsubid, refclassid, refobjid, refobjsubid, deptype", 0),
)
# Large objects: every one (initdb makes none, and lo_create(oid) takes any free OID, 16384 or not).
_LARGE_OBJECTS = "(SELECT coalesce(md5(string_agg(c::text, E'\\n' ORDER BY c.oid)), '') FROM pg_largeobject_metadata c)"
# initdb's objects (oid < 16384) whose owner or grants the database's owner (or a superuser) may change:
# (catalog, owner column, grants column).
_BUILTIN_GRANTS: tuple[tuple[str, str, str], ...] = (
    ("pg_namespace", "nspowner", "nspacl"),
    ("pg_class", "relowner", "relacl"),
    ("pg_proc", "proowner", "proacl"),
    ("pg_type", "typowner", "typacl"),
    ("pg_language", "lanowner", "lanacl"),
)
# The subscriptions writing into this database (a shared catalog: a copy starts with none). The columns every role
# may read.
_SUBSCRIPTIONS = (
    "(SELECT coalesce(md5(string_agg(ROW(s.oid, s.subname, s.subowner, s.subenabled, s.subslotname, "
    "s.subpublications)::text, E'\\n' ORDER BY s.oid)), '') FROM pg_subscription s "
    "WHERE s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database()))"
)
# Every sequence's state in one part (a subquery per sequence costs its planning, and a school has one per table:
# half the digest's time in a new session): the last value nextval() gave, or NULL before the first.
_SEQUENCES = (
    "(SELECT coalesce(md5(string_agg(c.oid || ':' || coalesce(pg_sequence_last_value(c.oid)::text, '-'), E'\\n' "
    "ORDER BY c.oid)), '') FROM pg_class c WHERE c.oid >= 16384 AND CASE WHEN c.relkind = 'S' AND "
    "c.relpersistence = 'p' THEN has_sequence_privilege(c.oid, 'SELECT') ELSE false END)"  # (no error on a table)
)
# The tables and materialized views whose content is digested: permanent ones the role may read (one it
# may not read has grants that are not the build's, which the catalogs show), and of those only the ones with a page
# on disk: a row needs one, and most of a new school's tables are empty (a table without rows adds nothing, page or
# not: VACUUM truncates the empty pages of a table the build wrote to and emptied). Then the large objects' data, if
# there are any: pg_largeobject when the role may read it, else each through lo_get().
_HOLDERS = """
SELECT c.oid, n.nspname, c.relname, c.relkind::text AS relkind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.oid >= 16384 AND c.relkind IN ('r', 'm') AND c.relpersistence = 'p'
  AND has_table_privilege(c.oid, 'SELECT') AND pg_relation_size(c.oid) > 0
UNION ALL
SELECT 'pg_largeobject'::regclass::oid, 'pg_catalog', 'pg_largeobject',
       CASE WHEN has_table_privilege('pg_catalog.pg_largeobject', 'SELECT') THEN 'L' ELSE 'l' END
WHERE EXISTS (SELECT 1 FROM pg_largeobject_metadata)
ORDER BY 1
"""


def _digest_of(catalog: str, row: str, key: str, order: str) -> str:
    return (
        f"(SELECT coalesce(md5(string_agg({row}, E'\\n' ORDER BY {order})), '') FROM {catalog} c "
        f"WHERE c.{key} >= {FIRST_NORMAL_OID})"
    )


def _grants_of(catalog: str, owner: str, grants: str) -> str:
    return (
        f"(SELECT coalesce(md5(string_agg(ROW(c.oid, c.{owner}, c.{grants})::text, E'\\n' ORDER BY c.oid)), '') "
        f"FROM {catalog} c WHERE c.oid < {FIRST_NORMAL_OID} AND (c.{grants} IS NOT NULL OR c.{owner} <> 10))"
    )


def _content_of(oid: int, schema: str, name: str, kind: str) -> str:
    """The content of a relation, named by its OID; NULL (left out of the digest) for a table without rows: one the
    build left a page of dead rows in and VACUUM (autovacuum's too) truncated since is the same as it was."""
    relation = f"{quote_ident(schema)}.{quote_ident(name)}"
    if kind == "L":  # the large objects' data, read where it is (superusers; others may not read pg_largeobject)
        return (
            "(SELECT 'lo:' || md5(string_agg(ROW(t.loid, t.pageno, t.data)::text, E'\\n' ORDER BY t.loid, t.pageno))"
            " FROM pg_catalog.pg_largeobject t)"
        )
    if kind == "l":  # the same through lo_get(): each one the role may read (an error for one it may not)
        return (
            "(SELECT 'lo:' || md5(string_agg(t.oid || ':' || md5(lo_get(t.oid)), E'\\n' ORDER BY t.oid))"
            " FROM pg_catalog.pg_largeobject_metadata t)"
        )
    return f"(SELECT '{oid}:' || md5(string_agg(t::text, E'\\n' ORDER BY t::text)) FROM ONLY {relation} t)"


def digest_sql(major: int, holders: list[asyncpg.Record]) -> str:
    """The digest's query on a server of PostgreSQL `major`, with the content of `holders` (_HOLDERS' rows)."""
    compression = ", c.attcompression" if major >= 14 else ""
    parts = [
        _digest_of(catalog, row.format(compression=compression), key, order)
        for catalog, row, key, order, since in _CATALOGS
        if major >= since
    ]
    parts += [_grants_of(*entry) for entry in _BUILTIN_GRANTS]
    parts += [_SUBSCRIPTIONS, _LARGE_OBJECTS, _SEQUENCES]
    parts += [_content_of(h["oid"], h["nspname"], h["relname"], h["relkind"]) for h in holders]
    # An array, not concat_ws(): a function takes at most 100 arguments, and a school has more tables than that.
    return "SELECT md5(array_to_string(ARRAY[\n  " + ",\n  ".join(parts) + "\n], ' '))"


# The state of every sequence nextval() moved, written again by setval(): nextval() WAL-logs a value 32 ahead of the one
# it returns (what a crash may skip), so a crash after the build would leave the template's sequences ahead of its
# marker (and every later spare set aside); setval() WAL-logs the value itself.
_SETTLE_SEQUENCES = """
SELECT count(setval(c.oid, pg_sequence_last_value(c.oid), true))
FROM pg_class c
WHERE c.oid >= 16384 AND c.relkind = 'S' AND c.relpersistence = 'p'
  AND CASE WHEN has_sequence_privilege(c.oid, 'SELECT, UPDATE')
      THEN pg_sequence_last_value(c.oid) IS NOT NULL ELSE false END
"""


async def settle_sequences(conn: asyncpg.Connection) -> None:
    """Make the sequences of a database just built (before its digest is taken) hold what a crash recovers."""
    await conn.execute(_SETTLE_SEQUENCES)


async def catalog_digest(conn: asyncpg.Connection) -> str:
    """The digest of what `conn`'s database holds (two queries: which tables, then the digest). Run it in one
    transaction of REPEATABLE READ or a read-only snapshot when others may write meanwhile."""
    holders = await conn.fetch(_HOLDERS)
    sql = digest_sql(conn.get_server_version().major, holders)
    return DIGEST_VERSION + str(await conn.fetchval(sql))


def is_current(digest: str | None) -> bool:
    """Whether `digest` (a marker's) was made by this release's catalog_digest, and so may be compared with it."""
    return digest is not None and digest.startswith(DIGEST_VERSION)
