"""Disposer provider: how a cached agent's resources are released."""

from __future__ import annotations

import asyncio
import inspect
from typing import Protocol, final, runtime_checkable

_CLOSE_METHODS = ("aclose", "dispose", "close")


@runtime_checkable
class Disposer(Protocol):
    """Releases one agent object. The manager bounds each call with its own timeout."""

    async def dispose(self, agent: object) -> None: ...


@final
class DefaultDisposer:
    """Calls the first of ``aclose()``, ``dispose()``, ``close()`` the agent has.

    A method returning an awaitable is awaited; the whole call is bounded by ``timeout_ms``
    and an agent with none of the methods is left alone.
    """

    __slots__ = ("timeout_ms",)

    def __init__(self, timeout_ms: int = 10_000) -> None:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive integer, got {timeout_ms!r}")
        self.timeout_ms = timeout_ms

    async def dispose(self, agent: object) -> None:
        for name in _CLOSE_METHODS:
            method = getattr(agent, name, None)
            if callable(method):
                async with asyncio.timeout(self.timeout_ms / 1000):
                    result = method()
                    if inspect.isawaitable(result):
                        await result
                return
