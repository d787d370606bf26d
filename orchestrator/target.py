"""A database to work on: its URL, and everything derived from it that is safe to show.

The password never leaves this object except through `dsn` (handed to the driver); `scrub()` removes the password
from any text (driver messages, tracebacks) before it reaches a log line, a report or an exception, and
`redact_url()` shows a URL with the password as `***`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from .errors import UsageError

REDACTED = "***"
_SCHEMES = ("postgres", "postgresql")


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    dsn: str = field(repr=False)
    host: str
    port: int
    database: str
    user: str | None
    password: str | None = field(repr=False, default=None)

    @classmethod
    def parse(cls, url: str) -> DatabaseTarget:
        """Validate a postgresql:// URL. Raises UsageError (with the password redacted) when it is malformed."""
        try:
            parts = urlsplit(url)
            port = parts.port or 5432
        except ValueError as exc:
            raise UsageError(
                f"malformed database URL {redact_url(url)}: {exc}",
                hint="use postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
            ) from None
        if parts.scheme not in _SCHEMES:
            raise UsageError(
                f"database URL {redact_url(url)} must start with postgresql:// (got {parts.scheme or 'no'} scheme)",
                hint="use postgresql://USER:PASSWORD@HOST:PORT/DATABASE",
            )
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise UsageError(
                f"database URL {redact_url(url)} names no database",
                hint="end the URL with /DATABASE_NAME, e.g. postgresql://app@db1:5432/school_alpha",
            )
        if len(database.encode()) > 63:
            raise UsageError(f"database name {database!r} is longer than PostgreSQL's 63 bytes")
        return cls(
            dsn=url,
            host=parts.hostname or "localhost",
            port=port,
            database=database,
            user=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password is not None else None,
        )

    @property
    def server(self) -> str:
        """The server this database lives on, as `host:port`: the unit of the per-server budget."""
        return f"{self.host}:{self.port}"

    def with_database(self, database: str) -> DatabaseTarget:
        """The same server and credentials, another database (e.g. the maintenance database `postgres`)."""
        parts = urlsplit(self.dsn)
        dsn = urlunsplit(parts._replace(path="/" + quote(database, safe="")))
        return DatabaseTarget(dsn, self.host, self.port, database, self.user, self.password)

    def scrub(self, text: str) -> str:
        """Remove this target's password from arbitrary text."""
        return scrub_secret(text, self.password)


def scrub_secret(text: str, secret: str | None) -> str:
    if not secret:
        return text
    for form in {secret, quote(secret, safe="")}:
        text = text.replace(form, REDACTED)
    return text


def redact_url(url: str) -> str:
    """The URL with any password replaced by ***. Works on malformed URLs too (best effort)."""
    scheme_sep = url.find("://")
    if scheme_sep < 0:
        return url
    rest = url[scheme_sep + 3 :]
    at = rest.rfind("@", 0, _authority_end(rest))
    if at < 0:
        return url
    userinfo = rest[:at]
    if ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{url[: scheme_sep + 3]}{user}:{REDACTED}{rest[at:]}"


def _authority_end(rest: str) -> int:
    # The authority ends at the first '/', '?' or '#' after the last '@' that could belong to it.
    at = rest.rfind("@")
    search_from = max(at, 0)
    ends = [i for i in (rest.find(c, search_from) for c in "/?#") if i >= 0]
    return min(ends) if ends else len(rest)
