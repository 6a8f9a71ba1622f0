"""Lifecycle: the expiry sweeper, and close (refuse new work, cancel what is in flight,
drain pins, dispose the rest).

Close asks each part that runs tasks for them (``tasks()``) instead of reaching into its
dictionaries; the cache part removes its entries and says when the last pin is gone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol, final

from ._binding import _Binding
from ._cache import _Cache
from ._disposal import _Disposals

# The sweeper yields to the loop after each batch of this size.
_SWEEP_BATCH = 1024


class _InFlight(Protocol):
    """A part that runs tasks of its own (loads, refreshes, rebuilds)."""

    def tasks(self) -> list[asyncio.Task[Any]]: ...


@final
class _Lifecycle:
    """The sweeper, close and drain."""

    def __init__(
        self,
        binding: _Binding,
        cache: _Cache[Any, Any],
        disposals: _Disposals,
        in_flight: Sequence[_InFlight],
        *,
        sweep_interval_s: float,
        cancel_bound_s: float,
        log: logging.Logger,
    ) -> None:
        self._binding = binding
        self._cache = cache
        self._disposals = disposals
        self._in_flight = tuple(in_flight)
        self._sweep_interval_s = sweep_interval_s
        self._cancel_bound_s = cancel_bound_s  # how long a cancelled task may take to end
        self._log = log
        self._sweeper: asyncio.Task[None] | None = None
        self._close_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the sweeper (idempotent); the caller checked the loop."""
        # departure: the original pruned expired entries only when traffic came by.
        if self._sweeper is None:
            self._sweeper = self._binding.running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                while self._cache.pop_expired(_SWEEP_BATCH) == _SWEEP_BATCH:
                    await asyncio.sleep(0)  # a burst of expiries must not stall the loop
            except Exception:
                self._log.exception("expiry sweep failed")

    def close(self, grace_ms: int) -> asyncio.Task[None]:
        """Refuse new work from now on and return the task that closes (the first call
        starts it: refuse, dispose what is idle, let pins drain for ``grace_ms``, dispose
        the rest, wait for every disposal)."""
        # departure: the original had no shutdown; its cached agents were never disposed.
        if self._close_task is None:
            self._binding.close()
            self._close_task = self._binding.running_loop().create_task(self._close(grace_ms))
        return self._close_task

    async def _close(self, grace_ms: int) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        in_flight = [task for part in self._in_flight for task in part.tasks()]
        for task in in_flight:
            task.cancel()
        if in_flight:
            # Each ends within the grace its user code gets once cancelled (see _calls);
            # bounded here too, so that close never waits on user code beyond its bound.
            await asyncio.wait(in_flight, timeout=self._cancel_bound_s)
            for task in in_flight:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: what it raised is its callers' business
        drained = self._cache.shut()
        if drained is not None:
            try:
                async with asyncio.timeout(grace_ms / 1000):
                    await drained.wait()
            except TimeoutError:
                leftover = self._cache.finish_pinned()
                self._log.warning(
                    "%d pinned agent runtime(s) still in use after %d ms; disposing them: %s",
                    len(leftover), grace_ms, ", ".join(repr(a) for a in leftover),
                    extra={"agent_ids": leftover},
                )
        self._disposals.force()
        await self._disposals.wait()
