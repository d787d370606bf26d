"""The registry (tenants.yaml): validated completely before any connection, with file:line in every error."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import RegistryError, UsageError
from orchestrator.registry import load_registry, select, shard_of
from orchestrator.settings import EMPTY, Selection, parse_shard, resolve

GOOD = """\
defaults:
  extensions: [uuid-ossp, pgcrypto]
  per_server: 3
  lock_timeout: 2s
tenants:
  - id: school-alpha
    url: postgresql://app:${ALPHA_PW}@db1.internal:5432/school_alpha
    tags: [canary, north]
  - id: school-bravo
    url: postgresql://app:${BRAVO_PW:-fallback}@db2.internal/school_bravo
    statement_timeout: 30m
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "tenants.yaml"
    path.write_text(text)
    return path


def test_a_valid_registry_expands_variables_and_applies_defaults(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD), env={"ALPHA_PW": "s3cret"})
    alpha, bravo = registry.tenants
    assert alpha.target.password == "s3cret"
    assert bravo.target.password == "fallback"
    assert alpha.tags == ("canary", "north")
    alpha_settings = resolve(EMPTY, alpha.settings, registry.defaults)
    bravo_settings = resolve(EMPTY, bravo.settings, registry.defaults)
    assert alpha_settings.extensions == ("uuid-ossp", "pgcrypto")
    assert alpha_settings.lock_timeout == 2.0
    assert alpha_settings.per_server == 3
    assert bravo_settings.statement_timeout == 1800.0
    assert bravo_settings.lock_timeout == 2.0
    assert bravo.settings.lock_timeout is None, "a tenant keeps only its own entry; resolve() layers the defaults"
    assert bravo.server == "db2.internal:5432"


def test_the_example_registry_in_the_repository_is_valid() -> None:
    registry = load_registry(Path(__file__).parent.parent / "tenants.yaml", env={"SCHOOL_DB_PASSWORD": "x"})
    assert len(registry) >= 3
    assert any("canary" in t.tags for t in registry.tenants)


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("tenants:\n  - id: a\n    url: postgresql://h/a\n    colour: red\n", 4, "unknown key 'colour'"),
        ("tenants:\n  - id: a\n    url: postgresql://h/a\n  - id: a\n    url: postgresql://h/b\n", 4, "already used"),
        (
            "tenants:\n  - id: a\n    url: postgresql://h/x\n  - id: b\n    url: postgresql://h:5432/x\n",
            4,
            "same database",
        ),
        ("tenants:\n  - id: a\n    url: mysql://h/a\n", 3, "must start with postgresql://"),
        ("tenants:\n  - id: a\n    url: postgresql://h:99999/a\n", 3, "malformed database URL"),
        ("tenants:\n  - id: a\n    url: postgresql://h/\n", 3, "names no database"),
        ("tenants:\n  - id: a\n    url: postgresql://u:${NOPE}@h/a\n", 3, "NOPE is not set"),
        ("tenants:\n  - id: Not A Slug\n    url: postgresql://h/a\n", 2, "not a slug"),
        ("tenants:\n  - id: a\n", 2, "has no 'url'"),
        ("defaults:\n  lock_timeout: soon\ntenants: []\n", 2, "not a duration"),
        ("tenants:\n  - id: a\n    url: [postgresql://h/a\n", 4, "not valid YAML"),
        ("schools: []\n", 1, "unknown key 'schools'"),
    ],
)
def test_bad_registries_are_refused_with_file_and_line(tmp_path: Path, text: str, line: int, fragment: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})
    message = str(caught.value)
    assert f"{path}:{line}" in message
    assert fragment in message


def test_registry_errors_never_show_a_password(tmp_path: Path) -> None:
    text = (
        "tenants:\n  - id: a\n    url: postgresql://u:hunter2@h/x\n"
        "  - id: b\n    url: postgresql://u:hunter2@h:5432/x\n"
    )
    with pytest.raises(RegistryError) as caught:
        load_registry(write(tmp_path, text), env={})
    assert "same database" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_selection_by_id_tag_and_exclude(tmp_path: Path) -> None:
    tenants = load_registry(write(tmp_path, GOOD), env={"ALPHA_PW": "x"}).tenants
    assert [t.id for t in select(tenants, Selection(tags=("north",)))] == ["school-alpha"]
    assert [t.id for t in select(tenants, Selection(exclude=("school-alpha",)))] == ["school-bravo"]
    assert [t.id for t in select(tenants, Selection(ids=("school-bravo",)))] == ["school-bravo"]
    with pytest.raises(UsageError, match="no tenant with id 'school-zulu'"):
        select(tenants, Selection(ids=("school-zulu",)))
    with pytest.raises(UsageError, match="no tenant is tagged 'nort'") as caught:
        select(tenants, Selection(tags=("nort",)))
    assert caught.value.hint == "tags in the registry: canary, north"


def test_shards_cover_the_fleet_exactly_once() -> None:
    ids = [f"school-{i}" for i in range(500)]
    for count in (1, 3, 7):
        shards = [[i for i in ids if shard_of(i, count) == index] for index in range(count)]
        assert sorted(i for shard in shards for i in shard) == sorted(ids)
        assert all(shards), "every shard gets some schools"
    assert shard_of("school-1", 7) == shard_of("school-1", 7)


@pytest.mark.parametrize("text", ["3/3", "-1/2", "a/b", "1", "0/0"])
def test_bad_shard_flags_are_refused(text: str) -> None:
    with pytest.raises(UsageError):
        parse_shard(text)


def test_every_bad_tenant_is_listed_in_one_run(tmp_path: Path) -> None:
    text = (
        "tenants:\n"
        "  - id: a\n    url: postgresql://h/a\n    colour: red\n"
        "  - id: b\n    url: postgresql://u:${NOPE}@h/b\n"
        "  - id: c\n    url: postgresql://h/c\n"
        "  - id: c\n    url: postgresql://h/d\n"
    )
    path = write(tmp_path, text)
    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})
    message = str(caught.value)
    assert message.startswith(f"3 problems in {path}")
    for fragment in (f"{path}:4: unknown key 'colour'", f"{path}:6: environment variable NOPE", f"{path}:9: tenant id"):
        assert fragment in message
