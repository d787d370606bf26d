"""The settings model: one resolver, flag > tenant > registry defaults > built-in, for every per-school setting;
the command line, the registry and the Python API all feed it."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from fleetkit import make_migrations, make_school, registry_url, run_fleet_job, write_registry
from pgfixtures import fetchval_sync

import orchestrator
from orchestrator.devserver import DevServer
from orchestrator.errors import UsageError
from orchestrator.job import Command, Request, prepare
from orchestrator.registry import load_registry
from orchestrator.settings import (
    BUILTIN,
    EMPTY,
    SETTING_NAMES,
    Gate,
    SchoolSettings,
    format_duration,
    parse_duration,
    resolve,
)

# Four distinct values per setting, one per layer: flag, tenant, registry defaults (the built-in is BUILTIN's).
LAYER_VALUES: dict[str, tuple[Any, Any, Any]] = {
    "extensions": (("flag_ext",), ("tenant_ext",), ("defaults_ext",)),
    "connect_timeout": (1.0, 2.0, 3.0),
    "lock_timeout": (11.0, 12.0, 13.0),
    "statement_timeout": (21.0, 22.0, 23.0),
    "lock_wait": (31.0, 32.0, 33.0),
    "per_server": (41, 42, 43),
    "template": ("flag_template", "tenant_template", "defaults_template"),
}


def test_every_setting_has_a_precedence_case() -> None:
    assert set(LAYER_VALUES) == set(SETTING_NAMES) == {f.name for f in fields(SchoolSettings)}


@pytest.mark.parametrize("name", SETTING_NAMES)
def test_precedence_is_flag_then_tenant_then_registry_defaults_then_built_in(name: str) -> None:
    flag, tenant, defaults = (SchoolSettings(**{name: v}) for v in LAYER_VALUES[name])
    assert getattr(resolve(flag, tenant, defaults), name) == LAYER_VALUES[name][0]
    assert getattr(resolve(EMPTY, tenant, defaults), name) == LAYER_VALUES[name][1]
    assert getattr(resolve(EMPTY, EMPTY, defaults), name) == LAYER_VALUES[name][2]
    assert getattr(resolve(EMPTY, EMPTY, EMPTY), name) == getattr(BUILTIN, name)


def test_an_empty_extension_list_is_a_value_not_unset() -> None:
    assert resolve(EMPTY, EMPTY, SchoolSettings(extensions=())).extensions == ()
    assert resolve(EMPTY, SchoolSettings(extensions=()), SchoolSettings(extensions=("x",))).extensions == ()


def test_an_empty_template_name_is_a_value_that_turns_the_registry_default_off() -> None:
    defaults = SchoolSettings(template="school_template")
    assert resolve(EMPTY, EMPTY, defaults).template_name == "school_template"
    assert resolve(EMPTY, SchoolSettings(template=""), defaults).template_name is None
    assert resolve(SchoolSettings(template=""), EMPTY, defaults).template_name is None
    assert BUILTIN.template_name is None


def registry_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


REGISTRY = """\
defaults:
  extensions: []
  per_server: 3
  lock_timeout: 7s
tenants:
  - id: a
    url: postgresql://app@db1:5432/a
    lock_timeout: 9s
    per_server: 2
  - id: b
    url: postgresql://app@db1:5432/b
  - id: c
    url: postgresql://app@db2:5432/c
"""


def job_for(tmp_path: Path, **request: Any) -> Any:
    migrations = tmp_path / "migrations"
    migrations.mkdir(exist_ok=True)
    (migrations / "1_init.sql").write_text("CREATE TABLE t (id int);\n")
    registry = registry_file(tmp_path, REGISTRY)
    return prepare(Request(Command.STATUS, migrations=migrations, registry=registry, **request))


def test_the_registry_layers_reach_each_school_and_flags_override_them(tmp_path: Path) -> None:
    job = job_for(tmp_path)
    a, b, _ = job.tenants
    assert job.engine_options(a).session.lock_timeout == 9.0, "the tenant's own entry"
    assert job.engine_options(b).session.lock_timeout == 7.0, "the registry's defaults"
    assert job.engine_options(b).extensions == (), "an empty list in defaults: no extension"
    assert job.engine_options(b).session.statement_timeout == BUILTIN.statement_timeout
    flagged = job_for(tmp_path, school=SchoolSettings(lock_timeout=1.0, extensions=("pgcrypto",)))
    assert {flagged.engine_options(t).session.lock_timeout for t in flagged.tenants} == {1.0}
    assert {flagged.engine_options(t).extensions for t in flagged.tenants} == {("pgcrypto",)}


def test_a_servers_budget_is_the_smallest_per_server_of_its_schools_and_a_flag_sets_all(tmp_path: Path) -> None:
    assert dict(job_for(tmp_path).per_server) == {"db1:5432": 2, "db2:5432": 3}
    flagged = job_for(tmp_path, school=SchoolSettings(per_server=5))
    assert dict(flagged.per_server) == {"db1:5432": 5, "db2:5432": 5}


def test_a_tenant_keeps_its_own_entry_only(tmp_path: Path) -> None:
    registry = load_registry(registry_file(tmp_path, REGISTRY))
    a, b, _ = registry.tenants
    assert a.settings == SchoolSettings(lock_timeout=9.0, per_server=2)
    assert b.settings == EMPTY
    assert registry.defaults == SchoolSettings(extensions=(), per_server=3, lock_timeout=7.0)


@pytest.mark.parametrize(
    ("text", "seconds"), [("500ms", 0.5), ("5s", 5.0), ("10m", 600.0), ("1h", 3600.0), ("30", 30.0), ("2.5", 2.5)]
)
def test_durations_parse(text: str, seconds: float) -> None:
    assert parse_duration(text, "--lock-timeout") == seconds


@pytest.mark.parametrize("text", ["soon", "-5s", "5 s s", "", "5d"])
def test_a_bad_duration_names_the_option(text: str) -> None:
    with pytest.raises(UsageError, match="--lock-timeout"):
        parse_duration(text, "--lock-timeout")


@pytest.mark.parametrize("seconds", [0.5, 5.0, 30.0, 600.0, 3600.0, 90.0, 0.0])
def test_durations_are_shown_in_a_form_that_parses_back(seconds: float) -> None:
    assert parse_duration(format_duration(seconds), "x") == seconds


def test_an_empty_extension_list_in_the_registry_bootstraps_without_uuid_ossp(tmp_path: Path, pg: DevServer) -> None:
    """A server whose packaging lacks uuid-ossp (seen on PostgreSQL 18) can still be bootstrapped and migrated."""
    migrations = make_migrations(tmp_path / "migrations")
    school = make_school(pg, "no_ext")
    registry = write_registry(
        tmp_path / "tenants.yaml", [("s0", registry_url(pg, school), [])], defaults="defaults:\n  extensions: []\n"
    )
    for command in (Command.BOOTSTRAP, Command.MIGRATE):
        report = run_fleet_job(command, registry, migrations)
        assert report.ok, report.outcomes[0].result.error
    assert fetchval_sync(pg.url(school), "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'") == 0
    assert fetchval_sync(pg.url(school), "SELECT count(*) FROM _sqlx_migrations") == 3


def test_the_python_api_feeds_the_same_model(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    url = pg.url(make_school(pg, "api"))
    result = orchestrator.provision(url, migrations=migrations, extensions=(), lock_timeout=2.0)
    assert result.ok and result.applied_versions == [1, 2, 3]
    assert fetchval_sync(url, "SELECT count(*) FROM pg_extension WHERE extname = 'uuid-ossp'") == 0
    report = orchestrator.run(orchestrator.Request(Command.STATUS, migrations=migrations, database_url=url))
    assert report.ok and report.outcomes[0].result.status is orchestrator.Status.UP_TO_DATE
    with pytest.raises(TypeError):
        orchestrator.provision(url, migrations=migrations, lock_timout=2.0)  # a misspelt setting is refused


def test_the_library_logs_nowhere_unless_its_host_configures_logging(tmp_path: Path, pg: DevServer) -> None:
    migrations = make_migrations(tmp_path / "migrations")
    url = pg.url(make_school(pg, "quiet_api"))
    hook = (
        "import sys, orchestrator\n"
        f"r = orchestrator.provision({url!r}, migrations={str(migrations)!r})\n"
        "sys.exit(0 if r.ok else 1)\n"
    )
    result = subprocess.run([sys.executable, "-c", hook], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == ("", ""), "nothing on the host's stdout or stderr"


def test_one_reference_url_given_as_a_string_through_the_api_is_one_url() -> None:
    assert Gate(reference_url="postgresql://u@h/db").reference_url == ("postgresql://u@h/db",)  # type: ignore[arg-type]
    assert Gate(reference_url=("postgresql://a@h/db", "postgresql://b@h/db")).reference_url == (
        "postgresql://a@h/db",
        "postgresql://b@h/db",
    )
