"""Small helpers on the benchmark's throwaway server, shared by bench.py and onboarding.py."""

from __future__ import annotations

import asyncpg

from orchestrator.devserver import DevServer


async def checkpoint(server: DevServer) -> None:
    """Flush before a timed run, so no run pays for the previous one's dirty buffers."""
    conn = await asyncpg.connect(server.url())
    try:
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
