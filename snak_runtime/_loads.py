"""Single-flight loads: one build per agent id for every lease that misses meanwhile.

A load holds its agent id's turn while it builds, installs the seed and pins the new
generation for each waiter before waking it. The counting rules live here: a waiter is
counted once, when it leaves the load (a miss, or a denial when the built entry is not
its user's), whether it is resolved, failed or cancelled; each waiter's pin is taken by
the cache's ``pin_waiter``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import Any, Generic, TypeVar, final

from ._binding import _Binding
from ._cache import _Cache
from ._calls import _UserCalls
from ._errors import RuntimeManagerClosed, RuntimeNotCached
from ._generation import _Generation
from ._keyed import _KeyedTurns, _Turn, discarded
from ._seed import Build, RuntimeSeed, check_seed
from ._stats import RemovalCause, _StatsCounter

R = TypeVar("R")
A = TypeVar("A")


@final
class _Load(Generic[R, A]):
    """One single-flight build: a task, the turn it holds, the leases waiting on it.

    ``_Loads`` maps an agent id to its latest load; the load whose turn is the
    tail of that id's queue is the one a newcomer joins.
    """

    __slots__ = ("abandoned", "agent_id", "build", "build_ms", "task", "turn", "waiters")

    def __init__(self, agent_id: str, build: Build[R, A], turn: _Turn) -> None:
        self.abandoned = False  # its last waiter left and cancelled it: nobody may join it
        self.agent_id = agent_id
        self.build = build
        self.turn = turn
        self.waiters: list[tuple[str | None, asyncio.Future[_Generation[R, A]]]] = []
        self.task: asyncio.Task[None] | None = None
        self.build_ms: float | None = None  # how long the build took, once it ended


@final
class _Loads(Generic[R, A]):
    """Starting, joining and running single-flight loads; owns the loads in flight."""

    def __init__(
        self,
        cache: _Cache[R, A],
        turns: _KeyedTurns,
        calls: _UserCalls,
        binding: _Binding,
        stats: _StatsCounter,
        log: logging.Logger,
    ) -> None:
        self._cache = cache
        self._turns = turns
        self._calls = calls
        self._binding = binding
        self._stats = stats
        self._log = log
        self._in_flight: dict[str, _Load[R, A]] = {}  # the latest load of each agent id

    def get(self, agent_id: str) -> _Load[R, A] | None:
        """The latest load of ``agent_id`` in flight, if any."""
        return self._in_flight.get(agent_id)

    def agent_ids(self) -> list[str]:
        """The agent ids with a load in flight (what they install is not known yet)."""
        return list(self._in_flight)

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The loads in flight, for close to cancel."""
        return [load.task for load in self._in_flight.values() if load.task is not None]

    # departure: the original had no loader; every caller that missed built its own runtime.
    def start(self, agent_id: str, build: Build[R, A]) -> _Load[R, A]:
        turn = self._turns.enqueue(agent_id, self._binding.running_loop())
        load: _Load[R, A] = _Load(agent_id, build, turn)
        self._in_flight[agent_id] = load
        load.task = self._binding.running_loop().create_task(self._run_load(load))
        return load

    def joinable(self, load: _Load[R, A], build: Build[R, A]) -> _Load[R, A]:
        """``load``, unless its last waiter just left and cancelled it (it has not ended yet):
        then a fresh load queued behind it, so that a newcomer never inherits a
        cancellation it did not ask for (issue 9)."""
        if load.abandoned:
            return self.start(load.agent_id, build)
        return load

    async def join(self, load: _Load[R, A], user_id: str | None) -> _Generation[R, A]:
        """Wait for ``load``; it pins the generation for this waiter before waking it.

        The waiter is counted when it leaves the load: a miss (resolved, failed or
        cancelled), or a denial when the built entry is another user's.
        """
        fut: asyncio.Future[_Generation[R, A]] = self._binding.running_loop().create_future()
        entry = (user_id, fut)
        load.waiters.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                if entry in load.waiters:
                    load.waiters.remove(entry)
                    self._stats.misses += 1
                if not load.waiters and load.task is not None and not load.task.done():
                    load.abandoned = True
                    load.task.cancel()  # nobody wants the result any more
            elif fut.exception() is None:
                gen = fut.result()  # pinned for us just as we were cancelled
                gen.lease_pins -= 1
                self._cache.unpinned(gen)
            raise

    async def _run_load(self, load: _Load[R, A]) -> None:
        agent_id, turn = load.agent_id, load.turn
        held = False
        try:
            await self._turns.wait_turn(agent_id, turn)
            held = True
            if self._binding.closed:
                raise RuntimeManagerClosed("the runtime manager is closed")
            gen = self._cache.live(agent_id)
            if gen is None:
                turn.discards = None  # only an evict_user from now on concerns this build
                seed = await self._call_build(load)
                if discarded(turn, seed):
                    # evict_user ran for its user meanwhile: made with what that revoked
                    self._cache.discard(agent_id, seed)
                    raise RuntimeNotCached(agent_id, "its user's runtimes were evicted meanwhile")
                # what is left under this id, if anything, is an expired pinned entry
                gen = self._cache.install(seed, RemovalCause.EXPIRED, build_ms=load.build_ms)
            self._resolve_waiters(load, gen)
        except BaseException as exc:
            failure = (
                RuntimeManagerClosed("the runtime manager closed during the build")
                if self._binding.closed
                else exc
            )
            for _, fut in load.waiters:
                if not fut.done():
                    self._stats.misses += 1
                    if isinstance(failure, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(failure)
            load.waiters.clear()
            if not isinstance(failure, Exception):
                raise
        finally:
            if self._in_flight.get(agent_id) is load:
                del self._in_flight[agent_id]
            turn.owner = None
            if held:
                self._turns.leave(agent_id, turn)

    async def _call_build(self, load: _Load[R, A]) -> RuntimeSeed[R, A]:
        agent_id = load.agent_id
        self._stats.loads += 1
        started = time.perf_counter()
        started_ms = self._cache.clock_ms()
        try:
            seed = await self._calls.run(
                "build", agent_id, partial(load.build, agent_id), load.turn
            )
        except BaseException as exc:
            self._stats.load_failures += 1
            self._log.warning(
                "build of agent %r failed: %r", agent_id, exc, extra={"agent_id": agent_id}
            )
            raise
        finally:
            self._stats.record_load_time((time.perf_counter() - started) * 1000)
            load.build_ms = self._cache.learn_cost(agent_id, started_ms)
        if seed is None:
            self._stats.load_failures += 1
            raise RuntimeNotCached(agent_id, "the builder returned None")
        try:
            check_seed(seed, agent_id)
        except (TypeError, ValueError):
            self._stats.load_failures += 1
            self._cache.discard(agent_id, seed)
            raise
        return seed

    def _resolve_waiters(self, load: _Load[R, A], gen: _Generation[R, A]) -> None:
        stats = self._stats
        for user_id, fut in load.waiters:
            if fut.done():
                continue
            if user_id is not None and user_id != gen._user_id:
                stats.denied += 1
                fut.set_exception(RuntimeNotCached(load.agent_id))
                continue
            stats.misses += 1
            self._cache.pin_waiter(gen)
            fut.set_result(gen)
        load.waiters.clear()
