"""Adversary: two registry entries on one database, spelled so the duplicate check does not see it.

docs/registry.md and the README promise that two schools on the same database are refused at load "however the
host is spelled". These spellings all reach the same server process on one machine (asyncpg resolves them with
getaddrinfo, or connects through the server's socket directory), yet the registry accepted them as separate
schools: every write then runs twice on one database (and the per-server budget counts two servers).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.errors import RegistryError
from orchestrator.registry import load_registry


@pytest.mark.parametrize(
    "other",
    [
        "127.1:5432",  # inet_aton shorthand for 127.0.0.1
        "127.0.0.2:5432",  # all of 127.0.0.0/8 is this machine
        "[::ffff:127.0.0.1]:5432",  # IPv4-mapped IPv6 of 127.0.0.1
        "0.0.0.0:5432",  # Linux connects 0.0.0.0 to the local machine
    ],
)
def test_adversary_loopback_spellings_are_one_database(tmp_path: Path, other: str) -> None:
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - id: a\n    url: postgresql://app@127.0.0.1:5432/school_a\n"
        f"  - id: b\n    url: postgresql://app@{other}/school_a\n"
    )
    with pytest.raises(RegistryError, match="same database"):
        load_registry(path, env={})


def test_adversary_direct_url_of_one_school_is_another_schools_url(tmp_path: Path) -> None:
    """School b reaches the database through a pooler (url) and writes through direct_url: the database school a
    names. The duplicate check compares only `url`, so both schools write to one database."""
    path = tmp_path / "tenants.yaml"
    path.write_text(
        "tenants:\n"
        "  - id: a\n    url: postgresql://app@db1:5432/school_a\n"
        "  - id: b\n    url: postgresql://app@pooler:6432/school_a\n"
        "    direct_url: postgresql://app@db1:5432/school_a\n"
    )
    with pytest.raises(RegistryError, match="same database"):
        load_registry(path, env={})
