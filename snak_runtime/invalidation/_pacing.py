"""The receive loop's pacing: when to yield to the event loop, and whether the server lives."""

from __future__ import annotations

import asyncio
from typing import Final, final

# The receive loop yields to the event loop after this many messages handled back to back, or
# this much time, whichever comes first: redis-py returns buffered messages without suspending,
# so a burst would otherwise run thousands of handlers without letting anything else run. Each
# message also starts its agent's job, run in the next loop round: 4 keeps a round well under
# 1 ms of work (benchmarks/flood.py: a 10 ms timer's p99 lag under a 100,000-message flood was
# 17-22 ms with 4, 27-29 ms with 8, 34-68 ms with 32, on a loaded 2-core machine under nice 19).
YIELD_EVERY: Final = 4
YIELD_AFTER_S: Final = 0.002


@final
class Breather:
    """Counts work since the receive loop last let the event loop run; says when it must."""

    __slots__ = ("_count", "_loop", "_until")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._count = 0
        self._until = loop.time() + YIELD_AFTER_S

    def rested(self) -> None:
        """The loop just suspended (a wait for data, or a yield)."""
        self._count, self._until = 0, self._loop.time() + YIELD_AFTER_S

    def due(self) -> bool:
        """One more message handled: is it time to yield?"""
        self._count += 1
        return self._count >= YIELD_EVERY or self._loop.time() >= self._until


@final
class Liveness:
    """Our own liveness check: a silent server is PINGed, and must answer in time.

    A server that stops answering (a frozen process, a half-open TCP connection) keeps the
    connection open; without this the process would stay deaf without knowing.
    """

    def __init__(self, interval_s: float, now: float) -> None:
        self._interval_s = interval_s
        self._quiet_until = now + interval_s  # silence after this: PING
        self._pong_by: float | None = None

    def heard(self, now: float) -> None:
        """Anything arrived: the server is alive."""
        self._quiet_until, self._pong_by = now + self._interval_s, None

    def ping_due(self, now: float) -> bool:
        """Silent for a whole interval; raises ``TimeoutError`` if a PING went unanswered."""
        if self._pong_by is not None:
            if now > self._pong_by:
                raise TimeoutError(f"no reply to PING within {self._interval_s}s")
            return False
        if now < self._quiet_until:
            return False
        self._pong_by = now + self._interval_s
        return True
