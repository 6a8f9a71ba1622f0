"""Refresh-ahead: a hit in the refresh window at the end of an entry's life rebuilds it in the
background, so that a busy agent is replaced before it expires instead of making a request
wait for a build.

The entry's own ``rebuild()`` runs outside the agent's turn (reads never wait for it);
only the install takes the turn. At most one refresh is tried per generation. A write on
the id that arrives meanwhile (``on_invalidate``, ``shadow_seed``, ``evict``) supersedes
it: its seed is discarded and its agent disposed. Reads that find the entry already
expired wait for the refresh as they would for a build.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Generic, TypeVar, final

from ._binding import _Binding
from ._cache import _Cache
from ._calls import _UserCalls
from ._generation import _Generation, _IdleGeneration
from ._keyed import _KeyedTurns
from ._seed import RuntimeSeed, check_seed
from ._stats import RemovalCause, _StatsCounter

R = TypeVar("R")
A = TypeVar("A")

# Removals after which a refresh in flight may still install: expiry (reads that find the
# entry expired wait for the refresh), capacity (only for reads that wait), and its own.
_KEEPS_REFRESH = frozenset((RemovalCause.EXPIRED, RemovalCause.CAPACITY, RemovalCause.REFRESHED))


@final
class _Refresh(Generic[R, A]):
    """One refresh in flight: the generation it refreshes, its task, the reads waiting."""

    __slots__ = ("discards", "gen", "owner", "superseded", "task", "waiters")

    def __init__(self, gen: _Generation[R, A]) -> None:
        self.gen = gen
        self.superseded = False  # a write on the id arrived: the result will be discarded
        self.task: asyncio.Task[None] | None = None
        self.owner: asyncio.Task[Any] | None = None  # the task running its rebuild()
        self.waiters: list[asyncio.Future[None]] = []  # reads that found the entry expired
        self.discards: set[str] = set()  # users evicted meanwhile (evict_user)


@final
class _Refreshes(Generic[R, A]):
    """Starting, running, installing and joining refreshes; owns the refreshes in flight."""

    def __init__(
        self,
        cache: _Cache[R, A],
        turns: _KeyedTurns,
        calls: _UserCalls,
        binding: _Binding,
        stats: _StatsCounter,
        log: logging.Logger,
        *,
        enabled: bool,
    ) -> None:
        self._cache = cache
        self._turns = turns
        self._queues = turns.queues
        self._calls = calls
        self._binding = binding
        self._stats = stats
        self._log = log
        self._now = cache.now
        self._current = cache.current
        self._in_flight: dict[str, _Refresh[R, A]] = {}  # by agent id
        if enabled:  # (off: no refresh ever starts, so no removal concerns one)
            cache.observe_removals(self._removed)

    def __bool__(self) -> bool:
        """Whether any refresh is in flight (the read paths' one test before the rest)."""
        return bool(self._in_flight)

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The refreshes in flight, for close to cancel."""
        return [r.task for r in self._in_flight.values() if r.task is not None]

    def supersede(self, agent_id: str) -> None:
        """A write on ``agent_id`` arrived: a refresh in flight for it must not install."""
        refresh = self._in_flight.get(agent_id)
        if refresh is not None:
            refresh.superseded = True

    def _removed(self, agent_id: str, cause: RemovalCause) -> None:
        """The cache's removal observer: removed on purpose, the entry must not come back."""
        if self._in_flight and cause not in _KEEPS_REFRESH:
            self.supersede(agent_id)

    def discard_user(self, user_id: str) -> None:
        """``evict_user`` ran: a refresh in flight must not install a seed of that user."""
        for refresh in self._in_flight.values():
            refresh.discards.add(user_id)

    def maybe_refresh(self, gen: _Generation[R, A]) -> None:
        """A hit on ``gen`` (pinned by the caller): start its refresh if the window is open.

        Not while something is in flight for the id (that operation decides what is
        cached; a later hit in the window tries again).
        """
        refresh_at = gen.refresh_at
        if not refresh_at or self._now() < refresh_at:
            return
        agent_id = gen._agent_id
        if agent_id in self._queues or agent_id in self._in_flight or self._binding.closed:
            return
        gen.refresh_at = 0  # one attempt per generation
        gen.expires_at = gen.deadline  # its later hits are plain hits again
        if type(gen) is _IdleGeneration:  # pinned: idle expiry's bound is while in use
            self._cache.cause(gen, self._now())
        refresh: _Refresh[R, A] = _Refresh(gen)
        self._in_flight[agent_id] = refresh
        self._stats.refreshes += 1
        refresh.task = self._binding.running_loop().create_task(self._run(refresh))

    async def _run(self, refresh: _Refresh[R, A]) -> None:
        gen = refresh.gen
        agent_id = gen._agent_id
        seed: object = None
        try:
            started_ms = self._cache.clock_ms()
            cost_ms: float | None = None
            try:
                seed = await self._calls.run(
                    "refresh", agent_id, gen.rebuild, refresh, keep=gen._agent
                )
                if seed is not None:
                    check_seed(seed, agent_id)
            except Exception as exc:
                self._stats.refresh_failures += 1
                self._cache.discard(agent_id, seed)  # a seed that failed the check
                self._log.warning(
                    "refresh of agent %r failed; the cached runtime is kept until it "
                    "expires: %r",
                    agent_id, exc, extra={"agent_id": agent_id},
                )
                return
            except BaseException:  # cancelled: the manager is closing
                self._stats.refresh_failures += 1
                raise
            finally:
                cost_ms = self._cache.learn_cost(agent_id, started_ms)
            assert seed is None or isinstance(seed, RuntimeSeed)
            if agent_id not in self._queues:  # nothing in flight: install at once
                self._refreshed(refresh, seed, cost_ms)
                return
            # Something is in flight for the id: install in its order, after it.
            turn = self._turns.enqueue(agent_id, self._binding.running_loop())
            try:
                await self._turns.wait_turn(agent_id, turn)
            except BaseException:
                self._cache.discard(agent_id, seed)
                raise
            try:
                self._refreshed(refresh, seed, cost_ms)
            finally:
                self._turns.leave(agent_id, turn)
        finally:
            if self._in_flight.get(agent_id) is refresh:
                del self._in_flight[agent_id]
            for waiter in refresh.waiters:
                if not waiter.done():
                    waiter.set_result(None)
            refresh.waiters.clear()


    def _refreshed(
        self, refresh: _Refresh[R, A], seed: RuntimeSeed[R, A] | None, cost_ms: float | None
    ) -> None:
        """Install (or discard) a refresh's outcome; called in the id's turn."""
        gen = refresh.gen
        agent_id = gen._agent_id
        current = self._current.get(agent_id)
        if (
            refresh.superseded
            or self._binding.closed
            or (current is not gen and (current is not None or not refresh.waiters))
            or (seed is not None and seed.user_id in refresh.discards)
        ):
            # A write or removal came meanwhile, or the entry left the map (capacity,
            # expiry) and no read is waiting for it, or its user was evicted: what is
            # cached now was decided after this refresh.
            self._log.debug("refresh of agent %r discarded: superseded", agent_id)
            self._cache.discard(agent_id, seed)
            return
        if seed is None:
            self._log.warning(
                "refresh of agent %r: rebuild() returned None; entry evicted", agent_id,
                extra={"agent_id": agent_id},
            )
            if current is gen:
                self._cache.detach(gen, RemovalCause.REFRESHED)
            return
        if seed.cfg_version < gen._cfg_version:
            self._stats.refresh_failures += 1
            self._log.warning(
                "refresh of agent %r returned version %d, older than the cached %d; the cached "
                "runtime is kept until it expires",
                agent_id, seed.cfg_version, gen._cfg_version,
                extra={"agent_id": agent_id, "cfg_version": gen._cfg_version},
            )
            self._cache.discard(agent_id, seed)
            return
        now = self._now()
        ended = None if current is None else self._cache.cause(gen, now)
        # expired or idle: still in the map only because it is pinned
        cause = RemovalCause.REFRESHED if ended is None else ended
        self._cache.install(seed, cause, now, build_ms=cost_ms)

    async def join(self, agent_id: str) -> bool:
        """A read that finds ``agent_id``'s entry expired or gone while its refresh runs
        waits for the refresh, as it would for a build. Returns whether it waited."""
        refresh = self._in_flight.get(agent_id)
        if refresh is None or refresh.superseded:
            return False
        gen = self._current.get(agent_id)
        if gen is not None and self._cache.is_live(gen, self._now()):
            return False  # live: served as it is
        if refresh.owner is not None and refresh.owner is asyncio.current_task(self._binding.loop):
            raise RuntimeError(
                f"a refresh of agent {agent_id!r} called back into the manager for the same "
                "agent id after it expired; that would wait on itself"
            )
        waiter: asyncio.Future[None] = self._binding.running_loop().create_future()
        refresh.waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in refresh.waiters:
                refresh.waiters.remove(waiter)
        self._binding.refuse_if_closed()
        return True
