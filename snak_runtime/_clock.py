"""Clock provider: monotonic milliseconds, injectable so tests can move time."""

from __future__ import annotations

import time
from typing import Protocol, final, runtime_checkable


@runtime_checkable
class Clock(Protocol):
    """Anything with ``now_ms()`` returning monotonic integer milliseconds."""

    def now_ms(self) -> int: ...


# departure: the original read the wall clock (Date.now()), which can jump.
@final
class MonotonicClock:
    """The default clock: ``time.monotonic_ns`` in whole milliseconds (never jumps back)."""

    __slots__ = ()

    def now_ms(self) -> int:
        return time.monotonic_ns() // 1_000_000
