"""AgentRuntimeManager: the public facade over the parts (``_parts``: each owns its state,
see the README's "How it works"), and the hot path in one marked section. Each public
method forwards to one part.

The hot path (``acquire``, ``acquire_with_agent``, ``release``, ``lease`` and its context)
is written inline, without helper calls, because each call measurably slows it; it reads
plain facade attributes that alias part state that is never reassigned, and its copies of
the plain-hit rule are kept identical by tests/unit/test_hot_path_drift.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from random import Random
from threading import get_ident
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, final

from . import _operators
from ._cache import RemovalListener, _CacheRules
from ._clock import Clock, MonotonicClock
from ._config import (
    EVICTION_VAR,
    GuardConfig,
    LimitSettings,
    ResolvedLimits,
    environment_value,
    resolve_invalidation_mode,
    resolve_limits,
)
from ._disposal import DefaultDisposer, Disposer
from ._generation import _Generation
from ._info import EntryInfo
from ._operators import Predicate
from ._parts import _Parts, _Timings, ticks_per_ms
from ._policies import make_policy, resolve_eviction
from ._seed import AcquiredRuntime, Build, RuntimeLease, RuntimeSeed
from ._stats import CacheStats, RemovalCause
from ._writes import evict_cause

R = TypeVar("R")
A = TypeVar("A")

class AgentRuntimeManager(Generic[R, A]):
    """An in-process cache of live agent runtimes (``R``) and their agents (``A``).

    Entries are pinned while in use (``acquire``/``release`` or ``lease``), expire a fixed
    time after they were installed (shortened at random with ``ttl_jitter``, and earlier when
    unused for ``idle_ttl_ms``), are rebuilt on configuration invalidation and are
    disposed exactly once, never while pinned. Operations on one agent id run one at a
    time in arrival order; reads with nothing in flight never suspend.

    The invalidation package drives it through a public interface: ``on_invalidate``,
    ``evict(agent_id, cause=...)``, ``evict_all(cause=...)`` and ``resync_view()``
    (``snak_runtime.invalidation.ResyncTarget``).

    Not thread-safe: use one manager from one event loop (it binds to the first loop it
    runs on and raises ``RuntimeError`` on any other).
    """

    def __init__(
        self,
        *,
        guards: GuardConfig | None = None,
        settings: LimitSettings | None = None,
        clock: Clock | None = None,
        disposer: Disposer | None = None,
        logger: logging.Logger | None = None,
        build_timeout_ms: int | None = None,
        sweep_interval_ms: int | None = None,
        dispose_timeout_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        stale_while_rebuilding: bool | None = None,
        idle_ttl_ms: int | None = None,
        ttl_jitter: float | None = None,
        ttl_jitter_random: Random | None = None,
        eviction: str | None = None,
        max_entries_per_user: int | None = None,
        invalidation_mode: str | None = None,
    ) -> None:
        self._guards = guards if guards is not None else GuardConfig()
        # Keyword > environment (settings, else os.environ) > default; a guard caps each.
        self._limits = resolve_limits(
            self._guards,
            settings,
            build_timeout_ms=build_timeout_ms,
            sweep_interval_ms=sweep_interval_ms,
            dispose_timeout_ms=dispose_timeout_ms,
            refresh_ahead_ms=refresh_ahead_ms,
            stale_while_rebuilding=stale_while_rebuilding,
            idle_ttl_ms=idle_ttl_ms,
            ttl_jitter=ttl_jitter,
            max_entries_per_user=max_entries_per_user,
        )
        from_env = (environment_value(EVICTION_VAR) if settings is None
                    else getattr(settings, "eviction", None))
        self._eviction = resolve_eviction(eviction, EVICTION_VAR, from_env)
        self._invalidation_mode = resolve_invalidation_mode(invalidation_mode, settings)
        self._assemble(
            clock if clock is not None else MonotonicClock(),
            disposer if disposer is not None else DefaultDisposer(),
            logger,
            ttl_jitter_random if ttl_jitter_random is not None else Random(),
        )

    def _assemble(
        self, clock: Clock, disposer: Disposer, logger: logging.Logger | None, rand: Random
    ) -> None:
        """Make the parts (``_parts``); keep them, and the hot path's aliases of their state."""
        limits = self._limits  # the one place that reads the options for the parts
        rules = _CacheRules(
            max_entries=limits.max_entries, default_ttl_ms=limits.default_ttl_ms,
            max_ttl_ms=self._guards.max_ttl_ms, ticks_per_ms=ticks_per_ms(clock),
            idle_ms=limits.idle_ttl_ms, jitter=limits.ttl_jitter,
            refresh_window_ms=limits.refresh_ahead_ms, user_quota=limits.max_entries_per_user,
        )
        timings = _Timings(
            build_timeout_s=limits.build_timeout_ms / 1000,
            dispose_timeout_s=limits.dispose_timeout_ms / 1000,
            sweep_interval_s=limits.sweep_interval_ms / 1000,
            stale_reads=limits.stale_while_rebuilding, lazy=self._invalidation_mode == "lazy",
        )
        policy = make_policy(self._eviction, limits.max_entries)
        parts: _Parts[R, A] = _Parts(timings, rules, policy, clock, disposer, logger, rand)
        self._parts = parts  # every part; the facade's own references below
        self._disposer = disposer
        self._now = parts.now
        self._stats = parts.stats
        self._binding = parts.binding
        self._loop_ref: Any = parts.binding.ref  # the hot path's copy (see _gate)
        self._cache = cache = parts.cache
        # hot path aliases: part state that is never reassigned
        self._current, self._detached = cache.current, cache.detached
        self._idle, self._touch = cache.idle, cache.touch
        self._capacity = cache.capacity  # its slow_release: the release path's one test
        self._queues = parts.turns.queues
        self._writes = parts.writes
        self._reads = parts.reads

    # ------------------------------------------------------------------ properties

    @property
    def max_entries(self) -> int:
        return self._limits.max_entries

    @property
    def default_ttl_ms(self) -> int:
        return self._limits.default_ttl_ms

    @property
    def max_entries_per_user(self) -> int | None:
        """At most this many entries per user, beyond what pins hold (None: no quota)."""
        return self._limits.max_entries_per_user

    @property
    def idle_ttl_ms(self) -> int:
        """Idle expiry: an unpinned entry unused this long expires (0: off)."""
        return self._limits.idle_ttl_ms

    @property
    def ttl_jitter(self) -> float:
        """The largest fraction by which an install's TTL is shortened at random (0: off)."""
        return self._limits.ttl_jitter

    @property
    def eviction(self) -> str:
        """The eviction policy's name (``"adaptive"`` by default; ``"lru"``: the original)."""
        return self._eviction

    @property
    def invalidation_mode(self) -> str:  # "eager": rebuild at once; "lazy": at the next read
        return self._invalidation_mode

    @property
    def guards(self) -> GuardConfig:
        return self._guards

    @property
    def limits(self) -> ResolvedLimits:
        """The resolved limits, where each came from, and the warnings on the way."""
        return self._limits

    @property
    def refresh_ahead_ms(self) -> int:
        """The resolved refresh window (0: refresh-ahead off)."""
        return self._limits.refresh_ahead_ms

    @property
    def stale_while_rebuilding(self) -> bool:
        """Whether reads are served the cached generation while an invalidation rebuilds."""
        return self._limits.stale_while_rebuilding

    @property
    def closed(self) -> bool:
        return self._binding.closed

    @property
    def size(self) -> int:
        """Entries in the map (current generations, expired ones not yet removed included)."""
        return len(self._current)

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, agent_id: object) -> bool:
        """True for a live (unexpired) entry. Does not pin or reorder."""
        gen = self._current.get(agent_id) if isinstance(agent_id, str) else None
        return gen is not None and self._cache.is_live(gen, self._now())

    def version_of(self, agent_id: str) -> int | None:
        """The live entry's ``cfg_version``, or None. Does not pin or reorder."""
        gen = self._current.get(agent_id)
        if gen is None or not self._cache.is_live(gen, self._now()):
            return None
        return gen._cfg_version

    def peek(self, agent_id: str) -> EntryInfo | None:
        """The live entry of ``agent_id`` as a frozen ``EntryInfo``, or None.

        Does not pin, reorder or count a hit (an expired entry is left for the sweeper).
        Empty or non-string ids raise ``ValueError`` / ``TypeError``.
        """
        return _operators.peek(self._cache, agent_id)

    def snapshot(self) -> list[EntryInfo]:
        """Every live entry as a frozen ``EntryInfo``, next to be evicted first. Does not pin,
        reorder or count a hit. Visits every entry (O(n)): for operators and metrics scrapes,
        never for a request path."""
        return _operators.snapshot(self._cache)

    def agent_ids(self, user_id: str | None = None) -> list[str]:
        """The ids in the map (``user_id``: that user's), unordered, as a new list.

        Does not pin, reorder or count; expired entries not yet swept are included (``peek``
        tells which are live). A C-speed copy: the way to walk a large cache in pieces,
        yielding to the event loop between them, where ``snapshot()`` would hold it. An empty
        or non-string ``user_id`` raises ``ValueError`` / ``TypeError``.
        """
        return _operators.agent_ids(self._cache, user_id)

    # departure: the original promised hit/miss metrics in a comment and recorded none.
    def stats(self) -> CacheStats:
        return self._stats.snapshot(size=len(self._current), pinned=self._stats.pinned())

    def on_removal(self, callback: RemovalListener) -> Callable[[], None]:
        """Call ``callback(agent_id, cause)`` whenever a generation leaves the map; returns a
        function that unregisters it. A listener that raises is logged."""
        return self._cache.on_removal(callback)

    def resync_view(self) -> dict[str, int | None]:
        """For the fleet's versioned resync: each live entry's ``cfg_version``, and ``None``
        for an agent whose load is in flight (what it installs is not known yet). A copy;
        visits every entry (O(n))."""
        view: dict[str, int | None] = dict(self._cache.version_view())
        view.update(dict.fromkeys(self._parts.loads.agent_ids()))
        return view

    # ------------------------------------------------------------------ writes

    async def shadow_seed(self, seed: RuntimeSeed[R, A]) -> None:
        """Prime the cache with ``seed`` without serving from it.

        Same version as the live entry: refreshed in place (expiry restarted, marked most
        recently used). Older than the live entry: ignored, the seed's agent stays yours.
        Otherwise (absent, expired, newer): installed as a new generation.
        """
        await self._writes.shadow_seed(seed)

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        """Rebuild ``agent_id``'s entry for configuration ``cfg_version``.

        No entry, an expired one, or one already at ``cfg_version`` or newer: nothing is
        rebuilt. Otherwise the entry's ``rebuild()`` runs (bounded by ``build_timeout_ms``)
        and its seed replaces the entry; ``None`` evicts it; a failure, timeout or
        cancellation evicts it and is re-raised. Either way, once this returns or raises,
        no runtime older than ``cfg_version`` is handed out again (lazy: its next read rebuilds).
        """
        await self._writes.on_invalidate(agent_id, cfg_version)

    async def evict(self, agent_id: str, *, cause: RemovalCause = RemovalCause.EXPLICIT) -> bool:
        """Remove ``agent_id``'s entry whatever its version (disposal waits for its pins).

        This is how a deleted agent leaves. Returns whether an entry was removed.
        ``cause`` (reported to removal listeners and counted): ``explicit``, or ``resync``
        when the fleet's resync removes it.
        """
        # departure: the original had no way to drop an entry (cfg_deleted carries the old
        # version, which the version rule of on_invalidate would ignore).
        return await self._writes.evict(agent_id, evict_cause(cause))

    async def evict_all(self, *, cause: RemovalCause = RemovalCause.EXPLICIT) -> int:
        """Evict every entry (each after whatever is in flight for it); return how many.
        ``cause`` as for ``evict``."""
        return await self._writes.evict_all(evict_cause(cause))

    async def evict_user(self, user_id: str) -> int:
        """Remove every entry of ``user_id`` (cause ``explicit``); return how many left.

        Pinned ones are disposed at their last release, as ``evict`` does. From the return
        on, nothing built before the call is handed out to anyone: a build or rebuild in
        flight that yields a runtime of this user is discarded and its agent disposed
        (the user's credentials may have been rotated). Costs that user's entries, not
        a scan of the cache.
        """
        return self._writes.evict_user(user_id)

    async def evict_where(self, predicate: Predicate) -> int:
        """Remove every live entry whose ``EntryInfo`` satisfies ``predicate`` (a plain
        function); cause ``explicit``; return how many left.

        The predicate runs over a whole ``snapshot()`` first: if it raises, nothing is
        removed and the error propagates. Visits every entry (O(n)).
        """
        return self._writes.evict_where(predicate)

    # ------------------------------------------------------------------ lifecycle

    def _gate(self) -> None:
        """The hot path's slow loop check (``_Binding.gate``), then refresh its copy."""
        binding = self._binding
        binding.gate()
        self._loop_ref = binding.ref

    async def start(self) -> None:
        """Start the sweeper that disposes expired idle entries with no traffic. Idempotent."""
        self._binding.check_loop()
        self._parts.lifecycle.start()

    async def aclose(self, grace_ms: int = 30_000) -> None:
        """Refuse new work, dispose what is idle, let pins drain for ``grace_ms``, then
        dispose the rest and wait for every disposal. Idempotent."""
        closing = self._parts.lifecycle.close(grace_ms)
        self._loop_ref = self._binding.ref  # unbound by close: every read takes the gate
        await asyncio.shield(closing)

    async def wait_for_disposals(self) -> None:
        """Wait until every disposal scheduled so far has ended or been abandoned (after
        ``dispose_timeout_ms``); never raises what a disposer raised. Disposal never blocks
        a cache operation: tests and shutdown use this to see its outcome."""
        await self._parts.disposals.wait()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # ================================================================== HOT PATH
    # acquire, acquire_with_agent, release, lease and _LeaseContext below: inline copies of
    # the plain hit and the last release, measured (see the module docstring). Anything
    # that is not a plain hit goes to the slow reads part (which may await). Keep this section last.

    async def acquire(self, agent_id: str, *, user_id: str | None = None) -> R | None:
        """Pin and return the live runtime, or None (miss, expired, or not ``user_id``'s).

        Every successful call must be paired with one ``release(agent_id)``.
        """
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        gen = self._current.get(agent_id)
        if (
            gen is None
            or agent_id in self._queues
            or self._now() >= gen.expires_at
            or (user_id is not None and user_id != gen._user_id)
        ):
            gen = await self._reads.acquire(agent_id, user_id)
            return None if gen is None else gen._runtime
        gen.loose_pins += 1  # the plain hit, inline
        gen.hits += 1
        self._stats.hits += 1
        return gen._runtime

    async def acquire_with_agent(
        self, agent_id: str, *, user_id: str | None = None
    ) -> AcquiredRuntime[R, A] | None:
        """As ``acquire``, returning the runtime and its agent."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        gen = self._current.get(agent_id)
        if (
            gen is None
            or agent_id in self._queues
            or self._now() >= gen.expires_at
            or (user_id is not None and user_id != gen._user_id)
        ):
            return await self._reads.acquire(agent_id, user_id)
        gen.loose_pins += 1  # the plain hit, inline
        gen.hits += 1
        self._stats.hits += 1
        return gen

    def release(self, agent_id: str) -> None:
        """Give back one ``acquire`` pin of ``agent_id``, oldest generation first.

        Pins taken by ``lease`` are not touched: a lease releases its own. With no pin
        outstanding this is a no-op. Works after ``aclose()`` so pins can drain.
        """
        gen = self._current.get(agent_id)
        if gen is None or not gen.loose_pins or self._detached:
            self._cache.release_slow(agent_id)
            return
        # The common case of the cache's unpinned(), repeated inline: half of the hot path.
        gen.loose_pins -= 1
        self._stats.unpins += 1
        if gen.loose_pins or gen.lease_pins:
            return
        if self._now() < gen.expires_at and not self._capacity.slow_release:
            try:  # in use until now: the policy hears it went idle
                self._touch(agent_id)
            except KeyError:
                self._idle(gen)
            return
        self._cache.last_pin_gone(gen)

    def lease(
        self,
        agent_id: str,
        *,
        user_id: str | None = None,
        build: Build[R, A] | None = None,
    ) -> _LeaseContext[R, A]:
        """An async context manager that pins the runtime and releases exactly that pin.

        On a miss, ``build(agent_id)`` loads the runtime (one call for all concurrent
        misses); without ``build``, or when it returns None, ``RuntimeNotCached`` is raised.
        An entry owned by another user raises ``RuntimeNotCached`` without calling ``build``.
        """
        # Built without an __init__ frame: this is on every lease's path.
        context: _LeaseContext[R, A] = _new_object(_LeaseContext)
        context._manager = self
        context._agent_id = agent_id
        context._user_id = user_id
        context._build = build
        context._gen = None
        return context


_new_object = object.__new__


@final
class _LeaseContext(Generic[R, A]):
    """``async with manager.lease(...) as lease``: pins on enter, releases that pin on exit."""

    __slots__ = ("_agent_id", "_build", "_gen", "_manager", "_user_id")

    # Filled in by ``AgentRuntimeManager.lease``.
    _manager: AgentRuntimeManager[R, A]
    _agent_id: str
    _user_id: str | None
    _build: Build[R, A] | None
    _gen: _Generation[R, A] | None

    async def __aenter__(self) -> RuntimeLease[R, A]:
        if self._gen is not None:
            raise RuntimeError("a lease context cannot be entered twice at once")
        m = self._manager
        agent_id = self._agent_id
        gen = m._current.get(agent_id)
        if (
            gen is None
            or m._loop_ref._thread_id != get_ident()
            or agent_id in m._queues
            or m._now() >= gen.expires_at
            or (self._user_id is not None and self._user_id != gen._user_id)
        ):
            gen = await m._reads.lease(agent_id, self._user_id, self._build)
        else:
            gen.lease_pins += 1  # the plain hit, inline
            gen.hits += 1
            m._stats.hits += 1
        self._gen = gen
        return gen

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gen = self._gen
        if gen is not None:
            self._gen = None
            gen.lease_pins -= 1
            self._manager._cache.unpinned(gen)

