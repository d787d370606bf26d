"""A registry whose schools come from the admin database (`source:` in the registry file) instead of a YAML list.

    source:
      url: ${ADMIN_DATABASE_URL}
      query: |
        SELECT slug AS id, db_url AS url, labels AS tags
        FROM schools WHERE active

The query runs once, in a read-only session with a statement timeout. Each row becomes a tenant entry read exactly
like a YAML one (registry.py validates it), its columns named by registry key: `id` and `url` required, `tags`
(text[]) and any per-school setting (`lock_timeout`, `per_server`, ...) optional; NULL means "not set". Values are
taken as data: no `${VAR}` expansion (a row must not be able to pull the orchestrator's environment into a URL).
The query may span lines (a YAML block scalar) and hold tabs; any other control character is refused (exit 2).
URLs without a password use PostgreSQL's own mechanisms (`PGPASSWORD`, `PGPASSFILE` / `~/.pgpass`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import anyio
import asyncpg
import yaml

from .connection import APPLICATION_NAME, close_quietly, describe
from .errors import Location, RegistryError, UsageError
from .target import DatabaseTarget

# A control character other than the layout of SQL text (tab, newline, carriage return): NUL and the like.
_NOT_LAYOUT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")

_STR = "tag:yaml.org,2002:str"
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


@dataclass(frozen=True)
class RegistrySource:
    target: DatabaseTarget  # the admin database
    query: str
    statement_timeout: float  # seconds
    connect_timeout: float  # seconds
    where: Location  # the `source:` block, for messages


def check_query_text(query: str, what: str) -> None:
    """A query may be laid out over lines with tabs; any other control character is refused (not echoed)."""
    if match := _NOT_LAYOUT.search(query):
        raise UsageError(
            f"{what} contains a control character (U+{ord(match.group()):04X})",
            hint="remove it: the query's newlines and tabs are fine, other control characters are not",
        )


def fetch_rows(source: RegistrySource) -> list[dict[str, Any]]:
    """Run the query; RegistryError (exit 2, nothing touched) when the admin database cannot answer it.

    Synchronous on purpose (the registry is loaded before anything runs): the query runs on an event loop of its
    own in a worker thread, so this works the same with or without an event loop running in the caller."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(anyio.run, _fetch, source).result()


async def _fetch(source: RegistrySource) -> list[dict[str, Any]]:
    target = source.target
    conn = None
    try:
        conn = await asyncpg.connect(
            dsn=target.dsn,
            timeout=source.connect_timeout,
            statement_cache_size=0,
            server_settings={
                "application_name": f"{APPLICATION_NAME}-registry",
                "default_transaction_read_only": "on",
                "statement_timeout": str(int(source.statement_timeout * 1000)),
            },
        )
        async with conn.transaction(readonly=True):
            return [dict(row) for row in await conn.fetch(source.query)]
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise RegistryError(
            f"the registry source {target.redacted} did not answer: {target.scrub(describe(exc))}",
            location=source.where,
            hint="check that the admin database is up and reachable, that the URL's role may read the query's "
            "tables, and the query itself (it runs read-only, under source.statement_timeout)",
        ) from None
    finally:
        if conn is not None:
            await close_quietly(conn)


def check_columns(rows: list[dict[str, Any]], source: RegistrySource) -> None:
    if not rows:
        return
    missing = [c for c in ("id", "url") if c not in rows[0]]
    if missing:
        raise RegistryError(
            f"the registry source query returns no {' and no '.join(missing)} column "
            f"(it returns: {', '.join(rows[0]) or 'nothing'})",
            location=source.where,
            hint="name them with AS: SELECT slug AS id, db_url AS url, labels AS tags FROM schools WHERE active",
        )


def row_node(row: Mapping[str, Any]) -> yaml.MappingNode:
    """A row as the YAML node a tenant entry would be: numbers plain (read as numbers), text quoted (read as text,
    never converted), arrays as lists, NULL left out (not set)."""
    pairs = []
    for key, value in row.items():
        if value is None:
            continue
        pairs.append((yaml.ScalarNode(_STR, str(key)), _value_node(value)))
    return yaml.MappingNode(_MAP, pairs)


def _value_node(value: Any) -> yaml.Node:
    if isinstance(value, (list, tuple)):
        return yaml.SequenceNode(_SEQ, [_value_node(v) for v in value if v is not None])
    if isinstance(value, bool):
        return yaml.ScalarNode(_STR, str(value).lower(), style="'")
    if isinstance(value, (int, float, Decimal)):
        return yaml.ScalarNode(_STR, str(value))
    if isinstance(value, timedelta):  # an interval column for a duration setting
        return yaml.ScalarNode(_STR, f"{value.total_seconds():g}s", style="'")
    return yaml.ScalarNode(_STR, str(value), style="'")
