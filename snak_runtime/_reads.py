"""The slow read path: reads that are not a plain hit (an operation in flight for the id,
a miss, an expired entry, another user's entry). The facade's hot path hands these over."""

from __future__ import annotations

from typing import Generic, TypeVar, final

from ._binding import _Binding
from ._cache import _Cache, _Denied
from ._errors import RuntimeNotCached
from ._generation import _Generation
from ._keyed import _KeyedTurns
from ._loads import _Loads
from ._refresh import _Refreshes
from ._seed import Build
from ._stats import _StatsCounter

R = TypeVar("R")
A = TypeVar("A")


@final
class _SlowReads(Generic[R, A]):
    """Everything of acquire and lease that the inline hot path hands over."""

    def __init__(
        self,
        cache: _Cache[R, A],
        turns: _KeyedTurns,
        loads: _Loads[R, A],
        refreshes: _Refreshes[R, A],
        binding: _Binding,
        stats: _StatsCounter,
        *,
        stale_reads: bool,
    ) -> None:
        self._cache = cache
        self._current = cache.current
        self._now = cache.now
        self._turns = turns
        self._queues = turns.queues
        self._loads = loads
        self._refreshes = refreshes
        self._binding = binding
        self._stats = stats
        self._stale_reads = stale_reads  # reads are served the cached entry while rebuilding

    async def acquire(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """An acquire that is not a plain hit: wait in line (or join a refresh), count the
        hit, miss or denial, and start a refresh if the hit is in its window."""
        if agent_id in self._queues:
            # before the stale-serving test: a rebuild reading its own id gets the error
            # contract §6 promises, not the runtime it is replacing (issue 23)
            self._turns.check_reentry(agent_id, self._binding.loop)
            if self._must_wait(agent_id):
                await self._wait_in_line(agent_id)
        if self._refreshes and await self._refreshes.join(agent_id):
            if agent_id in self._queues:  # something else started meanwhile: as any read
                return await self.acquire(agent_id, user_id)
            try:
                gen = self._joined(agent_id, user_id)
            except _Denied:
                return None
            self._stats.misses += 1
            if gen is not None:
                self._cache.pin_waiter(gen, loose=True)
            return gen
        try:
            gen = self._cache.hit(agent_id, user_id)
        except _Denied:
            return None
        if gen is not None:
            gen.loose_pins += 1
            self._refreshes.maybe_refresh(gen)
        return gen

    def _must_wait(self, agent_id: str) -> bool:
        """Whether a read must wait for what is in flight for ``agent_id``: always, unless
        stale reads are on and only invalidations are in flight and the entry is
        live (it is then the generation current when their rebuild started)."""
        if not self._stale_reads or not self._turns.readers_may_skip(agent_id):
            return True
        gen = self._current.get(agent_id)
        return gen is None or not self._cache.is_live(gen, self._now())

    def _joined(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """What a read that waited for a refresh finds (the caller counts it as a miss, as
        a load's waiter is, and pins it); another user's entry is counted as a denial."""
        gen = self._cache.live(agent_id)
        if gen is not None and user_id is not None and user_id != gen._user_id:
            self._stats.denied += 1
            raise _Denied
        return gen

    async def lease(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """Everything but the plain hit (which ``_LeaseContext.__aenter__`` does inline)."""
        self._binding.check_loop()
        if agent_id in self._queues:
            # also when a stale entry could be served
            self._turns.check_reentry(agent_id, self._binding.loop)
        if agent_id in self._queues and self._must_wait(agent_id):
            # Something is in flight for this id: join a load at the tail, or wait in line.
            tail = self._turns.tail(agent_id)
            load = self._loads.get(agent_id)
            if build is not None and load is not None and load.turn is tail:
                return await self._loads.join(self._loads.joinable(load, build), user_id)
            await self._turns.wait_for_tail(agent_id, self._binding.running_loop())
            self._binding.refuse_if_closed()
            load = self._loads.get(agent_id)
            if load is not None and build is not None:
                return await self._loads.join(self._loads.joinable(load, build), user_id)
        try:
            gen = self._cache.lookup(agent_id, user_id)
        except _Denied:
            raise RuntimeNotCached(agent_id) from None
        if gen is not None:
            gen.lease_pins += 1
            self._refreshes.maybe_refresh(gen)
            return gen
        if self._refreshes and await self._refreshes.join(agent_id):
            if agent_id in self._queues:  # something else started meanwhile: as any read
                return await self.lease(agent_id, user_id, build)
            try:
                gen = self._joined(agent_id, user_id)
            except _Denied:
                raise RuntimeNotCached(agent_id) from None
            if gen is not None:
                self._stats.misses += 1
                self._cache.pin_waiter(gen)
                return gen
        return await self._lease_miss(agent_id, user_id, build)

    async def _lease_miss(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """A lease found nothing: load it (the load counts its miss), or count it and raise."""
        if build is None:
            self._stats.misses += 1
            raise RuntimeNotCached(agent_id)
        return await self._loads.join(self._loads.start(agent_id, build), user_id)

    async def _wait_in_line(self, agent_id: str) -> None:
        """A read that arrives while an operation is in flight sees that operation's result."""
        self._turns.check_reentry(agent_id, self._binding.loop)
        await self._turns.wait_for_tail(agent_id, self._binding.running_loop())
        self._binding.refuse_if_closed()
