"""The subscriber's side of loss detection and propagation lag: the glue between the receive
loop, the gap tracker (``_gaps``), the lag histogram (``_lag``) and the reconciler."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import final

from ._gaps import GapTracker
from ._lag import LagHistogram
from ._wire import InvalidationMessage


@final
class LossWatch:
    """Feeds outbox ids to the tracker, wakes the reconciler when a gap is given up, and
    records each applied message's lag on ``wall_clock`` (seconds since the epoch)."""

    def __init__(
        self, tolerance_messages: int, tolerance_ms: int, wall_clock: Callable[[], float]
    ) -> None:
        self.gaps: GapTracker | None = None  # loss detection off (0 ms, or no version source)
        if tolerance_ms > 0:
            self.gaps = GapTracker(
                tolerance_messages=tolerance_messages, tolerance_s=tolerance_ms / 1000
            )
        self.lag = LagHistogram()
        self._wall_clock = wall_clock
        self._due = asyncio.Event()  # the tracker asks for a reconciliation now
        self.gap_reconciliations = 0  # completed

    def applied(self, message: InvalidationMessage) -> None:
        """A message's manager call returned: record its lag, if it says when it was sent."""
        if message.processed_at is not None:
            self.lag.record(message.processed_at, self._wall_clock())

    def observe(self, outbox_id: int) -> None:
        assert self.gaps is not None
        self.gaps.observe(outbox_id, asyncio.get_running_loop().time())

    def poll(self, now: float) -> None:
        """Give up gaps past the tolerance; wake the reconciler when one is due."""
        if self.gaps is not None and self.gaps.poll(now):
            self._due.set()

    def reset(self) -> None:
        """A new connection: its resync covers whatever the previous one lost."""
        if self.gaps is not None:
            self.gaps.reset()
        self._due.clear()

    async def next_reconciliation(self, interval_s: float) -> bool:
        """Wait ``interval_s`` (``False``; 0 waits for a gap only) or until a gap was given
        up (``True``)."""
        try:
            async with asyncio.timeout(interval_s or None):
                await self._due.wait()
        except TimeoutError:
            return False
        self._due.clear()
        return True
