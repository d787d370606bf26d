"""A database to work on: its URL, and everything derived from it that is safe to show.

`DatabaseTarget.parse` reads a URL exactly the way asyncpg will (asyncpg.connect_utils: the first `@` ends the
user info, a host before the path wins over `?host=`, a path wins over `?dbname=`, the query string is parsed
strictly), so what is validated and shown is what will be connected to, and a URL asyncpg would refuse is refused
here, before any connection. The secrets (the password, in the user info or in `?password=`, and `?sslpassword=`)
never leave this object except through `dsn` (handed to the driver); `scrub()` removes them from any text (driver
messages, tracebacks), and `redact_url()` shows any URL, even a malformed one, with its secrets as `***`.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

from .errors import UsageError, excerpt

REDACTED = "***"
_SCHEMES = ("postgres", "postgresql")
_URL_HINT = "use postgresql://USER:PASSWORD@HOST:PORT/DATABASE"

# Query parameters holding a secret: redacted wherever a URL is shown (matched case-insensitively, to be safe).
SECRET_PARAMS = frozenset({"password", "sslpassword"})
# The parameters asyncpg reads from a query string, with the values it accepts where it checks them. Any other
# parameter is sent to the server as a setting (`?application_name=...`), so it must at least be a setting's name.
_CHOICES: dict[str, frozenset[str] | None] = {
    "host": None,
    "port": None,
    "dbname": None,
    "database": None,
    "user": None,
    "password": None,
    "passfile": None,
    "service": None,
    "sslmode": frozenset({"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}),
    "sslcert": None,
    "sslkey": None,
    "sslrootcert": None,
    "sslcrl": None,
    "sslpassword": None,
    "sslnegotiation": frozenset({"postgres", "direct"}),
    "ssl_min_protocol_version": frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
    "ssl_max_protocol_version": frozenset({"TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"}),
    "target_session_attrs": frozenset({"any", "primary", "standby", "prefer-standby", "read-write", "read-only"}),
    "krbsrvname": None,
    "gsslib": frozenset({"gssapi", "sspi"}),
}
_HOST = re.compile(r"[A-Za-z0-9._:%-]+")  # a name, IPv4, or IPv6 (with a %zone) once its brackets are off
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# The duplicate check's name for "this machine": every loopback address, 0.0.0.0 / ::, localhost, a socket directory.
THIS_MACHINE = "localhost"
_LOCAL_NAMES = frozenset({"localhost", "localhost."})


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    dsn: str = field(repr=False)
    host: str  # as written, lowercased; several hosts are joined with ','
    port: int
    database: str
    user: str | None
    password: str | None = field(repr=False, default=None)
    #: every secret in the URL (password, sslpassword), for scrubbing
    secrets: tuple[str, ...] = field(repr=False, default=())
    #: (host, port) pairs, every spelling of "this machine" and of an IP address made one (see `canonical_host`)
    addresses: tuple[tuple[str, int], ...] = field(repr=False, default=())

    @classmethod
    def parse(cls, url: str) -> DatabaseTarget:
        """Validate a postgresql:// URL. Raises UsageError (secrets redacted) when it is malformed, when asyncpg
        would refuse it, or when asyncpg would read it differently from how it looks."""
        shown = _Shown(url)
        if CONTROL_CHARACTER.search(url):
            raise UsageError(f"database URL {shown} contains a control character", hint="remove it")
        try:
            parts = urlsplit(url)
        except ValueError as exc:
            raise UsageError(f"malformed database URL {shown}: {exc}", hint=_URL_HINT) from None
        if parts.scheme not in _SCHEMES:
            raise UsageError(
                f"database URL {shown} must start with postgresql:// (got {excerpt(parts.scheme or 'no', 20)} scheme)",
                hint=_URL_HINT,
            )
        if "#" in url:
            raise UsageError(
                f"database URL {shown} contains '#', which would end the URL there",
                hint="percent-encode a '#' in a password or name as %23",
            )
        userinfo, at, hostspec = parts.netloc.rpartition("@")
        if "@" in userinfo:
            raise UsageError(
                f"database URL {shown} contains '@' more than once",
                hint="percent-encode an '@' in the user or password as %40",
            )
        query = _parse_query(parts.query, shown)
        user, _, password = userinfo.partition(":") if at else ("", "", "")
        addresses = _addresses(hostspec, query, shown)
        database = _database(parts.path, query, shown)
        user = unquote(user) or query.get("user", "")
        password = unquote(password) or query.get("password", "")
        check_not_control(user, "user name")
        hosts = [h for h, _ in addresses]
        secrets = tuple(s for s in (password, query.get("sslpassword", "")) if s)
        return cls(
            dsn=url,
            host=",".join(hosts),
            port=addresses[0][1],
            database=database,
            user=user or None,
            password=password or None,
            secrets=secrets,
            addresses=tuple((canonical_host(h), p) for h, p in addresses),
        )

    @property
    def server(self) -> str:
        """The server this database lives on, as `host:port`: the unit of the per-server budget."""
        return f"{self.host}:{self.port}"

    @property
    def identity(self) -> tuple[tuple[tuple[str, int], ...], str]:
        """Which database this is, however the URL spells its server: two schools must never share one."""
        return self.addresses, self.database

    @property
    def places(self) -> tuple[tuple[tuple[str, int], str], ...]:
        """Each (address, database) this URL may reach: asyncpg connects to the first host that answers, so two URLs
        sharing any one of them may be one database (`h1:5432,h2:5432/db` is `h1:5432/db` while h1 is up)."""
        return tuple((address, self.database) for address in self.addresses)

    def with_database(self, database: str) -> DatabaseTarget:
        """The same server and credentials, another database (e.g. the maintenance database `postgres`)."""
        parts = urlsplit(self.dsn)
        dsn = urlunsplit(parts._replace(path="/" + quote(database, safe="")))
        return DatabaseTarget(
            dsn, self.host, self.port, database, self.user, self.password, self.secrets, self.addresses
        )

    @property
    def redacted(self) -> str:
        """The URL with its secrets as ***: exact, because this URL's user info is known to end at its one '@'."""
        scheme_end = self.dsn.find("://") + 3
        if scheme_end < 3:  # postgresql:/db: no user info
            return redact_url(self.dsn)
        netloc = urlsplit(self.dsn).netloc
        return self.dsn[:scheme_end] + _redact(self.dsn[scheme_end:], netloc.rfind("@"))

    def scrub(self, text: str) -> str:
        """Remove this target's secrets from arbitrary text."""
        for secret in self.secrets:
            text = scrub_secret(text, secret)
        return text


class _Shown:
    """The URL as error messages show it: secrets redacted, cut short; worked out only when a message needs it."""

    def __init__(self, url: str) -> None:
        self.url = url

    def __format__(self, spec: str) -> str:
        return excerpt(redact_url(self.url), 200)


def check_not_control(value: str, what: str) -> None:
    """Refuse a control character (it would reach the terminal raw and break XML reports). The value is not
    echoed: it may be a URL with a password in it."""
    if match := CONTROL_CHARACTER.search(value):
        raise UsageError(f"{what} contains a control character (U+{ord(match.group()):04X})", hint="remove it")


def _parse_query(query: str, shown: _Shown) -> dict[str, str]:
    if not query:
        return {}
    try:
        pairs = parse_qsl(query, strict_parsing=True)
    except ValueError:
        raise UsageError(
            f"database URL {shown} has a malformed query string: every parameter must be name=value",
            hint="separate parameters with '&'; percent-encode a '&' or '=' inside a value as %26 / %3D",
        ) from None
    params: dict[str, str] = {}
    for name, value in pairs:
        if name in params:
            raise UsageError(f"database URL {shown} gives ?{excerpt(name, 40)}= twice", hint="keep one")
        choices = _CHOICES.get(name)
        if name not in _CHOICES and not _SETTING_NAME.fullmatch(name):
            raise UsageError(
                f"database URL {shown} has an unknown parameter {excerpt(name, 40)}",
                hint="asyncpg reads host, port, dbname, user, password, sslmode, ...; any other parameter is a "
                "server setting such as application_name",
            )
        if choices is not None and value not in choices:
            raise UsageError(
                f"database URL {shown}: {name}={excerpt(value, 40)} is not one of {', '.join(sorted(choices))}",
                hint="fix the query string",
            )
        if CONTROL_CHARACTER.search(value):
            raise UsageError(f"database URL {shown}: ?{name}= contains a control character", hint="remove it")
        params[name] = value
    return params


def _port(text: str, shown: _Shown) -> int:
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        # The port is not echoed: with an unencoded '/' in a password, what looks like a port is part of it.
        raise UsageError(f"database URL {shown} has a bad port", hint="a port is a number 1-65535")
    return int(text)


def _addresses(hostspec: str, query: dict[str, str], shown: _Shown) -> list[tuple[str, int]]:
    """(host, port) pairs as asyncpg reads them: from before the path, else from ?host= / ?port=."""
    if hostspec and ("host" in query or "port" in query):
        raise UsageError(
            f"database URL {shown} names the server both before the path and in ?host= / ?port=; asyncpg "
            "ignores the query's",
            hint="write the host and port once, as HOST:PORT before the path",
        )
    hostlist, from_query = (hostspec, False) if hostspec else (query.get("host", ""), True)
    if not hostlist:
        return [("localhost", _port(query.get("port", "5432"), shown))]
    query_ports = [_port(p, shown) for p in query["port"].split(",")] if "port" in query else []
    pairs = []
    for index, spec in enumerate(hostlist.split(",")):
        if spec.startswith("["):
            m = re.fullmatch(r"\[([^\]]+)\](?::(.*))?", spec)
            if not m:
                raise UsageError(f"database URL {shown} has a malformed IPv6 address", hint="write [ADDRESS]:PORT")
            host, port_text = m.group(1), m.group(2) or ""
        else:
            host, _, port_text = spec.partition(":")
        if not from_query:
            host, port_text = unquote(host), unquote(port_text)
        if not host:
            raise UsageError(f"database URL {shown} has an empty host name", hint=_URL_HINT)
        if not host.startswith("/") and not _HOST.fullmatch(host):
            raise UsageError(
                f"database URL {shown} has a malformed host name",
                hint="a host is a name, an IP address ([...] for IPv6) or a socket directory starting with '/'",
            )
        if port_text:
            port = _port(port_text, shown)
        elif query_ports:
            port = query_ports[min(index, len(query_ports) - 1)]
        else:
            port = 5432
        pairs.append((host if host.startswith("/") else host.lower(), port))
    return pairs


def _database(path: str, query: dict[str, str], shown: _Shown) -> str:
    named_in_query = [k for k in ("dbname", "database") if k in query]
    if path and named_in_query:
        raise UsageError(
            f"database URL {shown} names the database both in the path and in ?{named_in_query[0]}=; asyncpg "
            "ignores the query's",
            hint="keep the one in the path",
        )
    # asyncpg reads ?dbname= before ?database=, and only when the URL has no path.
    database = unquote(path.removeprefix("/")) if path else next((query[k] for k in named_in_query), "")
    if not database or "/" in database:
        raise UsageError(
            f"database URL {shown} names no database",
            hint="end the URL with /DATABASE_NAME, e.g. postgresql://app@db1:5432/school_alpha",
        )
    check_database_name(database, "database name")
    return database


def check_database_name(name: str, what: str) -> None:
    """A name PostgreSQL keeps as written: no control character, at most 63 bytes (it would cut a longer one)."""
    check_not_control(name, what)
    if len(name.encode()) > 63:
        raise UsageError(
            f"{what} {excerpt(name)} is longer than PostgreSQL's 63 bytes",
            hint="PostgreSQL would silently cut it; use a shorter name",
        )


def canonical_host(host: str) -> str:
    """One spelling per host, worked out without DNS: an IP address in its canonical form (`127.1` and `0x7f.1` as
    glibc's resolver reads them, an IPv4-mapped IPv6 address as its IPv4), and THIS_MACHINE for every way of
    reaching a server on this machine: `localhost`, all of 127.0.0.0/8 and ::1 (Linux routes them to the local
    stack), 0.0.0.0 and :: (Linux connects them locally) and any Unix socket directory (a local server listens on
    its socket and on loopback TCP with one port number). Erring toward "same": a false duplicate is an exit-2
    message the operator can read, a missed one applies every write twice. Other names are compared as written."""
    if host.startswith("/") or host in _LOCAL_NAMES:
        return THIS_MACHINE
    address = _ip_address(host)
    if address is None:
        return host
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_unspecified:
        return THIS_MACHINE
    return str(address)


def _ip_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if not re.fullmatch(r"[0-9a-fx.]+", host):  # only inet_aton's numbers-and-dots forms, never a name
        return None
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))  # 127.1, 0x7f.1, 2130706433: as getaddrinfo reads them
    except OSError:
        return None


def scrub_secret(text: str, secret: str | None) -> str:
    if not secret:
        return text
    for form in sorted({secret, quote(secret, safe=""), quote_plus(secret, safe="")}, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def redact_url(url: str) -> str:
    """Any text naming a URL, with the URL's secrets (a password in the user info, `?password=`,
    `?sslpassword=`) replaced by ***. Made for malformed URLs: the user info is taken to end at the last '@', so a
    password holding an unencoded '/', '?', '#' or '@' is hidden whole (and, rarely, more than the password)."""
    scheme_end = url.find("://")
    head, rest = (url[: scheme_end + 3], url[scheme_end + 3 :]) if scheme_end >= 0 else ("", url)
    return head + _redact(rest, rest.rfind("@"))


def _redact(rest: str, at: int) -> str:
    """`rest` (the URL after `scheme://`) with the password before `at` (the user info's end) and the query's
    secret parameters replaced by ***."""
    query_from = 0
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        if colon:
            rest = f"{user}:{REDACTED}{rest[at:]}"
            query_from = len(user) + 1 + len(REDACTED)
    query_start = rest.find("?", query_from)
    if query_start < 0:
        return rest
    kept = []
    in_secret = False
    for param in rest[query_start + 1 :].split("&"):
        name, equals, _ = param.partition("=")
        if unquote_plus(name).strip().lower() in SECRET_PARAMS:
            kept.append(f"{name}={REDACTED}")
            in_secret = True
        elif in_secret and not equals:
            continue  # an unencoded '&' inside the secret: the rest of it
        else:
            kept.append(param)
            in_secret = False
    return rest[: query_start + 1] + "&".join(kept)
