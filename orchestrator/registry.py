"""The tenant registry (`tenants.yaml`), supplied by the admin side: one URL per school.

Validated completely before any connection, with `file:line` in every message: unknown keys, duplicate ids, two
schools on one database, malformed URLs, unset `${VAR}`s. See docs/registry.md for the format.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from .errors import InvalidInput, Location, RegistryError, UsageError
from .settings import EMPTY, SETTING_NAMES, SchoolSettings, Selection, parse_duration
from .target import DatabaseTarget, redact_url

_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,62}$")
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

_FastLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_SETTING_KEYS = set(SETTING_NAMES)  # per-school settings: in `defaults:` and in each tenant
_TENANT_KEYS = _SETTING_KEYS | {"id", "url", "tags"}
_TOP_KEYS = {"defaults", "tenants"}


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    target: DatabaseTarget
    tags: tuple[str, ...] = ()
    settings: SchoolSettings = EMPTY  # the tenant's own entry only; settings.resolve() layers the rest
    line: int | None = None

    @property
    def server(self) -> str:
        return self.target.server


@dataclass(frozen=True)
class Registry:
    path: Path
    tenants: tuple[Tenant, ...]
    defaults: SchoolSettings = EMPTY  # the registry's `defaults:`

    def __len__(self) -> int:
        return len(self.tenants)


def expand_env(text: str, env: Mapping[str, str], where: Location) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. An unset VAR without default is an error."""

    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        name, default = m.group(1), m.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise RegistryError(
            f"environment variable {name} is not set",
            location=where,
            hint=f"export {name}=... before running, or write ${{{name}:-default}}",
        )

    return _VAR.sub(sub, text)


class _Loader:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env
        self.constructor = SafeConstructor()

    def at(self, node: yaml.Node) -> Location:
        return Location(self.path, node.start_mark.line + 1)

    def mapping(self, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise RegistryError(f"{what} must be a mapping of keys to values", location=self.at(node))
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key in out:
                raise RegistryError(f"key {key!r} appears twice in {what}", location=self.at(key_node))
            if key not in allowed:
                raise RegistryError(
                    f"unknown key {key!r} in {what}",
                    location=self.at(key_node),
                    hint=f"allowed keys: {', '.join(sorted(allowed))}",
                )
            out[key] = (key_node, value_node)
        return out

    def scalar(self, node: yaml.Node, what: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise RegistryError(f"{what} must be a single value", location=self.at(node))
        value = self.constructor.construct_object(node, deep=True)
        if isinstance(value, str):
            return expand_env(value, self.env, self.at(node))
        return value

    def string(self, node: yaml.Node, what: str) -> str:
        value = self.scalar(node, what)
        if not isinstance(value, str) or not value.strip():
            raise RegistryError(f"{what} must be a non-empty string", location=self.at(node))
        return value

    def string_list(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise RegistryError(f"{what} must be a list, e.g. [a, b]", location=self.at(node))
        return tuple(self.string(item, f"each entry of {what}") for item in node.value)

    def settings(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> SchoolSettings:
        values: dict[str, Any] = {}
        for key in _SETTING_KEYS & fields.keys():
            node = fields[key][1]
            if key == "extensions":
                values[key] = self.string_list(node, f"{what}.extensions")  # [] is a value: no extensions
            elif key == "per_server":
                number = self.scalar(node, f"{what}.per_server")
                if not isinstance(number, int) or isinstance(number, bool) or number < 1:
                    raise RegistryError(f"{what}.per_server must be a whole number >= 1", location=self.at(node))
                values[key] = number
            else:
                try:
                    values[key] = parse_duration(self.scalar(node, f"{what}.{key}"), f"{what}.{key}")
                except UsageError as exc:
                    raise RegistryError(exc.message, location=self.at(node), hint=exc.hint) from None
        return SchoolSettings(**values) if values else EMPTY

    def tenant(self, node: yaml.Node) -> Tenant:
        fields = self.mapping(node, "a tenant", _TENANT_KEYS)
        for required in ("id", "url"):
            if required not in fields:
                raise RegistryError(
                    f"tenant has no {required!r}",
                    location=self.at(node),
                    hint="each tenant needs `id: <slug>` and `url: postgresql://...`",
                )
        id_node = fields["id"][1]
        tenant_id = str(self.scalar(id_node, "id"))
        if not _ID.match(tenant_id):
            raise RegistryError(
                f"tenant id {tenant_id!r} is not a slug",
                location=self.at(id_node),
                hint="use lowercase letters, digits, '-', '_' and '.', starting with a letter or digit",
            )
        url_node = fields["url"][1]
        url = self.string(url_node, "url")
        try:
            target = DatabaseTarget.parse(url)
        except InvalidInput as exc:
            raise RegistryError(exc.message, location=self.at(url_node), hint=exc.hint) from None
        tags = self.string_list(fields["tags"][1], "tags") if "tags" in fields else ()
        own = self.settings(fields, f"tenant {tenant_id}")
        return Tenant(tenant_id, target, tags, own, line=self.at(node).line)


def load_registry(path: Path | str, env: Mapping[str, str] | None = None) -> Registry:
    path = Path(path)
    if not path.is_file():
        raise RegistryError(
            f"registry {path} does not exist",
            hint="pass --registry PATH, or -D URL for a single database",
        )
    loader = _Loader(path, os.environ if env is None else env)
    try:
        # libyaml's composer when present: a registry of 100,000 schools loads in seconds, not minutes.
        root = yaml.compose(path.read_text(encoding="utf-8"), Loader=_FastLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RegistryError(
            f"not valid YAML: {exc.problem}",
            location=Location(path, mark.line + 1 if mark else None),
            hint="check the indentation and quoting around that line",
        ) from None
    except UnicodeDecodeError:
        raise RegistryError("not valid UTF-8", location=Location(path)) from None
    if root is None:
        raise RegistryError("the registry is empty", location=Location(path), hint="add a `tenants:` list")
    top = loader.mapping(root, "the registry", _TOP_KEYS)
    defaults = EMPTY
    if "defaults" in top:
        defaults = loader.settings(loader.mapping(top["defaults"][1], "defaults", _SETTING_KEYS), "defaults")
    if "tenants" not in top:
        raise RegistryError("the registry has no `tenants:` list", location=loader.at(root))
    tenants_node = top["tenants"][1]
    if not isinstance(tenants_node, yaml.SequenceNode):
        raise RegistryError("`tenants` must be a list of tenants", location=loader.at(tenants_node))
    tenants: list[Tenant] = []
    problems: list[RegistryError] = []  # every tenant is checked, so one run lists every problem to fix
    seen_ids: dict[str, int | None] = {}
    seen_dbs: dict[tuple[str, int, str], Tenant] = {}
    for node in tenants_node.value:
        try:
            tenant = loader.tenant(node)
        except RegistryError as problem:
            problems.append(problem)
            continue
        where = Location(path, tenant.line)
        if tenant.id in seen_ids:
            problems.append(
                RegistryError(
                    f"tenant id {tenant.id!r} is already used at line {seen_ids[tenant.id]}",
                    location=where,
                    hint="ids must be unique",
                )
            )
            continue
        key = (tenant.target.host, tenant.target.port, tenant.target.database)
        if key in seen_dbs:
            other = seen_dbs[key]
            problems.append(
                RegistryError(
                    f"tenants {other.id!r} (line {other.line}) and {tenant.id!r} point at the same database "
                    f"{redact_url(tenant.target.dsn)}",
                    location=where,
                    hint="every school needs its own database",
                )
            )
            continue
        seen_ids[tenant.id] = tenant.line
        seen_dbs[key] = tenant
        tenants.append(tenant)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        listed = "\n".join(f"  {p.message}" + (f"\n    hint: {p.hint}" if p.hint else "") for p in problems)
        raise RegistryError(
            f"{len(problems)} problems in {path}:\n{listed}",
            hint="fix them all, then run again; nothing was touched",
        )
    return Registry(path, tuple(tenants), defaults)


def shard_of(tenant_id: str, count: int) -> int:
    """Stable across processes and machines (unlike hash()): N shards cover the fleet exactly once."""
    return zlib.crc32(tenant_id.encode("utf-8")) % count


def select(tenants: Iterable[Tenant], selection: Selection) -> list[Tenant]:
    tenants = list(tenants)
    known = {t.id for t in tenants}
    for wanted in (*selection.ids, *selection.exclude):
        if wanted not in known:
            raise UsageError(
                f"no tenant with id {wanted!r} in the registry",
                hint="`orchestrator status` lists the registered tenants",
            )
    known_tags = {tag for t in tenants for tag in t.tags}
    for tag in selection.tags:
        if tag not in known_tags:
            raise UsageError(
                f"no tenant is tagged {tag!r}",
                hint=f"tags in the registry: {', '.join(sorted(known_tags)) or 'none'}",
            )
    chosen = []
    for t in tenants:
        if selection.ids and t.id not in selection.ids:
            continue
        if selection.tags and not set(selection.tags) & set(t.tags):
            continue
        if t.id in selection.exclude:
            continue
        if selection.shard and shard_of(t.id, selection.shard[1]) != selection.shard[0]:
            continue
        if selection.only is not None and t.id not in selection.only:
            continue
        chosen.append(t)
    return chosen


def single_tenant(url: str) -> Tenant:
    """A one-school "registry" for `-D URL`: the id is the database name."""
    target = DatabaseTarget.parse(url)
    return Tenant(id=target.database, target=target)
