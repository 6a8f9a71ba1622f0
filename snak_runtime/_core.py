"""The manager's shared state and the synchronous rules every path uses: liveness, hits,
pins (counted in one place), install and capacity trim.

``AgentRuntimeManager`` is assembled from layers, each a module with one job, each
building on the one before: this core, ``_lifecycle`` (loop binding, disposal callbacks,
sweeper, close and drain), ``_writes`` (shadow_seed, on_invalidate, evict), ``_loads``
(single-flight builds) and ``_reads`` (the slow read path); ``_manager`` adds the public
facade and the hot path on top. The state itself is created by the manager's constructor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from random import Random
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._calls import _UserCalls
from ._clock import Clock
from ._config import GuardConfig, ResolvedLimits, resolve_seed_ttl_ms
from ._disposal import Disposer, _Disposals
from ._keyed import _KeyedTurns
from ._seed import RuntimeSeed
from ._stats import RemovalCause, _StatsCounter
from ._store import _Generation, _IdleGeneration, _Store

if TYPE_CHECKING:  # a runtime import would be circular
    from ._loads import _Load
    from ._refresh import _Refresh

R = TypeVar("R")
A = TypeVar("A")

RemovalListener = Callable[[str, RemovalCause], None]

# Installs remove at most this many expired entries on the way (the sweeper does the rest).
_EXPIRE_BATCH = 16


class _Denied(Exception):
    """Internal: the live entry belongs to another user."""


class _ManagerCore(Generic[R, A]):
    """The state of one manager (set by its constructor) and the rules shared by its paths."""

    # configuration
    _guards: GuardConfig
    _limits: ResolvedLimits
    _max_entries: int
    _default_ttl_ms: int
    _clock: Clock
    _now: Callable[[], int]  # clock ticks: raw monotonic_ns for the default clock
    _ticks_per_ms: int
    _disposer: Disposer
    _log: logging.Logger
    _build_timeout_s: float
    _sweep_interval_s: float
    _dispose_timeout_s: float
    _refresh_ahead_ms: int  # 0: refresh-ahead off
    _stale_while_rebuilding: bool
    _idle_ttl_ms: int  # 0: idle expiry off
    _idle_ticks: int  # the same in clock ticks
    _ttl_jitter: float  # 0.0: off
    _jitter_random: Random
    # data (the store decides what leaves; these are hot-path aliases of its fields)
    _store: _Store[R, A]
    _current: dict[str, _Generation[R, A]]
    _detached: dict[str, list[_Generation[R, A]]]
    _idle: Callable[[_Generation[R, A]], None]  # the eviction policy's last-release hook
    _touch: Callable[[str], object]  # its fast form by agent id (KeyError: call _idle)
    _over_capacity: bool  # pins kept the map above max_entries after a trim
    _slow_release: bool  # last releases take _last_pin_gone: over capacity or a user over its
    # quota (pins held them), or idle expiry on
    _max_entries_per_user: int | None  # the per-user quota; None: none
    _over_quota: set[str]  # users that pins keep above the quota (shrunk at last releases)
    # order: per-id turns, the single-flight loads and the rebuilds in flight
    _turns: _KeyedTurns
    _queues: dict[str, Any]
    _loads: dict[str, _Load[R, A]]
    _rebuilds: set[asyncio.Task[Any]]
    _refreshes: dict[str, _Refresh[R, A]]  # refresh-ahead in flight, by agent id
    # counters: outstanding pins = hits + waiter pins - unpins (see _pinned)
    _stats: _StatsCounter
    _waiter_pins: int
    _unpins: int
    _listeners: list[RemovalListener]
    _disposals: _Disposals
    _calls: _UserCalls  # builds and rebuilds in flight or abandoned
    # lifecycle
    _loop: asyncio.AbstractEventLoop | None
    _loop_ref: Any  # the hit path's one-comparison loop check (see _lifecycle)
    _sweeper: asyncio.Task[None] | None
    _closed: bool
    _close_task: asyncio.Task[None] | None
    _drained: asyncio.Event | None  # set while closing, when pins reach 0
    _forced: bool  # grace period over: agents already disposed

    def _pinned(self) -> int:
        """Outstanding pins, all generations. Every pin is a hit (``stats.hits``: the inline
        hot paths and ``_hit``) or a pin handed to a load waiter (``_pin_waiter``); every
        unpin is counted in ``_unpins`` (``release``'s inline path or ``_unpinned``). A new
        pin path goes through ``_hit`` or ``_pin_waiter``, or it breaks this sum."""
        return self._stats.hits + self._waiter_pins - self._unpins

    def _pin_waiter(self, gen: _Generation[R, A], *, loose: bool = False) -> None:
        """Pin ``gen`` for a waiter of a load or of a refresh (the one pin path that is not
        a hit); ``loose`` for an ``acquire``, whose pin ``release(agent_id)`` gives back."""
        if loose:
            gen.loose_pins += 1
        else:
            gen.lease_pins += 1
        self._waiter_pins += 1

    def _hit(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """The live entry ``user_id`` may have (the caller pins it): count a hit, a miss
        (None) or a denial (``_Denied``)."""
        gen = self._lookup(agent_id, user_id)
        if gen is None:
            self._stats.misses += 1
        return gen

    def _lookup(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """As ``_hit``, but a miss (None) is left for the caller to count: a lease that
        goes on to a load is counted when it leaves the load (see ``_loads``)."""
        gen = self._live(agent_id)
        if gen is None:
            return None
        if user_id is not None and user_id != gen._user_id:
            # departure: the original left owner checks to its callers.
            self._stats.denied += 1
            raise _Denied
        gen.hits += 1  # EntryInfo.hits: hits since install
        self._stats.hits += 1
        return gen

    def _live(self, agent_id: str) -> _Generation[R, A] | None:
        """The live current generation (an expired unpinned one is removed on the way)."""
        gen = self._current.get(agent_id)
        if gen is None:
            return None
        now = self._now()
        if now >= gen.expires_at:
            cause = self._store.cause(gen, now)
            if cause is None:  # an idle bound or the refresh window, not the TTL, had passed
                return gen
            if gen.pins == 0:
                self._store.detach(gen, cause)
            return None
        return gen

    def _is_live(self, gen: _Generation[R, A], now: int) -> bool:
        """Whether the current ``gen`` is live at ``now`` (nothing removed, nothing bumped)."""
        return now < gen.expires_at or self._store.cause(gen, now) is None

    def _unpinned(self, gen: _Generation[R, A]) -> None:
        """One pin of ``gen`` was just given back (the caller decremented its counter)."""
        self._unpins += 1
        if gen.loose_pins or gen.lease_pins:
            return
        if gen.current and self._now() < gen.expires_at and not self._slow_release:
            try:  # in use until now: the policy hears it went idle
                self._touch(gen._agent_id)
            except KeyError:
                self._idle(gen)
            return
        self._last_pin_gone(gen)

    def _last_pin_gone(self, gen: _Generation[R, A]) -> None:
        """The slow cases of a last unpin (release and _unpinned handle the common one): the
        map is over capacity or a quota, idle expiry is on, the refresh window is open, the entry
        expired, or it is detached."""
        now = self._now()
        if gen.current:
            if type(gen) is _IdleGeneration:
                live = now < gen.deadline  # in use until now, so never idle: only the TTL
                if live:
                    # its idle time starts here, and the hot path's bound moves with it
                    gen.last_used = now
                    idle_at = now + self._idle_ticks
                    upper = gen.refresh_at or gen.deadline  # an open refresh window stays
                    gen.expires_at = idle_at if idle_at < upper else upper
            else:
                live = now < gen.deadline  # (``expires_at`` may be refresh-ahead's threshold)
            if not live:
                self._store.detach(gen, RemovalCause.EXPIRED)
                return
            try:  # in use until now: the policy hears it went idle
                self._touch(gen._agent_id)
            except KeyError:
                self._idle(gen)
            if self._over_quota:
                for user_id in list(self._over_quota):
                    self._trim_user(user_id, keep=None, warn=False)
                if not self._over_quota and not self._over_capacity:
                    self._slow_release = self._idle_ttl_ms > 0  # the common release again
            if self._over_capacity:
                self._trim(keep=None, warn=False)
        else:
            self._store.drop_detached(gen)
            # closing detached every entry, so draining ends on this branch
            if self._drained is not None and not self._pinned():
                self._drained.set()

    def _install(
        self,
        seed: RuntimeSeed[R, A],
        cause: RemovalCause | None,
        now: int | None = None,
        *,
        build_ms: float | None = None,
    ) -> _Generation[R, A]:
        """Install ``seed`` (``build_ms``: how long its build or rebuild took, if it had one)."""
        if now is None:
            now = self._now()
        ttl_ms = seed.ttl_ms
        if ttl_ms is None:
            ttl_ms = self._default_ttl_ms
        else:
            resolved = resolve_seed_ttl_ms(ttl_ms, self._default_ttl_ms, self._guards.max_ttl_ms)
            if resolved != ttl_ms:
                self._log.warning(
                    "ttl_ms=%d of agent %r's seed resolved to the guard's %d ms",
                    ttl_ms, seed.agent_id, resolved, extra={"agent_id": seed.agent_id},
                )
            ttl_ms = resolved
        jitter = self._ttl_jitter
        if jitter:
            # spread a batch installed together: each TTL shortened by up to this fraction
            ttl_ms -= int(ttl_ms * jitter * self._jitter_random.random())
        gen = self._store.install(
            seed,
            now + ttl_ms * self._ticks_per_ms,
            cause,
            in_order=ttl_ms == self._default_ttl_ms and not jitter,
            installed_at=now,
            build_ms=build_ms,
        )
        if self._refresh_ahead_ms:
            # The window: refresh_ahead_ms before expiry, at most the second half of this
            # entry's life (a shorter TTL of its own must not refresh on its first hit).
            window_ms = min(self._refresh_ahead_ms, ttl_ms // 2)
            if window_ms > 0:
                refresh_at = gen.deadline - window_ms * self._ticks_per_ms
                gen.refresh_at = refresh_at
                if refresh_at < gen.expires_at:  # (idle expiry may have set an earlier bound)
                    gen.expires_at = refresh_at
        self._store.pop_expired(now, _EXPIRE_BATCH)
        if self._max_entries_per_user is not None:  # before capacity: the user pays first
            self._trim_user(gen._user_id, keep=gen, warn=True)
        self._trim(keep=gen, warn=True)
        return gen

    def _trim(self, *, keep: _Generation[R, A] | None, warn: bool) -> None:
        """Evict the policy's victims while above capacity, never ``keep`` (just installed)."""
        # departure: the original could evict the entry its own install had just put in.
        store = self._store
        self._over_capacity = False
        self._slow_release = self._idle_ttl_ms > 0 or bool(self._over_quota)
        while len(self._current) > self._max_entries:
            victim = store.victim(keep)
            if victim is None:
                self._over_capacity = self._slow_release = True
                if warn:
                    keep_id = None if keep is None else keep._agent_id
                    self._log.warning(
                        "agent runtime cache still above capacity (%d/%d) due to pinned entries "
                        "after installing agent %r",
                        len(self._current), self._max_entries, keep_id,
                        extra={
                            "agent_id": keep_id,
                            "size": len(self._current),
                            "max_entries": self._max_entries,
                        },
                    )
                return
            store.detach(victim, RemovalCause.CAPACITY)

    def _trim_user(self, user_id: str, *, keep: _Generation[R, A] | None, warn: bool) -> None:
        """Evict ``user_id``'s least valued entries while it holds more than the quota,
        never ``keep`` and never another user's; O(that user's entries) per eviction."""
        quota = self._max_entries_per_user
        assert quota is not None
        store = self._store
        by_user = store.index_users()
        held = by_user.get(user_id)
        while held is not None and len(held) > quota:
            victim = store.user_victim(user_id, keep)
            if victim is None:
                self._over_quota.add(user_id)
                self._slow_release = True
                if warn:
                    keep_id = None if keep is None else keep._agent_id
                    self._log.warning(
                        "user %r holds %d agent runtimes, above max_entries_per_user=%d, "
                        "due to pinned entries after installing agent %r",
                        user_id, len(held), quota, keep_id,
                        extra={"user_id": user_id, "agent_id": keep_id, "held": len(held)},
                    )
                return
            store.detach(victim, RemovalCause.QUOTA)
            held = by_user.get(user_id)
        self._over_quota.discard(user_id)

    def _learn_cost(self, agent_id: str, started_ms: int) -> float:
        """A build or rebuild begun at ``started_ms`` (the injected clock) just ended:
        tell the policy, and return the duration (``EntryInfo.last_build_ms``)."""
        cost_ms = float(self._clock.now_ms() - started_ms)
        self._store.policy.learn_cost(agent_id, cost_ms)
        return cost_ms
