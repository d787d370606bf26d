"""Schema snapshots, fingerprints and drift messages (orchestrator.audit.schema) against a real PostgreSQL.

The migrations are applied once per server to a template database; each drift test clones it, snapshots it (what the
migrations produce), changes it by hand the way a DBA would, snapshots it again and checks the exact findings. Runs
on every PostgreSQL version of the suite (tests/pgversions.py): the catalog's text differs between them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import asyncpg
import pytest
from pgfixtures import (
    create_database,
    drop_database,
    execute,
    execute_sync,
    quote_ident,
    run_sync,
    unique_db_name,
    with_database,
)
from pgversions import MigrationSet

from orchestrator.audit.model import Finding
from orchestrator.audit.schema import SchemaSnapshot, diff, fingerprint, snapshot
from orchestrator.devserver import DevServer
from orchestrator.sqlx import CREATE_HISTORY_TABLE

TOUCH = """
CREATE FUNCTION touch() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN NEW.updated_at := now(); RETURN NEW; END$$;
CREATE TRIGGER students_touch BEFORE UPDATE ON students FOR EACH ROW EXECUTE FUNCTION touch();
"""


# --- helpers ----------------------------------------------------------------------------------------------------


async def migrate(url: str, schema: MigrationSet) -> None:
    for name in schema.extensions:
        await execute(url, f"CREATE EXTENSION {quote_ident(name)}")
    for path in sorted(schema.directory.glob("*.up.sql")):
        await execute(url, path.read_text())


async def read_snapshot(url: str) -> SchemaSnapshot:
    conn = await asyncpg.connect(url)
    try:
        # Proves the snapshot only reads: a write would fail in a read-only transaction.
        async with conn.transaction(readonly=True):
            return await snapshot(conn)
    finally:
        await conn.close()


def snap(url: str) -> SchemaSnapshot:
    return run_sync(read_snapshot, url)


def texts(findings: list[Finding]) -> list[str]:
    assert all(f.kind == "schema" for f in findings)
    return [f.text for f in findings]


@pytest.fixture(scope="module")
def templates() -> Iterator[dict[str, str]]:
    """Server URL -> its template database, built by the first test that needs it; dropped with the module."""
    built: dict[str, str] = {}
    yield built
    for server_url, name in built.items():
        run_sync(drop_database(server_url, name))


@pytest.fixture
def template(pg: DevServer, schema_set: MigrationSet, templates: dict[str, str]) -> str:
    """Name of a database built by the migrations on `pg`, cloned by `school`."""
    if pg.url() not in templates:
        name = unique_db_name("schema_template")
        run_sync(migrate, run_sync(create_database(pg.url(), name)), schema_set)
        templates[pg.url()] = name
    return templates[pg.url()]


@pytest.fixture
def school(pg: DevServer, template: str, db_name: str) -> Iterator[str]:
    """URL of a fresh copy of the migrated template."""
    execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(db_name)} TEMPLATE {quote_ident(template)}")
    yield with_database(pg.url(), db_name)
    run_sync(drop_database(pg.url(), db_name))


@pytest.fixture
def second_url(pg: DevServer) -> Iterator[str]:
    name = unique_db_name("schema_second")
    yield run_sync(create_database(pg.url(), name))
    run_sync(drop_database(pg.url(), name))


# --- snapshots and fingerprints ---------------------------------------------------------------------------------


def test_same_migrations_give_identical_snapshots(db_url: str, second_url: str, schema_set: MigrationSet) -> None:
    # Shift the OIDs of the second database and give it a history table: neither may show.
    execute_sync(second_url, "CREATE TABLE junk (a int); CREATE TYPE junk_t AS ENUM ('x'); DROP TABLE junk;")
    execute_sync(second_url, "DROP TYPE junk_t; CREATE SCHEMA gone; DROP SCHEMA gone;")
    execute_sync(second_url, CREATE_HISTORY_TABLE)
    run_sync(migrate, db_url, schema_set)
    run_sync(migrate, second_url, schema_set)

    first, second = snap(db_url), snap(second_url)

    assert first == second
    assert first.to_json() == second.to_json()
    assert fingerprint(first) == fingerprint(second)
    assert diff(first, second) == []
    assert len(fingerprint(first)) == 16
    int(fingerprint(first), 16)


def test_snapshot_content_is_keyed_by_readable_names(school: str, pg_major: int, schema_set: MigrationSet) -> None:
    objects = snap(school).objects

    assert objects["table public.students"]["kind"] == "table"
    assert objects["column public.grades.score"]["attrs"] == {"type": "numeric(5,2)", "not_null": True}
    assert objects["column public.students.status"]["attrs"]["default"] == "'active'::text"
    assert objects["constraint public.grades.grades_score_check"]["attrs"]["definition"] == (
        "CHECK (((score >= (0)::numeric) AND (score <= (100)::numeric)))"
    )
    assert objects["constraint public.students.students_class_id_fkey"]["attrs"]["definition"] == (
        "FOREIGN KEY (class_id) REFERENCES classes(id) ON DELETE SET NULL"
    )
    assert objects["index public.announcements_published_at_idx"] == {
        "kind": "index",
        "schema": "public",
        "table": "announcements",
        "name": "announcements_published_at_idx",
        "attrs": {"definition": "USING btree (published_at DESC)", "unique": False, "valid": True},
    }
    # PostgreSQL 16 stopped qualifying a one-table view's columns with the table's name: why the audit never
    # compares a school with a schema built on another major version.
    where = "WHERE (status = 'active'::text)" if pg_major >= 16 else "WHERE (students.status = 'active'::text)"
    assert where in objects["view public.active_students"]["attrs"]["definition"]
    extensions = {key for key in objects if key.startswith("extension ")}
    assert extensions == {"extension plpgsql", *(f"extension {e}" for e in schema_set.extensions)}
    if "uuid-ossp" in schema_set.extensions:
        assert objects["extension uuid-ossp"]["attrs"] == {"version": "1.1", "schema": "public"}
    assert "schema public" in objects
    # The history table, extension members and constraint-backed indexes are not objects of their own.
    assert not any("_sqlx_migrations" in key for key in objects)
    assert not any(key.startswith("function ") for key in objects)
    assert "index public.students_pkey" not in objects
    # Plain JSON values all the way down.
    assert SchemaSnapshot.from_json(json.dumps(snap(school).to_dict())) == snap(school)


def test_snapshot_is_one_query(school: str) -> None:
    async def count() -> int:
        queries: list[str] = []
        conn = await asyncpg.connect(school)
        try:
            async with conn.transaction(readonly=True):
                with conn.query_logger(lambda q: queries.append(q.query)):
                    await snapshot(conn)
        finally:
            await conn.close()
        return len(queries)

    assert run_sync(count) == 1


def test_json_round_trip_keeps_the_fingerprint(school: str) -> None:
    original = snap(school)
    copy = SchemaSnapshot.from_json(original.to_json())

    assert copy == original
    assert hash(copy) == hash(original)
    assert fingerprint(copy) == fingerprint(original)
    with pytest.raises(ValueError, match="format"):
        SchemaSnapshot.from_dict({"format": 99, "objects": {}})


# --- drift ------------------------------------------------------------------------------------------------------

# (setup run before the "migrations" snapshot, hand-made drift, exact findings)
DRIFTS = {
    "extra index": (
        "",
        "CREATE INDEX idx_students_email ON students (email)",
        ["students: index idx_students_email not in migrations"],
    ),
    "dropped column": (
        "",
        "ALTER TABLE grades DROP COLUMN comment",
        ["grades.comment: column missing (migrations create it)"],
    ),
    "extra column": (
        "",
        "ALTER TABLE students ADD COLUMN seq_no integer GENERATED ALWAYS AS IDENTITY",
        ["students.seq_no: column not in migrations"],
    ),
    "renamed column": (
        "",
        "ALTER TABLE grades RENAME COLUMN comment TO remark",
        ["grades.comment: column missing (migrations create it)", "grades.remark: column not in migrations"],
    ),
    "changed type": (
        "",
        "ALTER TABLE grades ALTER COLUMN score TYPE numeric(6,2)",
        ["grades.score: type numeric(6,2), migrations say numeric(5,2)"],
    ),
    "changed default": (
        "",
        "ALTER TABLE students ALTER COLUMN status SET DEFAULT 'x'",
        ["students.status: default 'x'::text, migrations say 'active'::text"],
    ),
    "dropped default": (
        "",
        "ALTER TABLE students ALTER COLUMN status DROP DEFAULT",
        ["students.status: no default, migrations say 'active'::text"],
    ),
    "dropped not null": (
        "",
        "ALTER TABLE admin_users ALTER COLUMN email DROP NOT NULL",
        ["admin_users.email: nullable, migrations say NOT NULL"],
    ),
    "added not null": (
        "",
        "ALTER TABLE students ALTER COLUMN email SET NOT NULL",
        ["students.email: NOT NULL, migrations say nullable"],
    ),
    "extra table": (
        "",
        "CREATE TABLE library (id serial PRIMARY KEY, isbn text UNIQUE, title text NOT NULL);"
        "CREATE INDEX library_title_idx ON library (title);",
        ["table library not in migrations"],
    ),
    "dropped table": (
        "",
        "DROP TABLE grades",
        ["table grades missing (migrations create it)"],
    ),
    "replaced view": (
        "",
        "CREATE OR REPLACE VIEW active_students AS SELECT * FROM students WHERE status IN ('active', 'inactive')",
        ["view active_students: definition differs from migrations"],
    ),
    "extra materialized view": (
        "",
        "CREATE MATERIALIZED VIEW grade_summary AS SELECT student_id, avg(score) AS mean FROM grades GROUP BY 1;"
        "CREATE UNIQUE INDEX grade_summary_student_id_idx ON grade_summary (student_id);",
        ["materialized view grade_summary not in migrations"],
    ),
    "extra function": (
        "",
        "CREATE FUNCTION f(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'",
        ["function f(integer) not in migrations"],
    ),
    "changed function body": (
        "CREATE FUNCTION f(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'",
        "CREATE OR REPLACE FUNCTION f(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 2'",
        ["function f(integer): body differs from migrations"],
    ),
    "changed function volatility": (
        "CREATE FUNCTION f(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'",
        "ALTER FUNCTION f(integer) IMMUTABLE",
        ["function f(integer): immutable, migrations say volatile"],
    ),
    "changed function settings": (
        "CREATE FUNCTION f(integer) RETURNS integer LANGUAGE sql AS 'SELECT $1 + 1'",
        "ALTER FUNCTION f(integer) SET search_path = public",
        ["function f(integer): definition differs from migrations"],
    ),
    "extra procedure": (
        "",
        "CREATE PROCEDURE archive(cutoff date) LANGUAGE sql AS 'DELETE FROM grades WHERE graded_at < cutoff'",
        ["procedure archive(date) not in migrations"],
    ),
    "extra trigger": (
        "",
        TOUCH,
        ["function touch() not in migrations", "students: trigger students_touch not in migrations"],
    ),
    "disabled trigger": (
        TOUCH,
        "ALTER TABLE students DISABLE TRIGGER students_touch",
        ["students: trigger students_touch disabled, migrations say enabled"],
    ),
    "changed trigger": (
        TOUCH,
        "DROP TRIGGER students_touch ON students;"
        "CREATE TRIGGER students_touch BEFORE INSERT OR UPDATE ON students FOR EACH ROW EXECUTE FUNCTION touch();",
        ["students: trigger students_touch definition differs from migrations"],
    ),
    "extra extension": (
        "",
        "CREATE EXTENSION citext",
        ["extension citext not expected (no migration creates it and nothing configures it)"],
    ),
    "dropped constraint": (
        "",
        "ALTER TABLE grades DROP CONSTRAINT grades_score_check",
        ["grades: constraint grades_score_check missing (migrations create it)"],
    ),
    "extra unique constraint": (
        "",
        "ALTER TABLE students ADD CONSTRAINT students_email_key UNIQUE (email)",
        ["students: constraint students_email_key not in migrations"],
    ),
    "changed check constraint": (
        "",
        "ALTER TABLE grades DROP CONSTRAINT grades_check,"
        " ADD CONSTRAINT grades_check CHECK (score <= max_score) NOT VALID",
        [
            "grades: constraint grades_check defined as CHECK ((score <= max_score)) NOT VALID,"
            " migrations say CHECK ((score <= max_score))"
        ],
    ),
    "changed on delete": (
        "",
        "ALTER TABLE students DROP CONSTRAINT students_class_id_fkey, ADD CONSTRAINT students_class_id_fkey"
        " FOREIGN KEY (class_id) REFERENCES classes (id) ON DELETE CASCADE",
        [
            "students: constraint students_class_id_fkey defined as FOREIGN KEY (class_id) REFERENCES classes(id)"
            " ON DELETE CASCADE, migrations say FOREIGN KEY (class_id) REFERENCES classes(id) ON DELETE SET NULL"
        ],
    ),
    "changed index": (
        "",
        "DROP INDEX students_last_name_first_name_idx;"
        "CREATE INDEX students_last_name_first_name_idx ON students (last_name);",
        [
            "students: index students_last_name_first_name_idx defined as USING btree (last_name),"
            " migrations say USING btree (last_name, first_name)"
        ],
    ),
    "invalid index": (
        "",
        # What a failed CREATE INDEX CONCURRENTLY leaves behind.
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'students_class_id_idx'::regclass",
        ["students: index students_class_id_idx invalid, migrations say valid"],
    ),
    "new schema": (
        "",
        "CREATE SCHEMA reporting;"
        "CREATE TABLE reporting.summary (id serial PRIMARY KEY, students integer NOT NULL);"
        "CREATE VIEW reporting.big AS SELECT * FROM reporting.summary WHERE students > 100;"
        "CREATE FUNCTION reporting.total() RETURNS bigint LANGUAGE sql"
        " AS 'SELECT sum(students) FROM reporting.summary'",
        ["schema reporting not in migrations"],
    ),
    "object in another schema": (
        "CREATE SCHEMA reporting; CREATE TABLE reporting.summary (id integer PRIMARY KEY, total integer);",
        "CREATE TABLE reporting.daily (day date PRIMARY KEY);"
        "ALTER TABLE reporting.summary ALTER COLUMN total TYPE bigint;"
        "CREATE INDEX summary_total_idx ON reporting.summary (total);",
        [
            "reporting.summary.total: type bigint, migrations say integer",
            "reporting.summary: index summary_total_idx not in migrations",
            "table reporting.daily not in migrations",
        ],
    ),
    "extra sequence": (
        "",
        "CREATE SEQUENCE invoice_no START 1000",
        ["sequence invoice_no not in migrations"],
    ),
    "changed sequence": (
        "CREATE SEQUENCE invoice_no START 1000",
        "ALTER SEQUENCE invoice_no INCREMENT 2",
        ["sequence invoice_no: increment 2, migrations say 1"],
    ),
    "enum label added": (
        "CREATE TYPE mood AS ENUM ('sad', 'ok')",
        "ALTER TYPE mood ADD VALUE 'happy'",
        ["type mood: labels (sad, ok, happy), migrations say (sad, ok)"],
    ),
    "row level security": (
        "",
        "ALTER TABLE students ENABLE ROW LEVEL SECURITY;"
        "CREATE POLICY only_active ON students USING (status = 'active');",
        ["students: policy only_active not in migrations", "table students: row level security on, migrations say off"],
    ),
    "quoted names": (
        "",
        'CREATE TABLE "Odd Name" (id int); CREATE INDEX "Idx" ON students (phone);',
        ['students: index "Idx" not in migrations', 'table "Odd Name" not in migrations'],
    ),
}


@pytest.mark.parametrize("case", DRIFTS, ids=list(DRIFTS))
def test_drift_is_reported_in_words(school: str, case: str) -> None:
    setup, drift, messages = DRIFTS[case]
    if setup:
        execute_sync(school, setup)
    expected = snap(school)
    execute_sync(school, drift)
    actual = snap(school)

    assert texts(diff(expected, actual)) == messages
    assert fingerprint(actual) != fingerprint(expected)


def test_the_other_way_round_says_missing(school: str) -> None:
    expected = snap(school)
    execute_sync(school, "CREATE INDEX idx_students_email ON students (email); CREATE TABLE library (id int)")
    execute_sync(school, "ALTER TABLE students ALTER COLUMN status SET DEFAULT 'x'; CREATE EXTENSION citext")
    live = snap(school)

    # Read as if the live database were what the migrations produce.
    assert texts(diff(live, expected)) == [
        "extension citext missing (migrations create it)",
        "students.status: default 'active'::text, migrations say 'x'::text",
        "students: index idx_students_email missing (migrations create it)",
        "table library missing (migrations create it)",
    ]


def test_several_drifts_are_sorted_stably(school: str) -> None:
    expected = snap(school)
    execute_sync(
        school,
        "CREATE INDEX idx_students_email ON students (email);"
        "ALTER TABLE grades ALTER COLUMN score TYPE numeric(6,2);"
        "ALTER TABLE grades DROP COLUMN comment;"
        "CREATE TABLE library (id int);",
    )
    actual = snap(school)

    found = texts(diff(expected, actual))
    assert found == [
        "grades.comment: column missing (migrations create it)",
        "grades.score: type numeric(6,2), migrations say numeric(5,2)",
        "students: index idx_students_email not in migrations",
        "table library not in migrations",
    ]
    assert texts(diff(expected, SchemaSnapshot.from_json(actual.to_json()))) == found


# --- diff on hand-made snapshots (what a live server cannot easily produce) --------------------------------------


def _ext(version: str) -> SchemaSnapshot:
    obj = {"kind": "extension", "name": "uuid-ossp", "attrs": {"version": version, "schema": "public"}}
    return SchemaSnapshot(objects={"extension uuid-ossp": obj})


def test_extension_version() -> None:
    assert texts(diff(_ext("1.1"), _ext("1.0"))) == ["extension uuid-ossp: version 1.0, migrations say 1.1"]
    assert diff(_ext("1.1"), _ext("1.1")) == []
