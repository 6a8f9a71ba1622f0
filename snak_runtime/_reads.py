"""The slow read path: reads that are not a plain hit (an operation in flight for the id,
a miss, an expired entry, another user's entry), and releases of detached generations."""

from __future__ import annotations

from typing import TypeVar

from ._core import _Denied
from ._errors import RuntimeManagerClosed, RuntimeNotCached
from ._loads import _Loads
from ._seed import Build
from ._store import _Generation

R = TypeVar("R")
A = TypeVar("A")


class _SlowReads(_Loads[R, A]):
    """Everything of acquire, release and lease that the inline hot path hands over."""

    async def _acquire_slow(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """An acquire that is not a plain hit: wait in line, count the miss or denial."""
        if agent_id in self._queues:
            await self._wait_in_line(agent_id)
        try:
            gen = self._hit(agent_id, user_id)
        except _Denied:
            return None
        if gen is not None:
            gen.loose_pins += 1
        return gen

    def _release_slow(self, agent_id: str) -> None:
        gen = self._current.get(agent_id)
        # older generations of some id are still pinned: give back the oldest first
        for old in self._detached.get(agent_id, ()):
            if old.loose_pins:
                gen = old
                break
        if gen is None or not gen.loose_pins:
            self._log.debug("release(%r) with no pin outstanding: ignored", agent_id)
            return
        gen.loose_pins -= 1
        self._unpinned(gen)

    async def _lease_enter(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """Everything but the plain hit (which ``_LeaseContext.__aenter__`` does inline)."""
        self._check_loop()
        if agent_id not in self._queues:
            try:
                gen = self._lookup(agent_id, user_id)
            except _Denied:
                raise RuntimeNotCached(agent_id) from None
            if gen is not None:
                gen.lease_pins += 1
                return gen
            return await self._lease_miss(agent_id, user_id, build)
        # Something is in flight for this id: join a load at the tail, or wait in line.
        self._check_reentry(agent_id)
        tail = self._turns.tail(agent_id)
        load = self._loads.get(agent_id)
        if build is not None and load is not None and load.turn is tail:
            return await self._join_load(self._joinable(load, build), user_id)
        await self._turns.wait_for_tail(agent_id, self._running_loop())
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
        load = self._loads.get(agent_id)
        if load is not None and build is not None:
            return await self._join_load(self._joinable(load, build), user_id)
        try:
            gen = self._lookup(agent_id, user_id)
        except _Denied:
            raise RuntimeNotCached(agent_id) from None
        if gen is not None:
            gen.lease_pins += 1
            return gen
        return await self._lease_miss(agent_id, user_id, build)

    async def _lease_miss(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """A lease found nothing: load it (the load counts its miss), or count it and raise."""
        if build is None:
            self._stats.misses += 1
            raise RuntimeNotCached(agent_id)
        return await self._join_load(self._start_load(agent_id, build), user_id)

    async def _wait_in_line(self, agent_id: str) -> None:
        """A read that arrives while an operation is in flight sees that operation's result."""
        self._check_reentry(agent_id)
        await self._turns.wait_for_tail(agent_id, self._running_loop())
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
