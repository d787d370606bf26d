"""The tenant registry (`tenants.yaml`), supplied by the admin side: one URL per school.

Validated completely before any connection, with `file:line` in every message: unknown keys, duplicate ids, two
schools on one database, malformed URLs, unset `${VAR}`s. Values are read as written: an unquoted `0123` is the id
`0123`, never YAML 1.1's octal 83. See docs/registry.md for the format.

The file is read one tenant at a time (libyaml's parser, PyYAML's composer for one tenant's nodes), so memory
follows the schools kept, not a node tree of the whole file.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import yaml
from yaml.composer import Composer
from yaml.events import MappingEndEvent, MappingStartEvent, SequenceEndEvent, SequenceStartEvent, StreamEndEvent

from .bootstrap import MAINTENANCE_DATABASE
from .errors import Location, RegistryError, UsageError, excerpt, some
from .registry_source import RegistrySource, check_columns, check_query_text, fetch_rows, row_node
from .scratch import TOOL_PREFIX, is_reserved
from .settings import BUILTIN, EMPTY, SETTING_NAMES, SchoolSettings, Selection, parse_duration
from .target import DatabaseTarget, check_database_name, check_not_control

try:
    from yaml import CSafeLoader as _YamlLoader
except ImportError:  # PyYAML built without libyaml
    from yaml import SafeLoader as _YamlLoader  # type: ignore[assignment]

ID_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"  # a tenant id: a slug (written once; the service's API states it too)
_ID = re.compile(ID_PATTERN)
_VAR = re.compile(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
# The only numbers: plain decimal, as JSON writes them. YAML 1.1 also reads 0123 (octal), 0x1F, 1_000 and 12:30
# (base 60) as numbers; here they stay text, so an id or a duration is never silently converted.
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
TextCheck = Callable[[str, str], None]  # (value, what) -> None, or UsageError
# A value landing in the host part of a URL may not bring URL structure of its own.
_URL_STRUCTURE = re.compile(r"[@/?#\s]")
# The server's maintenance database and its templates: migrating template1 would put the school schema into every
# database created on that server afterwards.
NOT_SCHOOLS = frozenset({MAINTENANCE_DATABASE, "template0", "template1"})
PROBLEMS_SHOWN = 50  # a registry of 150,000 bad tenants lists the first 50, then says how many more

_SETTING_KEYS = set(SETTING_NAMES)  # per-school settings: in `defaults:` and in each tenant
_TENANT_KEYS = _SETTING_KEYS | {"id", "url", "direct_url", "tags"}
_TOP_KEYS = {"defaults", "tenants", "source"}
_SOURCE_KEYS = {"url", "query", "statement_timeout", "connect_timeout"}
SOURCE_STATEMENT_TIMEOUT = 30.0  # seconds: the admin database's query is one SELECT


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    target: DatabaseTarget
    tags: tuple[str, ...] = ()
    settings: SchoolSettings = EMPTY  # the tenant's own entry only; settings.resolve() layers the rest
    line: int | None = None
    direct: DatabaseTarget | None = None  # `direct_url`: the server itself, for commands that write (url: a pooler)

    @property
    def server(self) -> str:
        return self.target.server

    @property
    def targets(self) -> tuple[DatabaseTarget, ...]:
        """Both of the school's URLs (url, and direct_url when given): each names its database."""
        return (self.target,) if self.direct is None else (self.target, self.direct)


@dataclass(frozen=True)
class Registry:
    path: Path
    tenants: tuple[Tenant, ...]
    defaults: SchoolSettings = EMPTY  # the registry's `defaults:`
    source: DatabaseTarget | None = None  # the admin database of a `source:` registry: never a school's

    def __len__(self) -> int:
        return len(self.tenants)


def _value(m: re.Match[str], env: Mapping[str, str], where: Location) -> str:
    """What one `${VAR}` / `${VAR:-default}` / `$$` stands for."""
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


def expand_env(text: str, env: Mapping[str, str], where: Location) -> str:
    """Expand `${VAR}` and `${VAR:-default}`; `$$` is a literal `$`. An unset VAR without default is an error."""
    return _VAR.sub(lambda m: _value(m, env, where), text)


def expand_url(text: str, env: Mapping[str, str], where: Location) -> str:
    """`expand_env` for a URL: a value is data, never URL structure. In the user info, the path or the query it
    is percent-encoded (a password `x@db2/other#` stays a password); in the host part, a value holding '@', '/',
    '?', '#' or a space is refused. A variable before the `://` stands for (the start of) a whole URL and is
    inserted as it is."""
    variables = list(_VAR.finditer(text))
    if not variables:
        return text
    # Where each variable sits is decided on the URL as written, with every variable replaced by one plain letter.
    pieces, starts, last, length = [], [], 0, 0
    for m in variables:
        pieces.append(text[last : m.start()])
        length += m.start() - last
        starts.append(length)
        pieces.append("$" if m.group(0) == "$$" else "x")
        length += 1
        last = m.end()
    pieces.append(text[last:])
    skeleton = "".join(pieces)
    authority_start = skeleton.find("://") + 3
    ends = [i for i in (skeleton.find(c, authority_start) for c in "/?#") if i >= 0]
    authority_end = min(ends, default=len(skeleton))
    userinfo_end = skeleton.rfind("@", authority_start, authority_end)
    out, last = [], 0
    for m, at in zip(variables, starts, strict=True):
        value = _value(m, env, where)
        out.append(text[last : m.start()])
        last = m.end()
        if m.group(0) == "$$" or authority_start < 3 or at < authority_start:
            out.append(value)
        elif authority_end <= at or at < userinfo_end:
            out.append(quote(value, safe=""))
        elif _URL_STRUCTURE.search(value):
            raise RegistryError(
                f"the value of ${{{m.group(1)}}} in the URL's host part would change which server the URL names "
                "(it holds '@', '/', '?', '#' or a space)",
                location=where,
                hint="give that variable only a host or host:port; a password goes between ':' and '@', where it "
                "is encoded for you",
            )
        else:
            out.append(value)
    out.append(text[last:])
    return "".join(out)


def check_school(target: DatabaseTarget) -> None:
    """Raise UsageError for a database that is never a school's: the maintenance database and the templates, and a
    name of the tool's own kind (its scratch databases and spares)."""
    if target.database in NOT_SCHOOLS:
        raise UsageError(
            f"database {target.database!r} is the server's maintenance or template database, not a school's",
            hint="a school has a database of its own; migrating template1 would put the school schema into every "
            "database created on that server afterwards",
        )
    if is_reserved(target.database):
        raise UsageError(
            f"database {excerpt(target.database)} starts with {TOOL_PREFIX!r}: names of that kind are the tool's "
            "own (its scratch databases, template builds and spares), never a school's",
            hint=f"rename the school's database to a name not starting with {TOOL_PREFIX!r} "
            "(ALTER DATABASE ... RENAME TO ...) and put the new name in its URL",
        )


def check_tenant_id(tenant_id: str, location: Location | None = None) -> None:
    """Raise RegistryError unless `tenant_id` is a slug, as every tenant id must be."""
    if not _ID.fullmatch(tenant_id):
        raise RegistryError(
            f"tenant id {excerpt(tenant_id)} is not a slug",
            location=location,
            hint="use lowercase letters, digits, '-', '_' and '.' (at most 63), starting with a letter or digit",
        )


def check_template_name(name: str, what: str) -> None:
    """Raise UsageError unless `name` may be a template the tool builds and refreshes: a database name ("" turns
    a registry default off), never the maintenance database nor the server's own templates (rebuilding template1
    would change every database created on the server afterwards)."""
    if name == "":
        return
    if not name.strip() or "/" in name:
        raise UsageError(f"{what} {excerpt(name)} is not a database name", hint="e.g. school_template")
    check_database_name(name, what)
    if name in NOT_SCHOOLS:
        raise UsageError(
            f"{what} {name!r} is the server's own maintenance or template database",
            hint="name a database of the tool's own, e.g. school_template: it is built, refreshed and replaced "
            "by the tool",
        )
    if is_reserved(name):
        raise UsageError(
            f"{what} {excerpt(name)} starts with {TOOL_PREFIX!r}, the names of the tool's scratch databases and spares",
            hint="name the template e.g. school_template",
        )


class _Loader:
    def __init__(self, path: Path, env: Mapping[str, str]) -> None:
        self.path = path
        self.env = env

    def at(self, node: yaml.Node) -> Location:
        return Location(self.path, node.start_mark.line + 1)

    def key(self, key_node: yaml.Node, what: str, allowed: set[str], seen: Mapping[str, object]) -> str:
        key = str(key_node.value)
        if key in seen:
            raise RegistryError(f"key {excerpt(key)} appears twice in {what}", location=self.at(key_node))
        if key not in allowed:
            raise RegistryError(
                f"unknown key {excerpt(key)} in {what}",
                location=self.at(key_node),
                hint=f"allowed keys: {', '.join(sorted(allowed))}",
            )
        return key

    def mapping(self, node: yaml.Node, what: str, allowed: set[str]) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise RegistryError(f"{what} must be a mapping of keys to values", location=self.at(node))
        out: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        for key_node, value_node in node.value:
            out[self.key(key_node, what, allowed, out)] = (key_node, value_node)
        return out

    @contextmanager
    def located(self, node: yaml.Node) -> Iterator[None]:
        """A UsageError about a value becomes a RegistryError at the value's line."""
        try:
            yield
        except UsageError as exc:
            raise RegistryError(exc.message, location=self.at(node), hint=exc.hint) from None

    def written(self, node: yaml.Node, what: str, check: TextCheck = check_not_control) -> str:
        """A scalar's text exactly as written in the file, before `${VAR}` expansion."""
        if not isinstance(node, yaml.ScalarNode):
            raise RegistryError(f"{what} must be a single value", location=self.at(node))
        text: str = node.value
        with self.located(node):
            check(text, what)
        return text

    def text(self, node: yaml.Node, what: str, check: TextCheck = check_not_control) -> str:
        """A scalar as written, `${VAR}`s expanded; never converted (`0123` stays `0123`, `12:30` stays `12:30`)."""
        value = expand_env(self.written(node, what, check), self.env, self.at(node))
        with self.located(node):
            check(value, what)
        return value

    def scalar(self, node: yaml.Node, what: str) -> Any:
        """A plain decimal number (`4`, `2.5`) as a number; any other value as its text (see `text`)."""
        written = self.written(node, what)
        if isinstance(node, yaml.ScalarNode) and not node.style and _NUMBER.fullmatch(written):  # plain: unquoted
            return float(written) if "." in written else int(written)
        return self.text(node, what)

    def string(self, node: yaml.Node, what: str, check: TextCheck = check_not_control) -> str:
        value = self.text(node, what, check)
        if not value.strip():
            raise RegistryError(f"{what} must be a non-empty string", location=self.at(node))
        return value

    def string_list(self, node: yaml.Node, what: str) -> tuple[str, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise RegistryError(f"{what} must be a list, e.g. [a, b]", location=self.at(node))
        return tuple(self.string(item, f"each entry of {what}") for item in node.value)

    def target(self, node: yaml.Node) -> DatabaseTarget:
        target = self.target_of(node)
        with self.located(node):
            check_school(target)
        return target

    def target_of(self, node: yaml.Node) -> DatabaseTarget:
        url = self.url_text(node)
        if not url.strip():
            raise RegistryError("url must be a non-empty string", location=self.at(node))
        with self.located(node):
            return DatabaseTarget.parse(url)

    def url_text(self, node: yaml.Node) -> str:
        return expand_url(self.written(node, "url"), self.env, self.at(node))

    def require(self, fields: Mapping[str, object], node: yaml.Node, what: str, hint: str) -> None:
        for required in ("id", "url") if what == "tenant" else ("url", "query"):
            if required not in fields:
                raise RegistryError(f"{what} has no {required!r}", location=self.at(node), hint=hint)

    def settings(self, fields: dict[str, tuple[yaml.Node, yaml.Node]], what: str) -> SchoolSettings:
        values: dict[str, Any] = {}
        for key in _SETTING_KEYS & fields.keys():
            node = fields[key][1]
            if key == "extensions":
                values[key] = self.string_list(node, f"{what}.extensions")  # [] is a value: no extensions
                continue
            if key == "template":
                values[key] = self.text(node, f"{what}.template")  # "" is a value: no template
                with self.located(node):
                    check_template_name(values[key], f"{what}.template")
                continue
            value = self.scalar(node, f"{what}.{key}")
            if key == "per_server":
                if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                    raise RegistryError(f"{what}.per_server must be a whole number >= 1", location=self.at(node))
                values[key] = value
                continue
            if isinstance(value, (int, float)) and value < 0:
                raise RegistryError(f"{what}.{key} must not be negative", location=self.at(node))
            with self.located(node):
                values[key] = parse_duration(value, f"{what}.{key}")
        return SchoolSettings(**values) if values else EMPTY

    def tenant(self, node: yaml.Node) -> Tenant:
        fields = self.mapping(node, "a tenant", _TENANT_KEYS)
        self.require(fields, node, "tenant", hint="each tenant needs `id: <slug>` and `url: postgresql://...`")
        id_node = fields["id"][1]
        tenant_id = self.text(id_node, "id")
        check_tenant_id(tenant_id, self.at(id_node))
        target = self.target(fields["url"][1])
        direct = self.target(fields["direct_url"][1]) if "direct_url" in fields else None
        if direct is not None and direct.database != target.database:
            raise RegistryError(
                f"tenant {tenant_id}: direct_url names database {excerpt(direct.database)}, url names "
                f"{excerpt(target.database)}",
                location=self.at(fields["direct_url"][1]),
                hint="direct_url is the same school's database, reached without the pooler",
            )
        tags = self.string_list(fields["tags"][1], "tags") if "tags" in fields else ()
        own = self.settings(fields, f"tenant {tenant_id}")
        return Tenant(tenant_id, target, tags, own, line=self.at(node).line, direct=direct)


class _RowLoader(_Loader):
    """Reads one row of a registry source as a tenant entry: the same checks, a row's place instead of a line,
    and values taken as data (no `${VAR}` expansion)."""

    def __init__(self, path: Path, label: str) -> None:
        super().__init__(path, {})
        self.place = Location(path, label=label)

    def at(self, node: yaml.Node) -> Location:
        return self.place

    def text(self, node: yaml.Node, what: str, check: TextCheck = check_not_control) -> str:
        return self.written(node, what, check)

    def url_text(self, node: yaml.Node) -> str:
        return self.written(node, "url")


def _read_source(loader: _Loader, node: yaml.Node) -> RegistrySource:
    fields = loader.mapping(node, "source", _SOURCE_KEYS)
    loader.require(
        fields, node, "source", hint="source needs `url:` (the admin database) and `query:` (returning id and url)"
    )
    url_node = fields["url"][1]
    target = loader.target_of(url_node)
    timeouts = {}
    for key, default in (("statement_timeout", SOURCE_STATEMENT_TIMEOUT), ("connect_timeout", BUILTIN.connect_timeout)):
        timeouts[key] = default
        if key in fields:
            with loader.located(fields[key][1]):
                timeouts[key] = parse_duration(loader.scalar(fields[key][1], f"source.{key}"), f"source.{key}")
    query = loader.string(fields["query"][1], "source.query", check_query_text)
    return RegistrySource(target, query, where=loader.at(node), **timeouts)


def _from_source(source: RegistrySource, fleet: _Fleet) -> None:
    rows = fetch_rows(source)
    check_columns(rows, source)
    for row in rows:
        label = f"source row id={excerpt(str(row.get('id')), 60)}"
        fleet.add(row_node(row), _RowLoader(fleet.loader.path, label))
    admin = set(source.target.places)
    for tenant in fleet.tenants:
        if any(admin & set(t.places) for t in tenant.targets):
            raise RegistryError(
                f"school {tenant.id!r} names the admin database {excerpt(source.target.redacted, 200)}, the one "
                "`source:` reads the schools from",
                location=source.where,
                hint="every school needs its own database; the admin database is never migrated",
            )


def load_registry(path: Path | str, env: Mapping[str, str] | None = None) -> Registry:
    path = Path(path)
    if not path.is_file():
        raise RegistryError(
            f"registry {path} does not exist",
            hint="pass --registry PATH, or -D URL for a single database",
        )
    raw = path.read_bytes()
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RegistryError(
            "not valid UTF-8", location=Location(path, raw.count(b"\n", 0, exc.start) + 1), hint="save it as UTF-8"
        ) from None
    loader = _Loader(path, os.environ if env is None else env)
    return _parse(raw, loader)


class _Events(_YamlLoader, Composer):
    """libyaml's parser under PyYAML's composer, so the file can be composed one tenant at a time. (Quicker, too,
    than composing it whole: the garbage collector never walks a tree of millions of nodes.)"""

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.anchors = {}

    # Values are read as written (see _Loader.text): YAML 1.1's implicit types are never resolved, not even as tags.
    def resolve(self, kind: type[yaml.Node], value: str | None, implicit: bool | tuple[bool, bool] | None) -> str:
        return ""

    def descend_resolver(self, current_node: yaml.Node | None, current_index: object) -> None:
        pass

    def ascend_resolver(self) -> None:
        pass

    def node(self) -> yaml.Node:
        node = self.compose_node(None, None)  # type: ignore[arg-type]
        assert node is not None  # None only at the end of a document, which the callers check for first
        return node

    def line(self) -> int | None:
        """The line of the next event."""
        event = self.peek_event()
        mark = event.start_mark if event is not None else None
        return mark.line + 1 if mark is not None else None


def _parse(raw: bytes, loader: _Loader) -> Registry:
    """The registry, read one tenant at a time (each keeps its own entry: `defaults:` may come before or after)."""
    path = loader.path
    events = _Events(raw)
    try:
        events.get_event()  # stream start
        if events.check_event(StreamEndEvent):
            raise RegistryError("the registry is empty", location=Location(path), hint="add a `tenants:` list")
        events.get_event()  # document start
        if not events.check_event(MappingStartEvent):
            root = events.node()
            if isinstance(root, yaml.ScalarNode) and root.value == "":
                raise RegistryError("the registry is empty", location=Location(path), hint="add a `tenants:` list")
            raise RegistryError("the registry must be a mapping of keys to values", location=loader.at(root))
        start_line = events.line()
        events.get_event()
        fleet = _Fleet(loader)
        tenants_line: int | None = None
        tenants_read = False
        defaults = EMPTY
        source: RegistrySource | None = None
        seen: dict[str, yaml.Node] = {}
        while not events.check_event(MappingEndEvent):
            key_node = events.node()
            key = loader.key(key_node, "the registry", _TOP_KEYS, seen)
            seen[key] = key_node
            if key == "defaults":
                defaults_node = events.node()
                defaults = loader.settings(loader.mapping(defaults_node, "defaults", _SETTING_KEYS), "defaults")
                fleet.template_at(defaults.template, loader.at(_value_of(defaults_node, "template")))
            elif key == "source":
                source = _read_source(loader, events.node())
            elif not events.check_event(SequenceStartEvent):  # the other key: tenants
                raise RegistryError("`tenants` must be a list of tenants", location=loader.at(events.node()))
            else:  # read, checked and let go one tenant at a time
                tenants_line = events.line()
                events.get_event()
                tenants_read = True
                while not events.check_event(SequenceEndEvent):
                    fleet.add(events.node())
                events.get_event()
        events.get_event()  # mapping end
        events.get_event()  # document end
        if not events.check_event(StreamEndEvent):
            raise RegistryError(
                "the registry holds more than one YAML document",
                location=Location(path, events.line()),
                hint="keep one: remove the `---` and what follows, or merge the two",
            )
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        raise RegistryError(
            f"not valid YAML: {exc.problem}",
            location=Location(path, mark.line + 1 if mark else None),
            hint="check the indentation and quoting around that line",
        ) from None
    except yaml.reader.ReaderError as exc:
        character = chr(exc.character) if isinstance(exc.character, int) else exc.character
        raise RegistryError(
            f"character U+{ord(character):04X} is not allowed in YAML ({exc.reason})",
            location=Location(path, raw.count(b"\n", 0, exc.position) + 1),
            hint="remove it: a control character has no place in a registry",
        ) from None
    finally:
        events.dispose()
    if tenants_read and source is not None:
        raise RegistryError(
            "the registry has both `tenants:` and `source:`",
            location=Location(path, tenants_line),
            hint="keep one: the schools come either from the file or from the admin database",
        )
    if source is not None:
        _from_source(source, fleet)
    elif not tenants_read:
        raise RegistryError(
            "the registry has no `tenants:` list (nor a `source:`)", location=Location(path, start_line)
        )
    fleet.check(tenants_line, from_source=source is not None)
    return Registry(path, tuple(fleet.tenants), defaults, None if source is None else source.target)


class _Fleet:
    """The tenants read so far, checked against each other. Every tenant is checked, so one run lists every
    problem to fix; the first PROBLEMS_SHOWN are kept and the rest only counted (a file of 150,000 bad tenants
    costs neither gigabytes nor megabytes of output)."""

    def __init__(self, loader: _Loader) -> None:
        self.loader = loader
        self.tenants: list[Tenant] = []
        self.problems: list[RegistryError] = []
        self.problem_count = 0
        self.ids: dict[str, str] = {}  # id -> where it was first seen, for messages
        self.databases: dict[tuple[tuple[str, int], str], Tenant] = {}  # by each (address, database) it reaches
        self.templates: dict[str, Location] = {}  # template name -> where it is first given

    def add(self, node: yaml.Node, loader: _Loader | None = None) -> None:
        loader = loader or self.loader
        try:
            tenant = loader.tenant(node)
        except RegistryError as problem:
            self.problem(problem)
            return
        where = loader.at(node)
        if tenant.id in self.ids:
            self.problem(
                RegistryError(
                    f"tenant id {tenant.id!r} is already used ({self.ids[tenant.id]})",
                    location=where,
                    hint="ids must be unique",
                )
            )
            return
        # Both of a school's URLs name its database (direct_url: the same one, without the pooler): neither may be
        # another school's url or direct_url.
        for target in tenant.targets:
            other = next((o for o in map(self.databases.get, target.places) if o is not None), None)
            if other is not None:
                self.problem(
                    RegistryError(
                        f"tenants {other.id!r} ({self.ids[other.id]}) and {tenant.id!r} point at the same database "
                        f"{excerpt(target.redacted, 200)}",
                        location=where,
                        hint="every school needs its own database (localhost, any loopback address, 0.0.0.0 and a "
                        "socket directory are one machine; url and direct_url both count)",
                    )
                )
                return
        self.ids[tenant.id] = f"line {tenant.line}" if tenant.line else "by another source row"
        for target in tenant.targets:
            self.databases.update(dict.fromkeys(target.places, tenant))
        self.tenants.append(tenant)
        self.template_at(tenant.settings.template, loader.at(_value_of(node, "template")))

    def template_at(self, name: str | None, where: Location) -> None:
        if name:
            self.templates.setdefault(name, where)

    def check_templates(self) -> None:
        """A template is built, refreshed and replaced by the tool: never a school's database (on any server)."""
        if not self.templates:
            return
        for tenant in self.tenants:
            where = self.templates.get(tenant.target.database)
            if where is not None:
                self.problem(
                    RegistryError(
                        f"template {excerpt(tenant.target.database)} is the database of school {tenant.id} "
                        f"({self.ids[tenant.id]})",
                        location=where,
                        hint="a template is a database of the tool's own, which it builds and replaces: name "
                        "another, e.g. school_template",
                    )
                )

    def problem(self, problem: RegistryError) -> None:
        self.problem_count += 1
        if len(self.problems) < PROBLEMS_SHOWN:
            self.problems.append(problem.with_traceback(None))

    def check(self, tenants_line: int | None, *, from_source: bool = False) -> None:
        path = self.loader.path
        self.check_templates()
        if self.problem_count == 1:
            raise self.problems[0]
        if self.problems:
            listed = "\n".join(f"  {p.message}" + (f"\n    hint: {p.hint}" if p.hint else "") for p in self.problems)
            unlisted = self.problem_count - len(self.problems)
            if unlisted:
                listed += f"\n  ... and {unlisted:,} more (the first {PROBLEMS_SHOWN} are listed)"
            raise RegistryError(
                f"{self.problem_count:,} problems in {path}:\n{listed}",
                hint="fix them all, then run again; nothing was touched",
            )
        if not self.tenants and from_source:
            raise RegistryError(
                "the registry source returned no rows",
                location=Location(path),
                hint="check the query's WHERE clause; with no school, every command would succeed having done nothing",
            )
        if not self.tenants:
            raise RegistryError(
                "the registry lists no tenants",
                location=Location(path, tenants_line),
                hint="add the schools under `tenants:`; with none, every command would succeed having done nothing",
            )


def _value_of(node: yaml.Node, key: str) -> yaml.Node:
    """The value of `key` in a mapping node (for its line), else the node itself."""
    for key_node, value_node in node.value if isinstance(node, yaml.MappingNode) else ():
        if key_node.value == key and isinstance(value_node, yaml.Node):
            return value_node
    return node


def shard_of(tenant_id: str, count: int) -> int:
    """Stable across processes and machines (unlike hash()): N shards cover the fleet exactly once."""
    return zlib.crc32(tenant_id.encode("utf-8")) % count


def select(registry: Registry, selection: Selection) -> list[Tenant]:
    """The registry's tenants the selection names. Selecting none is an error: a run that touched nothing must
    not look like a run that succeeded (a scheduled audit that audits nothing must not report green)."""
    tenants = registry.tenants
    known = {t.id for t in tenants}
    for wanted in (*selection.ids, *selection.exclude):
        if wanted not in known:
            raise UsageError(
                f"no tenant with id {excerpt(wanted)} in {registry.path}",
                hint="`orchestrator status` lists the registered tenants",
            )
    known_tags = {tag for t in tenants for tag in t.tags}
    for tag in (*selection.tags, *selection.exclude_tags):
        if tag not in known_tags:  # a misspelt --exclude-tag would leave in what it meant to keep out
            raise UsageError(
                f"no tenant is tagged {excerpt(tag)}", hint=f"tags in the registry: {some(sorted(known_tags))}"
            )
    chosen = []
    for t in tenants:
        if selection.ids and t.id not in selection.ids:
            continue
        if selection.tags and not set(selection.tags) & set(t.tags):
            continue
        if t.id in selection.exclude or set(selection.exclude_tags) & set(t.tags):
            continue
        if selection.shard and shard_of(t.id, selection.shard[1]) != selection.shard[0]:
            continue
        if selection.only is not None and t.id not in selection.only:
            continue
        chosen.append(t)
    if not chosen:
        raise UsageError(
            f"no tenant selected: {_describe(selection)} match none of the {len(tenants):,} tenants in {registry.path}",
            hint="widen the selection; nothing was touched",
        )
    return chosen


def _describe(selection: Selection) -> str:
    filters = [f"--tenant {excerpt(i, 40)}" for i in selection.ids]
    filters += [f"--tag {excerpt(t, 40)}" for t in selection.tags]
    filters += [f"--exclude {excerpt(i, 40)}" for i in selection.exclude]
    filters += [f"--exclude-tag {excerpt(t, 40)}" for t in selection.exclude_tags]
    if selection.shard:
        filters.append(f"--shard {selection.shard[0]}/{selection.shard[1]}")
    if selection.only is not None:
        filters.append(f"--resume (the {len(selection.only):,} schools that did not end ok in the report)")
    return some(filters, 10) if filters else "the whole registry"


def single_tenant(url: str) -> Tenant:
    """A one-school "registry" for `-D URL`: the id is the database name."""
    target = DatabaseTarget.parse(url)
    check_school(target)
    return Tenant(id=target.database, target=target)


def caller_tenant(tenant_id: str, url: str, where: str) -> Tenant:
    """A school named by a caller rather than a file (the service's `PUT /v1/schools/{id}` with a URL): read exactly
    as a row of a registry source is (id a slug, URL parsed, never the maintenance database nor a name of the tool's
    own). Raises RegistryError (its message names `where`)."""
    loader = _RowLoader(Path(where), f"school {excerpt(tenant_id, 60)}")
    return loader.tenant(row_node({"id": tenant_id, "url": url}))
