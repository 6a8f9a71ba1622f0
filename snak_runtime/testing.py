"""Test helpers for users of snak_runtime: a clock you move by hand, a disposer that records."""

from __future__ import annotations

import asyncio
from typing import final


@final
class FakeClock:
    """A ``Clock`` that only moves when told to (``advance``/``set``)."""

    __slots__ = ("_now_ms",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance by {ms})")
        self._now_ms += ms

    def set(self, ms: int) -> None:
        if ms < self._now_ms:
            raise ValueError(f"a monotonic clock cannot go back (from {self._now_ms} to {ms})")
        self._now_ms = ms


@final
class RecordingDisposer:
    """A ``Disposer`` that records every agent it is asked to dispose, in order."""

    def __init__(self) -> None:
        self.disposed: list[object] = []
        self.event = asyncio.Event()

    async def dispose(self, agent: object) -> None:
        self.disposed.append(agent)
        self.event.set()

    def count(self, agent: object) -> int:
        """How many times ``agent`` (by identity) was disposed."""
        return sum(1 for a in self.disposed if a is agent)
