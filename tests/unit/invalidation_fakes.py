"""A stand-in for redis-py's pub/sub, for driving the subscriber's listener without a server.

``bus = FakeBus(); monkeypatch.setattr(_subscriber, "make_client", bus.make_client)``: every
connection the listener opens reads the payloads pushed on ``bus``. Buffered payloads are
returned without suspending, as redis-py returns what is already in its socket buffer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any


class FakeBus:
    def __init__(self) -> None:
        self.payloads: deque[bytes | str] = deque()
        self.connections = 0
        self.closed = 0
        self._more = asyncio.Event()

    def push(self, *payloads: bytes | str) -> None:
        self.payloads.extend(payloads)
        self._more.set()

    def make_client(self, endpoint: object, *, timeout_s: float) -> Any:
        self.connections += 1
        return _Client(self)

    async def wait_for_more(self, timeout: float) -> None:
        self._more.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._more.wait()


class _PubSub:
    def __init__(self, bus: FakeBus) -> None:
        self._bus = bus
        self._replies: deque[dict[str, Any]] = deque()

    async def subscribe(self, channel: str) -> None:
        self._replies.append({"type": "subscribe", "channel": channel, "data": 1})

    async def ping(self) -> None:
        self._replies.append({"type": "pong", "data": b"PONG"})

    async def get_message(self, timeout: float) -> dict[str, Any] | None:
        if self._replies:
            return self._replies.popleft()
        if self._bus.payloads:
            return {"type": "message", "data": self._bus.payloads.popleft()}
        await self._bus.wait_for_more(timeout)  # nothing buffered: wait, as a socket read does
        return None

    async def aclose(self) -> None:
        self._bus.closed += 1


class _Client:
    def __init__(self, bus: FakeBus) -> None:
        self._bus = bus

    def pubsub(self) -> _PubSub:
        return _PubSub(self._bus)

    async def aclose(self) -> None:
        pass


class RecordingTarget:
    """An ``InvalidationTarget`` that records its calls (no manager)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        self.calls.append(("invalidate", agent_id, cfg_version))

    async def evict(self, agent_id: str) -> bool:
        self.calls.append(("evict", agent_id, None))
        return True

    async def evict_all(self) -> int:
        self.calls.append(("evict_all", "*", None))
        return 0
