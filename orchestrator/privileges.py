"""SQLSTATE 42501, insufficient privilege: say which privilege the URL's role lacks and who can grant it.

A role that does not own the school's database typically meets "permission denied for schema public" (PostgreSQL
15 and later grant CREATE on it to the database owner only) or "permission denied for table _sqlx_migrations".
Retrying does not help and the server log says nothing more: the fix is a grant, or the owner's role in the URL.
"""

from __future__ import annotations

import re

import asyncpg

from .errors import PermissionDenied
from .target import DatabaseTarget

_DENIED_ON = re.compile(r"permission denied for (schema|table|sequence|view|materialized view|database) (\S+)")
_OWNER_ONLY = re.compile(r"must be owner of (\w+(?: \w+)?) (\S+)")
# What each kind of object needs from us, and the grant that gives it.
_NEEDS = {
    "schema": ("USAGE and CREATE", "GRANT USAGE, CREATE ON SCHEMA {name} TO {role}"),
    "table": (
        "SELECT (status, plan, audit) and INSERT, UPDATE, DELETE (migrate, revert)",
        "GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO {role}",
    ),
    "sequence": ("USAGE and UPDATE", "GRANT USAGE, UPDATE ON SEQUENCE {name} TO {role}"),
    "view": ("SELECT", "GRANT SELECT ON {name} TO {role}"),
    "materialized view": ("SELECT", "GRANT SELECT ON {name} TO {role}"),
    "database": ("CONNECT (and CREATE, for extensions)", "GRANT CONNECT, CREATE ON DATABASE {name} TO {role}"),
}
_NOT_RETRIED = "Not retried: it fails the same way until granted"


def grant_hint(message: str, role: str | None, database: str) -> str:
    """What to do about a 42501 `message` from the server."""
    who = role or "the URL's user"
    if m := _DENIED_ON.search(message):
        kind, name = m.groups()
        privilege, grant = _NEEDS[kind]
        return (
            f"the role {who} needs {privilege} on {kind} {name}: its owner (or a superuser) must grant it, e.g. "
            f"`{grant.format(name=name, role=who)}` in {database}; or put the owner's role in the URL. {_NOT_RETRIED}"
        )
    if m := _OWNER_ONLY.search(message):
        kind, name = m.groups()
        return (
            f"only the owner of {kind} {name} (or a member of the owning role, or a superuser) may do this: put "
            f"that role in the URL, or have the owner make {who} a member of it. {_NOT_RETRIED}"
        )
    return (
        f"the role {who} lacks a privilege this needs: the object's owner (or a superuser) must grant it, or put "
        f"the owner's role in the URL. {_NOT_RETRIED}"
    )


def permission_denied(target: DatabaseTarget, exc: asyncpg.PostgresError) -> PermissionDenied:
    message = target.scrub(str(exc).strip())
    return PermissionDenied(
        f"{target.database} on {target.server}: {message} [SQLSTATE 42501]",
        hint=grant_hint(message, target.user, target.database),
    )
