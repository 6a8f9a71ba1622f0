"""Refresh-ahead: a hit in the last ``refresh_ahead_ms`` of an entry's life rebuilds it in the
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
from typing import Any, Generic, TypeVar, final

from ._errors import RuntimeManagerClosed
from ._seed import RuntimeSeed
from ._stats import RemovalCause
from ._store import _Generation, _IdleGeneration
from ._writes import _Writes

R = TypeVar("R")
A = TypeVar("A")


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


class _Refreshes(_Writes[R, A]):
    """Starting, running, installing and joining refreshes."""

    def _maybe_refresh(self, gen: _Generation[R, A]) -> None:
        """A hit on ``gen`` (pinned by the caller): start its refresh if the window is open.

        Not while something is in flight for the id (that operation decides what is
        cached; a later hit in the window tries again).
        """
        refresh_at = gen.refresh_at
        if not refresh_at or self._now() < refresh_at:
            return
        agent_id = gen._agent_id
        if agent_id in self._queues or agent_id in self._refreshes or self._closed:
            return
        gen.refresh_at = 0  # one attempt per generation
        gen.expires_at = gen.deadline  # its later hits are plain hits again
        if type(gen) is _IdleGeneration:  # pinned: idle expiry's bound is while in use
            self._store.cause(gen, self._now())
        refresh: _Refresh[R, A] = _Refresh(gen)
        self._refreshes[agent_id] = refresh
        self._stats.refreshes += 1
        refresh.task = self._running_loop().create_task(self._run_refresh(refresh))

    async def _run_refresh(self, refresh: _Refresh[R, A]) -> None:
        gen = refresh.gen
        agent_id = gen._agent_id
        seed: object = None
        try:
            started_ms = self._clock.now_ms()
            cost_ms: float | None = None
            try:
                seed = await self._calls.run(
                    "refresh", agent_id, gen.rebuild, refresh, keep=gen._agent
                )
                if seed is not None:
                    self._check_seed(seed, agent_id)
            except Exception as exc:
                self._stats.refresh_failures += 1
                self._discard_seed(agent_id, seed)  # a seed that failed the check
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
                cost_ms = self._learn_cost(agent_id, started_ms)
            assert seed is None or isinstance(seed, RuntimeSeed)
            if agent_id not in self._queues:  # nothing in flight: install at once
                self._refreshed(refresh, seed, cost_ms)
                return
            # Something is in flight for the id: install in its order, after it.
            turn = self._turns.enqueue(agent_id, self._running_loop())
            try:
                await self._turns.wait_turn(agent_id, turn)
            except BaseException:
                self._discard_seed(agent_id, seed)
                raise
            try:
                self._refreshed(refresh, seed, cost_ms)
            finally:
                self._turns.leave(agent_id, turn)
        finally:
            if self._refreshes.get(agent_id) is refresh:
                del self._refreshes[agent_id]
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
            or self._closed
            or (current is not gen and (current is not None or not refresh.waiters))
            or (seed is not None and seed.user_id in refresh.discards)
        ):
            # A write or removal came meanwhile, or the entry left the map (capacity,
            # expiry) and no read is waiting for it, or its user was evicted: what is
            # cached now was decided after this refresh.
            self._log.debug("refresh of agent %r discarded: superseded", agent_id)
            self._discard_seed(agent_id, seed)
            return
        if seed is None:
            self._log.warning(
                "refresh of agent %r: rebuild() returned None; entry evicted", agent_id,
                extra={"agent_id": agent_id},
            )
            if current is gen:
                self._store.detach(gen, RemovalCause.REFRESHED)
            return
        if seed.cfg_version < gen._cfg_version:
            self._stats.refresh_failures += 1
            self._log.warning(
                "refresh of agent %r returned version %d, older than the cached %d; the cached "
                "runtime is kept until it expires",
                agent_id, seed.cfg_version, gen._cfg_version,
                extra={"agent_id": agent_id, "cfg_version": gen._cfg_version},
            )
            self._discard_seed(agent_id, seed)
            return
        now = self._now()
        ended = None if current is None else self._store.cause(gen, now)
        # expired or idle: still in the map only because it is pinned
        cause = RemovalCause.REFRESHED if ended is None else ended
        self._install(seed, cause, now, build_ms=cost_ms)

    async def _join_refresh(self, agent_id: str) -> bool:
        """A read that finds ``agent_id``'s entry expired or gone while its refresh runs
        waits for the refresh, as it would for a build. Returns whether it waited."""
        refresh = self._refreshes.get(agent_id)
        if refresh is None or refresh.superseded:
            return False
        gen = self._current.get(agent_id)
        if gen is not None and self._is_live(gen, self._now()):
            return False  # live: served as it is
        if refresh.owner is not None and refresh.owner is asyncio.current_task(self._loop):
            raise RuntimeError(
                f"a refresh of agent {agent_id!r} called back into the manager for the same "
                "agent id after it expired; that would wait on itself"
            )
        waiter: asyncio.Future[None] = self._running_loop().create_future()
        refresh.waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in refresh.waiters:
                refresh.waiters.remove(waiter)
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
        return True
