"""Writes: shadow_seed, on_invalidate (with its rebuild), evict, evict_all and evict_user,
each in its agent id's turn; owns the rebuilds in flight.

Other parts hear of writes through observers registered at construction: a write on an id
supersedes a refresh in flight for it (``on_write``), and ``evict_user`` marks every
operation in flight (``on_user_evicted``), so no part is called from here by name
(``on_write`` is None when no part needs it: refresh-ahead off).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

from . import _operators
from ._binding import _Binding
from ._cache import _Cache
from ._calls import _UserCalls
from ._errors import RuntimeManagerClosed
from ._generation import _Generation
from ._keyed import _KeyedTurns, _Turn, discarded
from ._operators import Predicate, check_id
from ._seed import RuntimeSeed, check_seed
from ._stats import RemovalCause, _StatsCounter

R = TypeVar("R")
A = TypeVar("A")

Observer = Callable[[str], None]

# The causes a caller may give evict and evict_all: its own, or the fleet's resync.
_EVICT_CAUSES = frozenset((RemovalCause.EXPLICIT, RemovalCause.RESYNC))


def evict_cause(cause: object) -> RemovalCause:
    """``cause`` as given to the public ``evict``/``evict_all`` (``explicit`` or ``resync``)."""
    if cause is RemovalCause.EXPLICIT or cause is RemovalCause.RESYNC:
        return cause  # (the common case: no Enum call, which costs as much as an evict)
    if cause not in _EVICT_CAUSES:
        raise ValueError(f"cause must be 'explicit' or 'resync', got {cause!r}")
    return RemovalCause(cause)  # type: ignore[arg-type]


@final
class _Writes(Generic[R, A]):
    """The writes of the public API, serialized per agent id."""

    def __init__(
        self,
        cache: _Cache[R, A],
        turns: _KeyedTurns,
        calls: _UserCalls,
        binding: _Binding,
        stats: _StatsCounter,
        log: logging.Logger,
        *,
        stale_reads: bool,
        on_write: Observer | None,
        on_user_evicted: Observer,
    ) -> None:
        self._cache = cache
        self._current = cache.current
        self._now = cache.now
        self._turns = turns
        self._queues = turns.queues
        self._calls = calls
        self._binding = binding
        self._stats = stats
        self._log = log
        self._stale_reads = stale_reads  # reads are served the cached entry while rebuilding
        self._on_write = on_write
        self._on_user_evicted = on_user_evicted
        self._rebuilds: set[asyncio.Task[Any]] = set()  # their turns hold the ids

    def tasks(self) -> list[asyncio.Task[Any]]:
        """The rebuilds in flight, for close to cancel."""
        return list(self._rebuilds)

    async def shadow_seed(self, seed: RuntimeSeed[R, A]) -> None:
        """Prime the cache with ``seed`` without serving from it.

        Same version as the live entry: refreshed in place (expiry restarted, marked most
        recently used). Older than the live entry: ignored, the seed's agent stays yours.
        Otherwise (absent, expired, newer): installed as a new generation.
        """
        check_seed(seed, None)
        agent_id = seed.agent_id
        turn = await self._enter(agent_id)
        try:
            if turn is not None and discarded(turn, seed):
                # evict_user ran for its user while it waited: nothing made before that call
                # is handed out, and nobody else holds this agent for the caller
                self._cache.discard(agent_id, seed)
                return
            now = self._now()
            old = self._current.get(agent_id)
            if old is None:
                cause: RemovalCause | None = RemovalCause.REPLACED
            elif now >= old.expires_at and (ended := self._cache.cause(old, now)) is not None:
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
            gen = self._cache.install(seed, cause, now)
            if cause is None and old is not None and old.ceiling > gen.ceiling:
                gen.ceiling = old.ceiling  # the same entry as far as anyone can tell
        finally:
            self._exit(agent_id, turn)

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        """Rebuild ``agent_id``'s entry for configuration ``cfg_version``.

        No entry, an expired one, or one already at ``cfg_version`` or newer: nothing is
        rebuilt. Otherwise the entry's ``rebuild()`` runs (bounded by the build timeout)
        and its seed replaces the entry; ``None`` evicts it; a failure, timeout or
        cancellation evicts it and is re-raised. Either way, once this returns or raises,
        no runtime older than ``cfg_version`` is handed out again.
        """
        if isinstance(cfg_version, bool) or not isinstance(cfg_version, int):
            raise TypeError(f"cfg_version must be an integer, got {cfg_version!r}")
        self._binding.check_loop()
        self._stats.invalidations += 1
        # stale reads: reads are served the current generation meanwhile
        turn = await self._enter(
            agent_id, always_queue=True, stale_ok=self._stale_reads
        )
        assert turn is not None
        try:
            gen = self._current.get(agent_id)
            if gen is None:
                self._log.debug("no cached runtime to invalidate for agent %r", agent_id)
                return
            now = self._now()
            if now >= gen.expires_at and (ended := self._cache.cause(gen, now)) is not None:
                self._log.debug("cached runtime of agent %r already %s", agent_id, ended)
                self._cache.detach(gen, ended)
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
        started_ms = self._cache.clock_ms()
        cost_ms: float | None = None
        task = self._binding.running_loop().create_task(
            self._calls.run("rebuild", agent_id, gen.rebuild, turn, keep=gen._agent)
        )
        self._rebuilds.add(task)
        try:
            seed = await task
            if seed is not None:
                check_seed(seed, agent_id)
        except BaseException as exc:
            self._stats.rebuild_failures += 1
            if task.done() and not task.cancelled() and task.exception() is None:
                # a seed that arrived just as we were cancelled, or one that failed the check
                self._cache.discard(agent_id, task.result())
            # departure: the original kept serving the runtime it knew to be stale.
            if gen.current:
                self._cache.detach(gen, RemovalCause.INVALIDATED)
            current = asyncio.current_task(self._binding.loop)
            if (
                isinstance(exc, asyncio.CancelledError)
                and self._binding.closed
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
            cost_ms = self._cache.learn_cost(agent_id, started_ms)
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
                self._cache.detach(gen, RemovalCause.INVALIDATED)
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
            self._cache.discard(agent_id, seed)
            if gen.current:
                self._cache.detach(gen, RemovalCause.INVALIDATED)
            return
        new = self._cache.install(seed, RemovalCause.INVALIDATED, build_ms=cost_ms)
        # what was requested stays requested while the entry stays cached (CONTRACT §12)
        ceiling = max(cfg_version, gen.ceiling)
        if ceiling > new.ceiling:
            new.ceiling = ceiling

    async def evict(self, agent_id: str, cause: RemovalCause) -> bool:
        """Remove ``agent_id``'s entry in its turn, whatever its version; return whether one
        was removed."""
        turn = await self._enter(agent_id)
        try:
            return self._cache.remove(agent_id, cause)
        finally:
            self._exit(agent_id, turn)

    async def evict_all(self, cause: RemovalCause) -> int:
        """Remove every entry, each after whatever is in flight for it; return how many."""
        self._binding.check_loop()
        removed = 0
        queued = []
        for agent_id in list(self._current):
            if agent_id in self._queues:
                queued.append(agent_id)
            elif agent_id in self._current:
                if self._on_write is not None:
                    self._on_write(agent_id)
                self._cache.detach(self._current[agent_id], cause)
                removed += 1
        queued.extend(k for k in list(self._queues) if k not in queued)
        results = await asyncio.gather(*(self.evict(k, cause) for k in queued))
        return removed + sum(results)

    async def _enter(
        self, agent_id: str, *, always_queue: bool = False, stale_ok: bool = False
    ) -> _Turn | None:
        """Take ``agent_id``'s turn for a write. Returns None when the write is synchronous
        and nothing was in flight (no queue needed)."""
        self._binding.check_loop()
        if self._on_write is not None:
            self._on_write(agent_id)
        if agent_id not in self._queues and not always_queue:
            return None
        self._turns.check_reentry(agent_id, self._binding.loop)
        turn = self._turns.enqueue(agent_id, self._binding.running_loop(), stale_ok=stale_ok)
        await self._turns.wait_turn(agent_id, turn)
        if self._binding.closed:
            self._turns.leave(agent_id, turn)
            raise RuntimeManagerClosed("the runtime manager is closed")
        return turn

    def _exit(self, agent_id: str, turn: _Turn | None) -> None:
        if turn is not None:
            self._turns.leave(agent_id, turn)

    def evict_where(self, predicate: Predicate) -> int:
        """Remove every live entry whose ``EntryInfo`` satisfies ``predicate`` (cause
        ``explicit``), chosen over a whole snapshot first; return how many left."""
        if not callable(predicate):
            raise TypeError(f"predicate must be callable, got {type(predicate).__name__}")
        self._binding.check_loop()
        chosen = _operators.chosen(self._cache, predicate)
        return self._cache.remove_each(chosen, RemovalCause.EXPLICIT)

    def evict_user(self, user_id: str) -> int:
        """Remove every entry of ``user_id`` now (cause ``explicit``; a pinned one's agent is
        disposed at its last release) and mark every operation in flight so that a seed of
        that user made before now is discarded, not installed. Returns how many entries
        left the map: that user's entries plus the operations in flight (the first call also
        builds the user index, one pass over the map, once per manager)."""
        check_id("user_id", user_id)
        self._binding.check_loop()
        removed = self._cache.remove_user(user_id)
        self._turns.discard_user(user_id)  # loads and writes hold turns
        self._on_user_evicted(user_id)  # refresh-ahead rebuilds in flight, likewise
        self._log.info(
            "evicted %d cached runtime(s) of user %r", removed, user_id,
            extra={"user_id": user_id, "removed": removed},
        )
        return removed
