"""Writes: shadow_seed, on_invalidate (with its rebuild), evict and evict_all, each in its
agent id's turn, and the checks on the seeds that builds and rebuilds return."""

from __future__ import annotations

import asyncio
import time
from typing import TypeVar

from . import _operators
from ._errors import RuntimeManagerClosed
from ._keyed import _Turn
from ._lifecycle import _Lifecycle
from ._operators import Predicate, check_id, discarded
from ._seed import RuntimeSeed
from ._stats import RemovalCause
from ._store import _Generation

R = TypeVar("R")
A = TypeVar("A")


class _Writes(_Lifecycle[R, A]):
    """The writes of the public API, serialized per agent id."""

    async def shadow_seed(self, seed: RuntimeSeed[R, A]) -> None:
        """Prime the cache with ``seed`` without serving from it.

        Same version as the live entry: refreshed in place (expiry restarted, marked most
        recently used). Older than the live entry: ignored, the seed's agent stays yours.
        Otherwise (absent, expired, newer): installed as a new generation.
        """
        self._check_seed(seed, None)
        agent_id = seed.agent_id
        turn = await self._enter(agent_id)
        try:
            if turn is not None and discarded(turn, seed):
                # evict_user ran for its user while it waited: nothing made before that call
                # is handed out, and nobody else holds this agent for the caller
                self._discard_seed(agent_id, seed)
                return
            now = self._now()
            old = self._current.get(agent_id)
            if old is None:
                cause: RemovalCause | None = RemovalCause.REPLACED
            elif now >= old.expires_at and (ended := self._store.cause(old, now)) is not None:
                cause = ended  # expired, or idle
            elif seed.cfg_version == old.cfg_version:
                # departure: the original dropped a replaced agent undisposed; the superseded
                # generation is detached here, so its agent is disposed after its last pin.
                cause = None  # refresh: same generation as far as anyone can tell
            elif seed.cfg_version > old.cfg_version:
                cause = RemovalCause.REPLACED
            else:
                # departure: the original let a stale seed overwrite a newer runtime.
                self._log.debug(
                    "shadow_seed for agent %r ignored: version %d is older than cached %d",
                    agent_id, seed.cfg_version, old.cfg_version,
                )
                return
            gen = self._install(seed, cause, now)
            if cause is None and old is not None and old.ceiling > gen.ceiling:
                gen.ceiling = old.ceiling  # the same entry as far as anyone can tell
        finally:
            self._exit(agent_id, turn)

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        """Rebuild ``agent_id``'s entry for configuration ``cfg_version``.

        No entry, an expired one, or one already at ``cfg_version`` or newer: nothing is
        rebuilt. Otherwise the entry's ``rebuild()`` runs (bounded by ``build_timeout_ms``)
        and its seed replaces the entry; ``None`` evicts it; a failure, timeout or
        cancellation evicts it and is re-raised. Either way, once this returns or raises,
        no runtime older than ``cfg_version`` is handed out again.
        """
        if isinstance(cfg_version, bool) or not isinstance(cfg_version, int):
            raise TypeError(f"cfg_version must be an integer, got {cfg_version!r}")
        self._check_loop()
        self._stats.invalidations += 1
        # stale_while_rebuilding: reads are served the current generation meanwhile
        turn = await self._enter(
            agent_id, always_queue=True, stale_ok=self._stale_while_rebuilding
        )
        assert turn is not None
        try:
            gen = self._current.get(agent_id)
            if gen is None:
                self._log.debug("no cached runtime to invalidate for agent %r", agent_id)
                return
            now = self._now()
            if now >= gen.expires_at and (ended := self._store.cause(gen, now)) is not None:
                self._log.debug("cached runtime of agent %r already %s", agent_id, ended)
                self._store.detach(gen, ended)
                return
            if gen.ceiling >= cfg_version:
                # departure: duplicate or late events do not trigger rebuild storms, nor do
                # repeats of a version a rebuild was asked for and could not reach (a bogus
                # huge one silences the agent until its entry leaves: at most one TTL).
                self._log.debug(
                    "invalidation of agent %r to version %d ignored: cached version is %d, "
                    "versions up to %d were requested already",
                    agent_id, cfg_version, gen.cfg_version, gen.ceiling,
                )
                return
            await self._rebuild(gen, cfg_version, turn)
        finally:
            self._exit(agent_id, turn)

    async def _rebuild(self, gen: _Generation[R, A], cfg_version: int, turn: _Turn) -> None:
        agent_id = gen.agent_id
        self._stats.rebuilds += 1
        turn.discards = None  # only an evict_user from now on concerns this rebuild
        started = time.perf_counter()
        started_ms = self._clock.now_ms()
        cost_ms: float | None = None
        task = self._running_loop().create_task(
            self._calls.run("rebuild", agent_id, gen.rebuild, turn, keep=gen._agent)
        )
        self._rebuilds.add(task)
        try:
            seed = await task
            if seed is not None:
                self._check_seed(seed, agent_id)
        except BaseException as exc:
            self._stats.rebuild_failures += 1
            if task.done() and not task.cancelled() and task.exception() is None:
                # a seed that arrived just as we were cancelled, or one that failed the check
                self._discard_seed(agent_id, task.result())
            # departure: the original kept serving the runtime it knew to be stale.
            if gen.current:
                self._store.detach(gen, RemovalCause.INVALIDATED)
            current = asyncio.current_task(self._loop)
            if (
                isinstance(exc, asyncio.CancelledError)
                and self._closed
                and current is not None
                and not current.cancelling()
            ):
                raise RuntimeManagerClosed("closed during the rebuild") from None
            self._log.warning(
                "rebuild of agent %r for version %d failed; entry evicted: %r",
                agent_id, cfg_version, exc,
                extra={"agent_id": agent_id, "cfg_version": cfg_version},
            )
            raise
        finally:
            self._stats.record_rebuild_time((time.perf_counter() - started) * 1000)
            cost_ms = self._learn_cost(agent_id, started_ms)
            self._rebuilds.discard(task)
            turn.owner = None
        if seed is None:
            # departure: the original evicted without disposing.
            self._log.warning(
                "rebuild of agent %r for version %d returned None; entry evicted",
                agent_id, cfg_version,
                extra={"agent_id": agent_id, "cfg_version": cfg_version},
            )
            if gen.current:
                self._store.detach(gen, RemovalCause.INVALIDATED)
            return
        if seed.cfg_version < cfg_version:
            self._log.warning(
                "rebuilt runtime of agent %r has version %d, older than invalidation version "
                "%d; invalidations up to that version are ignored while it stays cached",
                agent_id, seed.cfg_version, cfg_version,
                extra={
                    "agent_id": agent_id,
                    "cfg_version": cfg_version,
                    "rebuilt_version": seed.cfg_version,
                },
            )
        if discarded(turn, seed):
            # evict_user ran for the seed's user meanwhile: made with what that revoked
            self._discard_seed(agent_id, seed)
            if gen.current:
                self._store.detach(gen, RemovalCause.INVALIDATED)
            return
        new = self._install(seed, RemovalCause.INVALIDATED, build_ms=cost_ms)
        # what was requested stays requested while the entry stays cached (CONTRACT §12)
        ceiling = max(cfg_version, gen.ceiling)
        if ceiling > new.ceiling:
            new.ceiling = ceiling

    async def evict(self, agent_id: str) -> bool:
        """Remove ``agent_id``'s entry whatever its version (disposal waits for its pins).

        This is how a deleted agent leaves. Returns whether an entry was removed.
        """
        # departure: the original had no way to drop an entry (cfg_deleted carries the old
        # version, which the version rule of on_invalidate would ignore).
        return await self._evict(agent_id, RemovalCause.EXPLICIT)

    async def _evict(self, agent_id: str, cause: RemovalCause) -> bool:
        turn = await self._enter(agent_id)
        try:
            gen = self._current.get(agent_id)
            if gen is None:
                return False
            self._store.detach(gen, cause)
            return True
        finally:
            self._exit(agent_id, turn)

    async def evict_all(self) -> int:
        """Evict every entry (each after whatever is in flight for it); return how many."""
        return await self._evict_all(RemovalCause.EXPLICIT)

    async def _evict_all(self, cause: RemovalCause) -> int:
        self._check_loop()
        removed = 0
        queued = []
        for agent_id in list(self._current):
            if agent_id in self._queues:
                queued.append(agent_id)
            elif agent_id in self._current:
                self._supersede_refresh(agent_id)
                self._store.detach(self._current[agent_id], cause)
                removed += 1
        queued.extend(k for k in list(self._queues) if k not in queued)
        results = await asyncio.gather(*(self._evict(k, cause) for k in queued))
        return removed + sum(results)

    def _resync_view(self) -> dict[str, int | None]:
        """For the invalidation subscriber's version check: each live entry's version, and
        ``None`` for an agent whose load is in flight (what it installs is not known yet)."""
        now = self._now()
        view: dict[str, int | None] = {
            a: g.cfg_version for a, g in self._current.items() if self._is_live(g, now)
        }
        view.update(dict.fromkeys(self._loads))
        return view

    async def evict_user(self, user_id: str) -> int:
        """Remove every entry of ``user_id`` (cause ``explicit``); return how many left.

        Pinned ones are disposed at their last release, as ``evict`` does. From the return
        on, nothing built before the call is handed out to anyone: a build or rebuild in
        flight that yields a runtime of this user is discarded and its agent disposed
        (the user's credentials may have been rotated). Costs that user's entries, not
        a scan of the cache.
        """
        check_id("user_id", user_id)
        self._check_loop()
        return _operators.evict_user(self, user_id)

    async def evict_where(self, predicate: Predicate) -> int:
        """Remove every live entry whose ``EntryInfo`` satisfies ``predicate`` (a plain
        function); cause ``explicit``; return how many left.

        The predicate runs over a whole ``snapshot()`` first: if it raises, nothing is
        removed and the error propagates. Visits every entry (O(n)).
        """
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        self._check_loop()
        return _operators.evict_where(self, predicate)

    async def _enter(
        self, agent_id: str, *, always_queue: bool = False, stale_ok: bool = False
    ) -> _Turn | None:
        """Take ``agent_id``'s turn for a write. Returns None when the write is synchronous
        and nothing was in flight (no queue needed)."""
        self._check_loop()
        if self._refreshes:
            self._supersede_refresh(agent_id)
        if agent_id not in self._queues and not always_queue:
            return None
        self._check_reentry(agent_id)
        turn = self._turns.enqueue(agent_id, self._running_loop(), stale_ok=stale_ok)
        await self._turns.wait_turn(agent_id, turn)
        if self._closed:
            self._turns.leave(agent_id, turn)
            raise RuntimeManagerClosed("the runtime manager is closed")
        return turn

    def _supersede_refresh(self, agent_id: str) -> None:
        """A write on ``agent_id`` arrived: a refresh in flight for it must not install."""
        refresh = self._refreshes.get(agent_id)
        if refresh is not None:
            refresh.superseded = True

    def _exit(self, agent_id: str, turn: _Turn | None) -> None:
        if turn is not None:
            self._turns.leave(agent_id, turn)

    def _discard_seed(self, agent_id: str, seed: object) -> None:
        """A build or rebuild made this seed for the manager, which will not install it:
        its agent has no other owner, so it is disposed (unless the cache holds it too)."""
        agent = getattr(seed, "agent", None) if isinstance(seed, RuntimeSeed) else None
        if agent is not None and not self._store.owns(agent):
            self._orphaned(agent_id, agent)

    def _check_seed(self, seed: object, agent_id: str | None) -> None:
        if not isinstance(seed, RuntimeSeed):
            raise TypeError(f"expected a RuntimeSeed, got {type(seed).__name__}")
        if agent_id is not None and seed.agent_id != agent_id:
            raise ValueError(
                f"a seed built for agent {agent_id!r} carries agent id {seed.agent_id!r}"
            )
