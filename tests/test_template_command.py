"""`orchestrator template`: each server's template built or refreshed and `--spares` ready copies of it kept, which
onboarding then takes by a rename; stale copies (of an older template) are replaced; bad input is exit 2 before any
connection; the outputs (one line per server, --json, --junit) never hold a password."""

from __future__ import annotations

import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio
import pytest
import structlog
from fleetkit import ROOT, make_migrations, registry_url, write_registry
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from pgfixtures import (
    PG_PASSWORD,
    drop_template,
    execute_sync,
    fetch_sync,
    ledger,
    quote_ident,
    run_sync,
    spares_of,
    unique_db_name,
)
from typer.testing import CliRunner, Result

import orchestrator
from orchestrator import tracing
from orchestrator.cli import app
from orchestrator.command import Command
from orchestrator.devserver import DevServer
from orchestrator.errors import InvalidInput
from orchestrator.settings import SchoolSettings
from orchestrator.source import load_migrations
from orchestrator.template_fleet import TemplateReport

NEW_VERSION = 20250301000000


@pytest.fixture(autouse=True)
def _reset_logging() -> Iterator[None]:
    yield
    structlog.reset_defaults()  # the CLI pointed structlog at the runner's stream, closed once the call ends


# The schema calls uuid_generate_v4(): the extension is asked for (none is the default).
UUID_OSSP = ("--extension", "uuid-ossp")


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    """A private copy of the school schema (without released.sum), so a test can add a file."""
    return Path(shutil.copytree(ROOT / "migrations", tmp_path / "migrations", ignore=shutil.ignore_patterns("*.sum")))


@pytest.fixture
def template(pg: DevServer) -> Iterator[str]:
    """A template name of this test's own; the template and its spares are dropped afterwards."""
    name = unique_db_name("tplcmd")
    yield name
    drop_template(pg.url(), name)


def invoke(*args: str) -> Result:
    result = CliRunner().invoke(app, list(args), env={"DATABASE_URL": None, "PGPW": PG_PASSWORD})
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert PG_PASSWORD not in result.stdout and PG_PASSWORD not in result.stderr
    return result


def keep(pg: DevServer, migrations: Path, template: str, n: int, *more: str) -> Result:
    database = pg.url(unique_db_name("unused"))  # only its server counts: nothing connects to it
    return invoke("template", "-D", database, "--template", template, "--spares", str(n),
                  "--migrations", str(migrations), *UUID_OSSP, *more)  # fmt: skip


def provision(pg: DevServer, migrations: Path, template: str) -> tuple[str, dict[str, Any]]:
    """A new school onboarded from `template`: its URL and its entry in provision's JSON report."""
    url = pg.url(unique_db_name("school"))
    result = invoke("provision", "-D", url, "--template", template, "--migrations", str(migrations), "--json",
                    *UUID_OSSP)  # fmt: skip
    assert result.exit_code == 0, result.output
    [school] = json.loads(result.stdout)["schools"]
    return url, school


def files_ledger(migrations: Path) -> list[tuple[int, str, bool, bytes]]:
    """The _sqlx_migrations rows SQLx would write for these files."""
    return [(m.version, m.description, True, m.checksum) for m in load_migrations(migrations)]


def test_spares_are_made_taken_by_onboarding_topped_up_and_dropped(
    pg: DevServer, migrations: Path, template: str
) -> None:
    latest = load_migrations(migrations).latest
    server = f"127.0.0.1:{pg.port}"

    built = keep(pg, migrations, template, 3)
    assert built.exit_code == 0, built.output
    assert f"{server}: {template} at {latest}, built; 3 spare(s) ready (3 made, 0 dropped)" in built.stdout
    assert len(spares_of(pg.url(), template)) == 3

    url, school = provision(pg, migrations, template)
    assert any("from a ready copy" in note for note in school["notes"]), school["notes"]
    assert school["version_after"] == latest
    assert ledger(url) == files_ledger(migrations)
    assert len(spares_of(pg.url(), template)) == 2

    topped_up = keep(pg, migrations, template, 3)
    assert topped_up.exit_code == 0, topped_up.output
    assert f"{template} at {latest}, current; 3 spare(s) ready (1 made, 0 dropped)" in topped_up.stdout

    none = keep(pg, migrations, template, 0)
    assert none.exit_code == 0, none.output
    assert "0 spare(s) ready (0 made, 3 dropped)" in none.stdout
    assert spares_of(pg.url(), template) == []


def test_the_python_api_keeps_spares_ready_as_the_command_does(pg: DevServer, migrations: Path, template: str) -> None:
    # As the admin service's hook may top up the spares after an onboarding, off its request path.
    request = orchestrator.Request(
        Command.TEMPLATE,
        database_url=pg.url(unique_db_name("unused")),
        migrations=migrations,
        school=SchoolSettings(template=template, extensions=("uuid-ossp",)),
        spares=2,
    )

    report = orchestrator.run(request)

    assert isinstance(report, TemplateReport) and report.ok
    [kept] = report.servers
    assert (kept.template, kept.spares, kept.made) == (template, 2, 2)
    assert len(spares_of(pg.url(), template)) == 2
    with pytest.raises(InvalidInput, match="must not be negative"):
        orchestrator.run(replace(request, spares=-1))


def test_a_new_migration_refreshes_the_template_and_replaces_its_stale_spares(
    pg: DevServer, migrations: Path, template: str
) -> None:
    assert keep(pg, migrations, template, 2).exit_code == 0
    stale = spares_of(pg.url(), template)
    (migrations / f"{NEW_VERSION}_add_notes.up.sql").write_text("CREATE TABLE notes (id int);\n")
    (migrations / f"{NEW_VERSION}_add_notes.down.sql").write_text("DROP TABLE notes;\n")

    refreshed = keep(pg, migrations, template, 2, "--json")

    assert refreshed.exit_code == 0, refreshed.output
    [line] = json.loads(refreshed.stdout)["servers"]
    assert (line["version"], line["spares"], line["made"], line["dropped"]) == (NEW_VERSION, 2, 2, len(stale))
    assert line["notes"][0].startswith(f"refreshed template {template}")
    assert "refreshed; 2 spare(s) ready" in refreshed.stderr  # with --json the human lines go to stderr
    assert not set(stale) & set(spares_of(pg.url(), template))
    url, school = provision(pg, migrations, template)
    assert any("from a ready copy" in note for note in school["notes"]), school["notes"]
    assert school["version_after"] == NEW_VERSION and ledger(url) == files_ledger(migrations)


def test_without_a_template_or_with_negative_spares_it_is_exit_2_before_any_connection(migrations: Path) -> None:
    nowhere = "postgres://u:secret@127.0.0.1:1/x"  # nothing listens: a connection would fail otherwise (exit 1)

    no_template = invoke("template", "-D", nowhere, "--migrations", str(migrations))
    negative = invoke("template", "-D", nowhere, "--template", "t", "--spares", "-1", "--migrations", str(migrations))

    assert no_template.exit_code == 2, no_template.output
    assert "no template to keep ready" in no_template.stderr and "--template NAME" in no_template.stderr
    assert negative.exit_code == 2, negative.output
    assert "--spares -1" in negative.stderr
    for result in (no_template, negative):
        assert "secret" not in result.output


def test_a_server_it_cannot_reach_is_a_red_line_and_exit_1_without_its_password(
    migrations: Path, unreachable_url: str
) -> None:
    result = invoke("template", "-D", unreachable_url, "--template", "tpl", "--migrations", str(migrations), "--json")

    assert result.exit_code == 1, result.output
    [line] = json.loads(result.stdout)["servers"]
    assert line["error"] and line["spares"] == 0
    assert ": tpl: not ready: " in result.stderr  # (invoke checks that no output holds the password)


def test_the_run_span_counts_servers_and_says_how_many_are_not_ready(migrations: Path, unreachable_url: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        result = invoke("template", "-D", unreachable_url, "--template", "tpl", "--migrations", str(migrations))
    finally:
        tracing.use(None)

    assert result.exit_code == 1, result.output
    [span] = [s for s in exporter.get_finished_spans() if s.name == "orchestrator template"]
    assert span.attributes is not None
    assert (span.attributes["orchestrator.servers.ok"], span.attributes["orchestrator.servers.not_ok"]) == (0, 1)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "1 server(s) without a ready template"
    assert PG_PASSWORD not in json.dumps(dict(span.attributes))


def test_a_registry_template_over_two_schools_of_one_server_is_one_line_and_one_case(
    tmp_path: Path, pg: DevServer, migrations: Path, template: str
) -> None:
    registry = write_registry(
        tmp_path / "tenants.yaml",
        [("a", registry_url(pg, unique_db_name("a")), []), ("b", registry_url(pg, unique_db_name("b")), [])],
        defaults=f"defaults:\n  template: {template}\n  extensions: [uuid-ossp]",
    )
    junit = tmp_path / "template.xml"

    result = invoke("template", "--yes", "--registry", str(registry), "--migrations", str(migrations), "--spares", "1",
                    "--json", "--junit", str(junit))  # fmt: skip

    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert (data["command"], data["spares"], data["ok"]) == ("template", 1, True)
    assert [(s["server"], s["template"], s["spares"]) for s in data["servers"]] == [
        (f"127.0.0.1:{pg.port}", template, 1)
    ]
    assert result.stderr.count(f": {template} at ") == 1
    assert "template: " + template + " on 1 server(s), keeping 1 spare(s) each" in result.stderr
    [case] = ET.parse(junit).getroot().iter("testcase")
    assert case.get("name") == f"127.0.0.1:{pg.port} {template}" and case.find("failure") is None


@pytest.mark.parametrize("per_server", [1, 2])
def test_per_server_bounds_the_builds_on_one_server(
    pg: DevServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, per_server: int
) -> None:
    # Two templates on one server (each school its own): --per-server bounds how many are built at once there, as
    # it bounds the sessions of every other command. The real keep_ready runs; the wrapper only counts.
    import orchestrator.template as template_module
    from orchestrator.job import Request, prepare
    from orchestrator.template_fleet import keep_templates

    names = [unique_db_name("tplps") for _ in range(2)]
    entries = [f"  - id: s{i}\n    url: {registry_url(pg, f'x{i}')}\n    template: {n}\n" for i, n in enumerate(names)]
    (tmp_path / "t.yaml").write_text("tenants:\n" + "".join(entries))
    running, most, real = [0], [0], template_module.keep_ready

    async def counted(*args: Any) -> Any:
        running[0] += 1
        most[0] = max(most[0], running[0])
        try:
            await anyio.sleep(0.5)  # both would be inside at once without the bound
            return await real(*args)
        finally:
            running[0] -= 1

    monkeypatch.setattr(template_module, "keep_ready", counted)
    monkeypatch.setenv("PGPW", PG_PASSWORD)
    request = Request(Command.TEMPLATE, registry=tmp_path / "t.yaml", migrations=make_migrations(tmp_path / "m"),
                      school=SchoolSettings(per_server=per_server), spares=0)  # fmt: skip
    try:
        report = run_sync(keep_templates(prepare(request)))
        assert report.ok, report.to_dict()
        assert most[0] == per_server
    finally:
        for name in names:
            if fetch_sync(pg.url(), "SELECT 1 FROM pg_database WHERE datname = $1", name):
                execute_sync(pg.url(), f"ALTER DATABASE {quote_ident(name)} IS_TEMPLATE false")
                execute_sync(pg.url(), f"DROP DATABASE {quote_ident(name)} WITH (FORCE)")
