"""Adversary: a spare is trusted on its name, owner, closed connections and comment alone.

The marker a spare carries is the template's, which anyone may read (shobj_description). A database of the tool's
role that holds something else (a forged spare, or a spare changed after it was made: its owner may open it, change
it and close it again) is renamed to the new school and reported `applied`, though it holds no ledger and another
schema: the engine never reads what the school's database holds after the rename.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fleetkit import ROOT, cli, make_migrations
from pgfixtures import execute_sync, fetch_sync, ledger, quote_ident, spares_of, unique_db_name

from orchestrator.devserver import DevServer
from orchestrator.errors import UsageError
from orchestrator.scratch import literal
from orchestrator.source import load_migrations
from orchestrator.template import REJECTED_NAME_PREFIX, SPARE_NAME_PREFIX


def test_adversary_a_spare_that_holds_other_things_is_not_handed_to_a_school(tmp_path: Path, pg: DevServer) -> None:
    migrations = Path(shutil.copytree(ROOT / "migrations", tmp_path / "m", ignore=shutil.ignore_patterns("*.sum")))
    template = unique_db_name("advspare")
    school = unique_db_name("advspare_school")
    common = ("--template", template, "--migrations", str(migrations), "--extension", "uuid-ossp")
    try:
        kept = cli("template", "--yes", "-D", pg.url(unique_db_name("unused")), "--spares", "1", *common)
        assert kept.returncode == 0, kept.stdout + kept.stderr
        [spare] = spares_of(pg.url(), template)
        # Its owner opens it, changes it, and closes it again.
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} ALLOW_CONNECTIONS true")
        execute_sync(pg.url(spare), "DROP TABLE _sqlx_migrations; CREATE TABLE not_the_schema (x int)")
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(spare)} ALLOW_CONNECTIONS false")

        result = cli("provision", "-D", pg.url(school), *common, "--json")

        expected = [(m.version, m.description, True, m.checksum) for m in load_migrations(migrations)]
        tables = fetch_sync(pg.url(school), "SELECT tablename FROM pg_tables WHERE tablename = 'not_the_schema'")
        [report] = json.loads(result.stdout)["schools"]
        assert not tables or report["status"] != "applied", "a school handed another schema, reported applied"
        # Copied from the template instead; the changed spare set aside (not dropped: what it holds may be someone's).
        assert report["status"] == "applied" and ledger(pg.url(school)) == expected and not tables
        [aside] = rejected(pg)
        assert f"ready copy {spare} of template {template} not used: it has no _sqlx_migrations table" in " ".join(
            report["notes"]
        ) and aside in " ".join(report["notes"])
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(aside)} ALLOW_CONNECTIONS true")
        assert fetch_sync(pg.url(aside), "SELECT 1 FROM pg_tables WHERE tablename = 'not_the_schema'")
    finally:
        drop_all(pg, [school, *spares_of(pg.url(), template), *rejected(pg), template])


def test_adversary_a_forged_spare_is_not_handed_to_a_school(tmp_path: Path, pg: DevServer) -> None:
    """A real spare's comment (anyone may read it) copied onto another database of the tool's role, named and closed
    as a spare: the onboarding reads what it holds before it is the school's."""
    import orchestrator

    migrations = make_migrations(tmp_path / "m", {"1_one.sql": "CREATE TABLE one (id int);\n"})
    template = unique_db_name("advforged")
    school = unique_db_name("advforged_school")
    forged = SPARE_NAME_PREFIX + "0" * 16
    try:
        kept = cli("template", "--yes", "-D", pg.url(unique_db_name("unused")), "--spares", "1", "--template",
                   template, "--migrations", str(migrations))  # fmt: skip
        assert kept.returncode == 0, kept.stdout + kept.stderr
        [spare] = spares_of(pg.url(), template)
        comment = fetch_sync(pg.url(), "SELECT shobj_description(oid, 'pg_database') FROM pg_database "
                             "WHERE datname = $1", spare)[0][0]  # fmt: skip
        execute_sync(pg.url(), f"DROP DATABASE {quote_ident(spare)}")
        execute_sync(pg.url(), f"CREATE DATABASE {quote_ident(forged)}")
        execute_sync(pg.url(forged), "CREATE TABLE one (id int, secret text)")
        execute_sync(pg.url(), f"COMMENT ON DATABASE {quote_ident(forged)} IS {literal(comment)}")
        execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(forged)} ALLOW_CONNECTIONS false")
        assert spares_of(pg.url(), template) == [forged]

        result = orchestrator.provision(pg.url(school), migrations=migrations, template=template)

        assert result.ok, result.error
        [one] = load_migrations(migrations)
        assert ledger(pg.url(school)) == [(1, "one", True, one.checksum)]
        assert not fetch_sync(pg.url(school), "SELECT 1 FROM pg_attribute WHERE attname = 'secret'")
        assert "not used: it has no _sqlx_migrations table" in result.notes[0], result.notes
        assert len(rejected(pg)) == 1 and spares_of(pg.url(), template) == []
    finally:
        drop_all(pg, [school, forged, *spares_of(pg.url(), template), *rejected(pg), template])


def rejected(pg: DevServer) -> list[str]:
    rows = fetch_sync(pg.url(), "SELECT datname FROM pg_database WHERE starts_with(datname, $1)", REJECTED_NAME_PREFIX)
    return [r[0] for r in rows]


def drop_all(pg: DevServer, databases: list[str]) -> None:
    for database in databases:
        if fetch_sync(pg.url(), "SELECT 1 FROM pg_database WHERE datname = $1", database):
            execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(database)} IS_TEMPLATE false")
            execute_sync(pg.url(), f"DROP DATABASE {quote_ident(database)} WITH (FORCE)")


def test_adversary_no_other_bytes_than_the_templates_when_the_template_cannot_be_used(
    tmp_path: Path, pg: DevServer
) -> None:
    """README, "Never other bytes than the template's": an edited applied file is not a way out. But when the
    template cannot be used (here: built with other extensions; also busy, or another role's), the school is
    created from the files, edited bytes included: it holds other bytes than the template and its copies."""
    import orchestrator

    migrations = make_migrations(tmp_path / "m", {"1_one.sql": "CREATE TABLE one (id int);\n"})
    template = unique_db_name("advbytes")
    first, second = unique_db_name("advbytes_a"), unique_db_name("advbytes_b")
    try:
        made = orchestrator.provision(pg.url(first), migrations=migrations, template=template, extensions=())
        assert made.ok, made.error
        (migrations / "1_one.sql").write_text("CREATE TABLE one (id int);\r\n")  # edited since

        # Refused as when the template is usable: exit 2 / UsageError, in the plan pass's words, nothing created.
        with pytest.raises(UsageError, match=f"version 1: the file differs from what template {template} on"):
            orchestrator.provision(pg.url(second), migrations=migrations, template=template, extensions=("plpgsql",))

        created = fetch_sync(pg.url(), "SELECT 1 FROM pg_database WHERE datname = $1", second)
        assert not created, f"{second} created from other bytes for version 1 than {first} and template {template}"
    finally:
        for database in [first, second, template]:
            if fetch_sync(pg.url(), "SELECT 1 FROM pg_database WHERE datname = $1", database):
                execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(database)} IS_TEMPLATE false")
                execute_sync(pg.url(), f"DROP DATABASE {quote_ident(database)} WITH (FORCE)")
