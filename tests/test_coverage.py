"""What the schema comparison cannot see (audit/coverage.py), read from the masked text: `resolve --restamp`
refuses a file holding any of it. Pure: no database (test_resolve.py runs the refusals on real servers)."""

from __future__ import annotations

import pytest

from orchestrator.audit.coverage import CODE, COMMENTS, NOT_COMPARED, PRIVILEGES, ROWS, unseen

UNSEEN = [
    ("INSERT INTO grades VALUES (1, 'A')", "INSERT", ROWS),
    ("update grades set label = 'B'", "UPDATE", ROWS),
    ("DELETE FROM grades", "DELETE", ROWS),
    ("MERGE INTO a USING b ON a.id = b.id WHEN MATCHED THEN DELETE", "MERGE", ROWS),
    ("COPY grades FROM stdin", "COPY", ROWS),
    ("TRUNCATE grades", "TRUNCATE", ROWS),
    ("REFRESH MATERIALIZED VIEW totals", "REFRESH", ROWS),
    ("CREATE TABLE archive AS SELECT * FROM grades", "CREATE TABLE ... AS", ROWS),
    ("CREATE MATERIALIZED VIEW totals AS SELECT count(*) FROM grades", "CREATE MATERIALIZED VIEW", ROWS),
    ("ALTER TABLE grades ALTER COLUMN label TYPE int USING length(label)", "ALTER TABLE ... TYPE ... USING", ROWS),
    ("SELECT setval('grades_id_seq', 100)", "SELECT", CODE),
    ("SELECT nextval('grades_id_seq')", "SELECT", CODE),
    ("WITH gone AS (DELETE FROM grades RETURNING id) SELECT count(*) FROM gone", "a query", CODE),
    ("CALL recompute()", "CALL", CODE),
    ("DO $$ BEGIN UPDATE grades SET label = 'x'; END $$", "DO", CODE),
    ("GRANT SELECT ON grades TO reporting", "GRANT", PRIVILEGES),
    ("REVOKE ALL ON grades FROM public", "REVOKE", PRIVILEGES),
    ("ALTER TABLE grades OWNER TO app", "ALTER TABLE ... OWNER TO", PRIVILEGES),
    ("ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO reporting", "ALTER DEFAULT PRIVILEGES", PRIVILEGES),
    ("SET ROLE app", "SET ROLE", "changes who owns what follows; " + PRIVILEGES),
    ("COMMENT ON TABLE grades IS 'the scale'", "COMMENT ON", COMMENTS),
    ("ALTER TABLE grades ALTER COLUMN label SET STATISTICS 500", "ALTER TABLE ... SET STATISTICS", NOT_COMPARED),
    ("ALTER SEQUENCE grades_id_seq RESTART WITH 10", "ALTER SEQUENCE ... RESTART", None),
    ("CREATE TABLE fast (id int) TABLESPACE ssd", "CREATE TABLE ... TABLESPACE", NOT_COMPARED),
    ("CREATE RULE r AS ON INSERT TO grades DO INSTEAD NOTHING", "CREATE RULE", NOT_COMPARED),
    ("CREATE AGGREGATE total (int) (sfunc = int4pl, stype = int)", "CREATE AGGREGATE", NOT_COMPARED),
    ("CREATE TYPE shell", "CREATE TYPE", None),
]


@pytest.mark.parametrize(("sql", "what", "why"), UNSEEN, ids=[u[1] + ":" + u[0][:24] for u in UNSEEN])
def test_what_the_comparison_cannot_see_is_named_with_its_line(sql: str, what: str, why: str | None) -> None:
    [found] = unseen(f"-- a comment first\n\n{sql};\n")
    assert (found.line, found.what) == (3, what)
    if why is not None:
        assert found.why == why


SEEN = [
    "CREATE TABLE grades (id int PRIMARY KEY, label text GENERATED ALWAYS AS (upper(id::text)) STORED)",
    "CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS grades_label ON grades USING btree (label)",
    "ALTER TABLE grades ADD COLUMN owner text, ADD COLUMN storage int, ALTER COLUMN label TYPE varchar(10)",
    "ALTER TABLE grades ADD CONSTRAINT no_overlap EXCLUDE USING gist (id WITH =)",
    "CREATE OR REPLACE FUNCTION grade_of(n int) RETURNS text LANGUAGE sql AS $$ INSERT INTO log VALUES (1) $$",
    "CREATE PROCEDURE recompute() LANGUAGE plpgsql AS 'BEGIN DELETE FROM totals; END'",
    "CREATE TRIGGER audit BEFORE INSERT OR UPDATE ON grades FOR EACH ROW EXECUTE FUNCTION log_it()",
    "CREATE POLICY own ON grades FOR UPDATE USING (true)",
    "CREATE VIEW passed AS SELECT * FROM grades WHERE label <> 'F'",
    "CREATE TYPE mood AS ENUM ('happy', 'sad')",
    'CREATE EXTENSION IF NOT EXISTS "uuid-ossp"',
    "ALTER SEQUENCE grades_id_seq INCREMENT BY 2",
    "DROP TABLE IF EXISTS archive",
    "SET search_path TO public",
]


@pytest.mark.parametrize("sql", SEEN)
def test_schema_statements_are_seen_whatever_their_bodies_literals_and_comments_say(sql: str) -> None:
    assert unseen(f"/* INSERT INTO x VALUES (1); */\n{sql}; -- DELETE FROM x\n") == ()


def test_an_unknown_statement_is_not_vouched_for() -> None:
    [found] = unseen("VACUUM grades;\nSECURITY LABEL ON TABLE grades IS 'x';\n")
    assert (found.line, found.what, found.why) == (2, "SECURITY", NOT_COMPARED)
