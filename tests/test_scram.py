"""SCRAM-SHA-256's salted password is derived once per role, password and server salt for the whole process, not
once per session: a fleet run opens a session per school with the same role (scram.py)."""

from __future__ import annotations

import pytest
from pgfixtures import PG_PASSWORD, execute_sync, run_sync, unique_db_name

from orchestrator import scram
from orchestrator.connection import SessionSettings, session
from orchestrator.devserver import DevServer
from orchestrator.errors import AuthFailed
from orchestrator.target import DatabaseTarget


def open_sessions(url: str, count: int) -> list[str]:
    async def each() -> list[str]:
        users = []
        for _ in range(count):
            async with session(DatabaseTarget.parse(url), SessionSettings()) as conn:
                users.append(await conn.fetchval("SELECT current_user"))
        return users

    return run_sync(each)


def test_asyncpg_derives_the_salted_password_through_the_remembering_hashlib() -> None:
    # False here means asyncpg changed how it calls PBKDF2: sessions still work, one PBKDF2 each (0.9 ms of CPU).
    assert scram.install()


def test_sessions_of_one_role_derive_the_salted_password_once(pg: DevServer) -> None:
    scram.pbkdf2_hmac.cache_clear()

    assert open_sessions(pg.url(), 5) == ["postgres"] * 5

    info = scram.pbkdf2_hmac.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_each_role_has_its_own_and_a_wrong_password_is_still_refused(pg: DevServer) -> None:
    role = unique_db_name("scram_role")
    execute_sync(pg.url(), f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'another {PG_PASSWORD}'")
    other = pg.url().replace(f"//postgres:{PG_PASSWORD}@", f"//{role}:another%20{PG_PASSWORD}@", 1)
    assert other != pg.url()
    scram.pbkdf2_hmac.cache_clear()

    assert open_sessions(pg.url(), 2) == ["postgres"] * 2
    assert open_sessions(other, 2) == [role] * 2
    with pytest.raises(AuthFailed, match="refused the login"):
        open_sessions(pg.url().replace(f":{PG_PASSWORD}@", ":not-the-password@", 1), 1)

    info = scram.pbkdf2_hmac.cache_info()
    assert (info.misses, info.hits) == (3, 2)


def test_plain_asyncpg_takes_the_memo_out_for_a_while_and_puts_it_back(pg: DevServer) -> None:
    # The benchmark's floor is plain asyncpg: inside, sessions derive their key without the memo.
    scram.pbkdf2_hmac.cache_clear()

    with scram.plain_asyncpg():
        assert open_sessions(pg.url(), 2) == ["postgres"] * 2
        assert scram.pbkdf2_hmac.cache_info().currsize == 0
    assert open_sessions(pg.url(), 2) == ["postgres"] * 2

    info = scram.pbkdf2_hmac.cache_info()
    assert (info.misses, info.hits) == (1, 1)
