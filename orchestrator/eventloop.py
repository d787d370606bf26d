"""The event loop of the blocking entry points (the CLI, `orchestrator.run`, `orchestrator.provision`): uvloop where
it is installed (every platform but Windows), asyncio's own otherwise.

A fleet command is a stream of short sessions, each a TCP connection, a SCRAM exchange and a few small messages:
most of its client time is the loop's socket handling, which uvloop (from asyncpg's authors, who recommend it) does in
C. The async API (`orchestrator.run_async`, ...) runs on whatever loop its host has.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar, TypeVarTuple

import anyio

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

USE_UVLOOP = importlib.util.find_spec("uvloop") is not None


def run(func: Callable[[*Ts], Awaitable[T]], *args: *Ts) -> T:
    """`anyio.run(func, *args)` on the fastest loop available."""
    return anyio.run(func, *args, backend_options={"use_uvloop": USE_UVLOOP})
