"""The blocking entry points (the CLI, orchestrator.run, orchestrator.provision) run on uvloop where it is installed."""

from __future__ import annotations

import asyncio
import sys

import pytest

from orchestrator import eventloop


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_the_blocking_entry_points_run_on_uvloop() -> None:
    assert eventloop.run(loop_module) == "uvloop"
