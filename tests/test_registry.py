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
        ("tenants:\n  - id: a\n    url: postgresql://h:99999/a\n", 3, "has a bad port"),
        ("tenants:\n  - id: a\n    url: postgresql://h/\n", 3, "names no database"),
        ("tenants:\n  - id: a\n    url: postgresql://h/a?application_name=x&oops\n", 3, "malformed query string"),
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


@pytest.mark.parametrize(
    ("second", "shown"),
    [
        ("postgresql://u:hunter2@h:5432/x", "'postgresql://u:***@h:5432/x'"),
        (
            "postgresql://u@h:5432/x?password=hunter2&sslpassword=hunter3&sslmode=require",
            "'postgresql://u@h:5432/x?password=***&sslpassword=***&sslmode=require'",
        ),
    ],
    ids=["user-info", "query-string"],
)
def test_registry_errors_never_show_a_password(tmp_path: Path, second: str, shown: str) -> None:
    text = f"tenants:\n  - id: a\n    url: postgresql://u:hunter2@h/x\n  - id: b\n    url: {second}\n"
    with pytest.raises(RegistryError) as caught:
        load_registry(write(tmp_path, text), env={})
    assert f"same database {shown}" in str(caught.value)
    assert "hunter" not in str(caught.value)


def test_selection_by_id_tag_and_exclude(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD), env={"ALPHA_PW": "x"})
    assert [t.id for t in select(registry, Selection(tags=("north",)))] == ["school-alpha"]
    assert [t.id for t in select(registry, Selection(exclude=("school-alpha",)))] == ["school-bravo"]
    assert [t.id for t in select(registry, Selection(ids=("school-bravo",)))] == ["school-bravo"]
    with pytest.raises(UsageError, match="no tenant with id 'school-zulu'"):
        select(registry, Selection(ids=("school-zulu",)))
    with pytest.raises(UsageError, match="no tenant is tagged 'nort'") as caught:
        select(registry, Selection(tags=("nort",)))
    assert caught.value.hint == "tags in the registry: canary, north"


def test_exclude_tag_leaves_out_every_school_with_the_tag_and_a_misspelt_one_is_refused(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD), env={"ALPHA_PW": "x"})
    assert [t.id for t in select(registry, Selection(exclude_tags=("north",)))] == ["school-bravo"]
    assert [t.id for t in select(registry, Selection(exclude_tags=("north", "canary")))] == ["school-bravo"]
    with pytest.raises(UsageError, match="no tenant selected: --tag 'canary', --exclude-tag 'north'"):
        select(registry, Selection(tags=("canary",), exclude_tags=("north",)))  # excluding wins
    with pytest.raises(UsageError, match="no tenant is tagged 'nroth'"):
        select(registry, Selection(exclude_tags=("nroth",)))


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


# --- values are read as written (YAML 1.1 never converts them) ---------------------------------------------------


def test_ids_tags_and_durations_are_read_as_written_never_as_yaml_1_1_numbers(tmp_path: Path) -> None:
    text = (
        "defaults:\n  per_server: 4\n  statement_timeout: 30\n"
        "tenants:\n"
        "  - id: 0123\n    url: postgresql://h/a\n    tags: [0x1F, yes, 1_000]\n"
        "  - id: 83\n    url: postgresql://h/b\n    lock_timeout: 2.5\n"
        "  - id: 0x1f\n    url: postgresql://h/c\n"
    )
    registry = load_registry(write(tmp_path, text), env={})

    assert [t.id for t in registry.tenants] == ["0123", "83", "0x1f"], "no octal 83, no duplicate, no hex 31"
    assert registry.tenants[0].tags == ("0x1F", "yes", "1_000")
    assert [t.id for t in select(registry, Selection(ids=("0123",)))] == ["0123"]
    # Plain decimal numbers still are numbers.
    assert registry.defaults.per_server == 4
    assert registry.defaults.statement_timeout == 30.0
    assert registry.tenants[1].settings.lock_timeout == 2.5


@pytest.mark.parametrize(
    ("value", "shown"),
    [("12:30", "'12:30'"), ("0x1F", "'0x1F'"), ("1_000", "'1_000'"), ("1.0e+3", "'1.0e+3'")],
)
def test_a_duration_yaml_1_1_would_convert_is_refused_as_written(tmp_path: Path, value: str, shown: str) -> None:
    path = write(tmp_path, f"tenants:\n  - id: a\n    url: postgresql://h/a\n    lock_timeout: {value}\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:4: tenant a.lock_timeout: {shown} is not a duration" in str(caught.value)


def test_per_server_written_in_octal_is_refused_not_read_as_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  per_server: 010\ntenants:\n  - id: a\n    url: postgresql://h/a\n")

    with pytest.raises(RegistryError, match=r":2: defaults.per_server must be a whole number"):
        load_registry(path, env={})


@pytest.mark.parametrize(
    ("text", "env"),
    [
        ('tenants:\n  - id: "school-a\\n"\n    url: postgresql://h/a\n', {}),
        ("tenants:\n  - id: ${SCHOOL}\n    url: postgresql://h/a\n", {"SCHOOL": "school-a\n"}),
    ],
    ids=["escaped-in-the-file", "from-a-variable"],
)
def test_an_id_with_a_trailing_newline_is_refused(tmp_path: Path, text: str, env: dict[str, str]) -> None:
    path = write(tmp_path, text)

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env=env)

    assert f"{path}:2: " in str(caught.value)
    assert "control character (U+000A)" in str(caught.value)


# --- control characters --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("character", ["\x00", "\x01", "\x7f"])
def test_a_raw_control_character_is_refused_with_the_line_it_is_on(tmp_path: Path, character: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_bytes(f"tenants:\n  - id: a\n    url: postgresql://h/a\n  - id: b{character}c\n".encode())

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:4: character U+{ord(character):04X} is not allowed" in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["postgresql://h/school%01a", "postgresql://h/school%0Aa", "postgresql://h/school\\u0001a"],
    ids=["percent-encoded", "newline", "yaml-escape"],
)
def test_a_control_character_in_a_database_name_is_refused(tmp_path: Path, url: str) -> None:
    path = write(tmp_path, f'tenants:\n  - id: a\n    url: "{url}"\n')

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:3: " in str(caught.value)
    assert "control character" in str(caught.value)


# --- databases that are never a school's ---------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["postgres", "template0", "template1"])
def test_the_maintenance_and_template_databases_are_not_schools(tmp_path: Path, database: str) -> None:
    path = write(tmp_path, f"tenants:\n  - id: a\n    url: postgresql://h/{database}\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:3: database '{database}' is the server's maintenance or template database" in str(caught.value)


# --- costly bad input ----------------------------------------------------------------------------------------------


def test_thousands_of_bad_tenants_list_the_first_50_then_a_count(tmp_path: Path) -> None:
    lines = ["tenants:"] + [f"  - id: Bad Id {i}\n    url: postgresql://h/db{i}" for i in range(3000)]
    path = write(tmp_path, "\n".join(lines) + "\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    message = str(caught.value)
    assert message.startswith(f"3,000 problems in {path}:")
    assert message.count("is not a slug") == 50
    assert f"{path}:2: tenant id 'Bad Id 0'" in message and "'Bad Id 49'" in message and "'Bad Id 50'" not in message
    assert "... and 2,950 more" in message


def test_a_huge_database_name_is_not_echoed_whole(tmp_path: Path) -> None:
    name = "x" * 1_000_000
    path = write(tmp_path, f"tenants:\n  - id: a\n    url: postgresql://h/{name}\n  - id: {name}\n    url: x\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    message = str(caught.value)
    assert "longer than PostgreSQL's 63 bytes" in message and "not a slug" in message
    assert "1,000,000 characters" in message
    assert len(message) < 2000


def test_defaults_written_after_the_tenants_still_apply_to_them(tmp_path: Path) -> None:
    text = "tenants:\n  - id: a\n    url: postgresql://h/a\ndefaults:\n  lock_timeout: 7s\n  per_server: 2\n"
    registry = load_registry(write(tmp_path, text), env={})

    settings = resolve(EMPTY, registry.tenants[0].settings, registry.defaults)
    assert (settings.lock_timeout, settings.per_server) == (7.0, 2)


# --- an empty selection is an error ------------------------------------------------------------------------------


def test_a_registry_without_tenants_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "defaults:\n  lock_timeout: 5s\ntenants: []\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:3: the registry lists no tenants" in str(caught.value)


def test_a_selection_that_selects_nothing_is_refused_naming_what_it_selected_from(tmp_path: Path) -> None:
    registry = load_registry(write(tmp_path, GOOD), env={"ALPHA_PW": "x"})
    # Of two schools, a shard count of 50 leaves most shards empty.
    empty_shard = next(i for i in range(50) if all(shard_of(t.id, 50) != i for t in registry.tenants))

    with pytest.raises(UsageError) as caught:
        select(registry, Selection(tags=("north",), exclude=("school-alpha",)))
    assert str(caught.value).startswith(
        f"no tenant selected: --tag 'north', --exclude 'school-alpha' match none of the 2 tenants in {registry.path}"
    )
    with pytest.raises(UsageError, match=f"--shard {empty_shard}/50 match none of the 2 tenants"):
        select(registry, Selection(shard=(empty_shard, 50)))
    with pytest.raises(UsageError, match="--resume"):
        select(registry, Selection(only=frozenset()))


# --- URLs: variables are data, secrets never shown, spellings of one database are one -----------------------------


def test_a_variable_cannot_retarget_a_school(tmp_path: Path) -> None:
    pw = "x@db2:5432/school_b#"
    path = write(tmp_path, "tenants:\n  - id: a\n    url: postgresql://app:${PW}@db1:5432/school_a\n")

    [tenant] = load_registry(path, env={"PW": pw}).tenants

    assert (tenant.target.host, tenant.target.port, tenant.target.database) == ("db1", 5432, "school_a")
    assert tenant.target.password == pw


@pytest.mark.parametrize(
    ("url", "env", "expected"),
    [
        ("${SCHOOL_URL}", {"SCHOOL_URL": "postgresql://app:pw@db1:6432/school_a"}, ("db1", 6432, "school_a", "pw")),
        ("postgresql://app@${DB}/school_a", {"DB": "db1:6432"}, ("db1", 6432, "school_a", None)),
        (
            "postgresql://${USER}:${PW}@db1/${NAME}",
            {"USER": "a:b", "PW": "p%40", "NAME": "s?x"},
            ("db1", 5432, "s?x", "p%40"),
        ),
        ("postgresql://app@db1/a?password=${PW}", {"PW": "x&host=db2"}, ("db1", 5432, "a", "x&host=db2")),
    ],
    ids=["whole-url", "host-and-port", "each-part-encoded", "query-value"],
)
def test_variables_land_in_the_url_as_data(
    tmp_path: Path, url: str, env: dict[str, str], expected: tuple[str, int, str, str | None]
) -> None:
    [tenant] = load_registry(write(tmp_path, f"tenants:\n  - id: a\n    url: {url}\n"), env=env).tenants

    target = tenant.target
    assert (target.host, target.port, target.database, target.password) == expected


def test_a_variable_that_would_change_the_server_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "tenants:\n  - id: a\n    url: postgresql://app@${DB}/school_a\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={"DB": "db2/school_b?"})

    assert f"{path}:3: the value of ${{DB}} in the URL's host part would change which server" in str(caught.value)
    assert "db2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "fragment"),
    [
        ("mysql://h/a?password=hunter2", "must start with postgresql://"),
        ("postgresql://h:99999/a?password=hunter2", "has a bad port"),
        ("postgresql://h/a?password=hunter2&sslpassword=hunter3&oops", "malformed query string"),
        ("postgresql://h/a?password=hun&ter2", "malformed query string"),
        ("postgresql://u:hunter2@h/a?sslmode=sometimes", "sslmode='sometimes' is not one of"),
        ("postgresql://u:hun/ter2@h/a", "has a bad port"),
        ("postgresql://u:hunter2#@h/a", "contains '#'"),
    ],
)
def test_malformed_urls_are_refused_with_every_secret_hidden(tmp_path: Path, url: str, fragment: str) -> None:
    path = write(tmp_path, f"tenants:\n  - id: a\n    url: {url}\n")

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    message = str(caught.value)
    assert f"{path}:3: " in message and fragment in message
    for secret in ("hunter2", "hunter3", "ter2", "hun"):
        assert secret not in message


def test_secrets_in_the_query_string_are_scrubbed(tmp_path: Path) -> None:
    text = "tenants:\n  - id: a\n    url: postgresql://u@h/x?password=hunter2&sslpassword=hunter3\n"
    [tenant] = load_registry(write(tmp_path, text), env={}).tenants

    assert tenant.target.password == "hunter2"
    assert tenant.target.scrub("failed for hunter2, key hunter3 (postgresql://u@h/x?password=hunter2)") == (
        "failed for ***, key *** (postgresql://u@h/x?password=***)"
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("postgresql://u@localhost/school_a", "postgresql://u@127.0.0.1:5432/school_a"),
        ("postgresql://u@localhost/school_a", "postgresql://u@[::1]:5432/school_a"),
        ("postgresql://u@127.0.0.1/school_a", "postgresql://u@LocalHost/school_a"),
        ("postgresql://u@db1.internal/school_a", "postgresql:///school_a?host=DB1.internal&port=5432"),
        ("postgresql://u@db1.internal:6432/school_a", "postgresql://u@db1.internal:6432?dbname=school_a"),
        # A socket directory and loopback TCP with one port reach one local server (docs/registry.md).
        ("postgresql://u@127.0.0.1:5432/school_a", "postgresql://u@%2Ftmp:5432/school_a"),
        ("postgresql://u@localhost/school_a", "postgresql:///school_a?host=/var/run/postgresql"),
        ("postgresql://u@127.0.0.1/school_a", "postgresql://u@0x7f.1/school_a"),
        ("postgresql://u@127.0.0.1/school_a", "postgresql://u@2130706433/school_a"),
        ("postgresql://u@[::1]/school_a", "postgresql://u@[0:0:0:0:0:0:0:1]/school_a"),
        ("postgresql://u@[::1]/school_a", "postgresql://u@[::]/school_a"),
        ("postgresql://u@10.0.0.7/school_a", "postgresql://u@10.7/school_a"),
        ("postgresql://u@10.0.0.7/school_a", "postgresql://u@[::ffff:10.0.0.7]/school_a"),
        ("postgresql://u@db1:5432/school_a", "postgresql://u@db1:5432,db2:5432/school_a"),  # db1 first, while up
        ("postgresql://u@db2:5432,db1:5432/school_a", "postgresql://u@db1:5432/school_a"),
    ],
)
def test_spellings_of_one_database_are_duplicates(tmp_path: Path, first: str, second: str) -> None:
    text = f"tenants:\n  - id: a\n    url: {first}\n  - id: b\n    url: {second}\n"
    path = write(tmp_path, text)

    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})

    assert f"{path}:4: tenants 'a' (line 2) and 'b' point at the same database" in str(caught.value)


def test_a_direct_url_must_name_the_same_school_database(tmp_path: Path) -> None:
    text = "tenants:\n  - id: a\n    url: postgresql://h:6432/school_a\n    direct_url: postgresql://db:5432/school_b\n"
    with pytest.raises(RegistryError, match="direct_url names database 'school_b', url names 'school_a'"):
        load_registry(write(tmp_path, text), env={})
    ok = load_registry(write(tmp_path, text.replace("school_b", "school_a")), env={})
    direct = ok.tenants[0].direct
    assert direct is not None and (direct.server, ok.tenants[0].server) == ("db:5432", "h:6432")


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("postgresql://u@localhost:5432/school_a", "postgresql://u@127.0.0.1:5433/school_a"),
        ("postgresql://u@%2Ftmp:5432/school_a", "postgresql://u@127.0.0.1:5433/school_a"),
        ("postgresql://u@127.0.0.1/school_a", "postgresql://u@10.0.0.1/school_a"),
        ("postgresql://u@deadbeef/school_a", "postgresql://u@cafe/school_a"),  # names, not inet_aton's hex forms
        ("postgresql://u@10.0.0.7/school_a", "postgresql://u@10.0.0.8/school_a"),
    ],
)
def test_other_servers_are_not_duplicates(tmp_path: Path, first: str, second: str) -> None:
    text = f"tenants:\n  - id: a\n    url: {first}\n  - id: b\n    url: {second}\n"
    assert len(load_registry(write(tmp_path, text), env={})) == 2


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (
            "url: postgresql://db1/school_a",
            "url: postgresql://pool/school_a\n    direct_url: postgresql://db1/school_a",
        ),
        (
            "url: postgresql://pool/school_a\n    direct_url: postgresql://db1/school_a",
            "url: postgresql://db1:5432/school_a",
        ),
        (
            "url: postgresql://pool1/school_a\n    direct_url: postgresql://db1/school_a",
            "url: postgresql://pool2/school_a\n    direct_url: postgresql://DB1:5432/school_a",
        ),
    ],
    ids=["direct-is-earlier-url", "url-is-earlier-direct", "direct-is-earlier-direct"],
)
def test_a_direct_url_counts_in_the_duplicate_check(tmp_path: Path, a: str, b: str) -> None:
    path = write(tmp_path, f"tenants:\n  - id: a\n    {a}\n  - id: b\n    {b}\n")
    with pytest.raises(RegistryError) as caught:
        load_registry(path, env={})
    line = 4 if a.count("\n") == 0 else 5
    assert f"{path}:{line}: tenants 'a' (line 2) and 'b' point at the same database" in str(caught.value)


def test_a_schools_own_url_and_direct_url_may_name_one_database(tmp_path: Path) -> None:
    text = "tenants:\n  - id: a\n    url: postgresql://db1/school_a\n    direct_url: postgresql://DB1:5432/school_a\n"
    assert len(load_registry(write(tmp_path, text), env={})) == 1
