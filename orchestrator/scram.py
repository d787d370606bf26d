"""One PBKDF2 per role and server, not one per session.

SCRAM-SHA-256 (PostgreSQL's default password authentication) makes the client turn the password into a salted
password with 4,096 rounds of PBKDF2-HMAC-SHA256 on every connection: about 0.9 ms of CPU here, half of what a
client spends opening a session. The server keeps one salt per role, so a fleet run, which opens a session per school
with the same role and password, would derive the same bytes a thousand times, on the cores the servers also use.

asyncpg derives it in `SCRAMAuthentication._generate_salted_password` by calling `hashlib.pbkdf2_hmac` through its
protocol module's `hashlib` name. `install()` gives that module a `hashlib` whose `pbkdf2_hmac` remembers its results
(a pure function: the same arguments give the same bytes), for the life of the process; the password was in its
memory already. If asyncpg stops reading it that way, nothing changes but the speed (tests/test_scram.py notices).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any

_CACHED_DERIVATIONS = 64  # roles x servers x salts a process authenticates with; more are derived again


@functools.lru_cache(maxsize=_CACHED_DERIVATIONS)
def pbkdf2_hmac(hash_name: str, password: bytes, salt: bytes, iterations: int, dklen: int | None = None) -> bytes:
    return hashlib.pbkdf2_hmac(hash_name, password, salt, iterations, dklen)


class _HashlibRemembering(ModuleType):
    """hashlib, with pbkdf2_hmac remembered."""

    pbkdf2_hmac = staticmethod(pbkdf2_hmac)

    def __getattr__(self, name: str) -> Any:
        return getattr(hashlib, name)


def install() -> bool:
    """Make asyncpg's SCRAM client derive each salted password once. True when asyncpg reads hashlib as expected."""
    try:
        from asyncpg.protocol import protocol
    except ImportError:
        return False
    if isinstance(getattr(protocol, "hashlib", None), _HashlibRemembering):
        return True
    if getattr(protocol, "hashlib", None) is not hashlib:
        return False
    _set(protocol, _HashlibRemembering("hashlib"))
    return True


@contextmanager
def plain_asyncpg() -> Iterator[None]:
    """asyncpg as installed, for a while: one PBKDF2 per session again (the benchmark's floor is plain asyncpg)."""
    from asyncpg.protocol import protocol

    installed = getattr(protocol, "hashlib", hashlib)
    _set(protocol, hashlib)
    try:
        yield
    finally:
        _set(protocol, installed)


def _set(protocol: ModuleType, module: ModuleType) -> None:
    setattr(protocol, "hashlib", module)  # noqa: B010 (no such attribute in asyncpg's stubs)
