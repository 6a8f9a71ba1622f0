"""The cache part: the map of current generations (a store with its eviction policy inside),
pins, liveness and hits, install (then the capacity and quota trims of ``_capacity``), the
last release, and the removal notifications.

Every other part reaches cached entries through this one: ``current`` and ``detached`` are
the store's dicts (read-only outside this module; the facade's hot path aliases them), and
every change goes through a method here. Parts that must react to a removal register an
observer (``observe_removals``) at construction instead of being called from here by name.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Generic, TypeVar, final

from ._capacity import _Capacity
from ._config import resolve_seed_ttl_ms
from ._generation import _Generation, _IdleGeneration
from ._policies import EvictionPolicy
from ._seed import RuntimeSeed
from ._stats import RemovalCause, _StatsCounter
from ._store import _Store

R = TypeVar("R")
A = TypeVar("A")

RemovalListener = Callable[[str, RemovalCause], None]
Orphaned = Callable[[str, object], None]

# Installs remove at most this many expired entries on the way (the sweeper does the rest).
_EXPIRE_BATCH = 16


class _Denied(Exception):
    """Internal: the live entry belongs to another user."""


def _ignore(gen: object) -> None:
    """The last-release hook of a policy that does not want it."""


@final
@dataclass(frozen=True, slots=True)
class _CacheRules:
    """What the cache part needs of the resolved limits, in its own units (read once)."""

    max_entries: int
    default_ttl_ms: int
    max_ttl_ms: int
    ticks_per_ms: int  # clock ticks per millisecond (raw monotonic_ns for the default clock)
    idle_ms: int  # idle expiry (0: off)
    jitter: float  # the largest fraction a TTL is shortened by at random (0.0: off)
    refresh_window_ms: int  # refresh-ahead's window before expiry (0: off)
    user_quota: int | None  # entries per user beyond what pins hold (None: no quota)


@final
class _Cache(Generic[R, A]):
    """The map, its pins and the rules every path applies to an entry (all synchronous)."""

    def __init__(
        self,
        rules: _CacheRules,
        policy: EvictionPolicy,
        *,
        now: Callable[[], int],
        now_ms: Callable[[], int],
        stats: _StatsCounter,
        jitter_random: Random,
        orphaned: Orphaned,
        late: Orphaned,
        log: logging.Logger,
        capacity_log: logging.Logger,
    ) -> None:
        self._rules = rules
        self._now = now
        self._now_ms = now_ms  # the injected clock, for build durations
        self._stats = stats
        self._random = jitter_random
        self._orphaned = orphaned
        self._late = late  # an agent of a seed given up, disposed even after the grace
        self._log = log
        self._idle_ticks = rules.idle_ms * rules.ticks_per_ms
        self._store: _Store[R, A] = _Store(
            self._removed, orphaned, policy, idle_ticks=self._idle_ticks
        )
        self.current = self._store.current  # never reassigned: the hot path aliases it
        self.detached = self._store.detached
        if rules.user_quota is not None:
            policy.keep_ranks()  # before reading its touch: ranking may change it
            self._store.index_users()  # the quota reads it at every install
        self.idle: Callable[[_Generation[R, A]], None] = (
            policy.idle if policy.wants_idle else _ignore
        )
        self.touch: Callable[[str], object] = policy.touch if policy.wants_idle else _ignore
        # capacity and quota trims; the release path's test ``capacity.slow_release``
        self.capacity = _Capacity(
            self._store, rules.max_entries, rules.user_quota, idle_on=rules.idle_ms > 0,
            log=capacity_log,
        )
        self._listeners: list[RemovalListener] = []  # the public on_removal callbacks
        self._observers: list[RemovalListener] = []  # parts reacting to removals
        self._drained: asyncio.Event | None = None  # set while closing, when pins reach 0

    # ------------------------------------------------------------------ views

    @property
    def policy(self) -> EvictionPolicy:
        return self._store.policy

    @property
    def idle_ticks(self) -> int:
        return self._idle_ticks

    @property
    def ticks_per_ms(self) -> int:
        return self._rules.ticks_per_ms

    def now(self) -> int:
        """Now, in clock ticks (what ``expires_at`` is compared with)."""
        return self._now()

    def clock_ms(self) -> int:
        """Now on the injected clock, in milliseconds (build durations)."""
        return self._now_ms()

    def pinned(self) -> int:
        return self._stats.pinned()

    def cause(self, gen: _Generation[R, A], now: int) -> RemovalCause | None:
        """Why the current ``gen`` is not live at ``now`` (None: it is)."""
        return self._store.cause(gen, now)

    def is_live(self, gen: _Generation[R, A], now: int) -> bool:
        """Whether the current ``gen`` is live at ``now`` (nothing removed, nothing bumped)."""
        return now < gen.expires_at or self._store.cause(gen, now) is None

    def owns(self, agent: object) -> bool:
        return self._store.owns(agent)

    def over_limits(self) -> tuple[bool, frozenset[str]]:
        """(pins keep the map above capacity, the users pins keep above the quota)."""
        capacity = self.capacity
        return capacity.over_capacity, frozenset(capacity.over_quota)

    def eviction_order(self) -> list[_Generation[R, A]]:
        """Every current generation, next capacity victim first: the policy's order of the
        candidates, then pinned entries in install order (none goes before its release)."""
        order = self._store.policy.order()
        if len(order) < len(self.current):
            listed = {id(gen) for gen in order}
            order.extend(g for g in self.current.values() if id(g) not in listed)
        return order

    def version_view(self) -> dict[str, int]:
        """Each live entry's ``cfg_version``."""
        now = self._now()
        return {a: g.cfg_version for a, g in self.current.items() if self.is_live(g, now)}

    def user_index(self) -> dict[str, set[str]]:
        """The agent ids of each user (built on first use)."""
        return self._store.index_users()

    # ------------------------------------------------------------------ removals

    def on_removal(self, callback: RemovalListener) -> Callable[[], None]:
        """The public listener registry (see ``AgentRuntimeManager.on_removal``)."""
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    def observe_removals(self, observer: RemovalListener) -> None:
        """A part that must react to removals (called before the public listeners)."""
        self._observers.append(observer)

    def _removed(self, agent_id: str, cause: RemovalCause) -> None:
        self._stats.record_removal(cause)
        if self._observers:
            for observer in self._observers:
                observer(agent_id, cause)
        if not self._listeners:
            return
        for listener in tuple(self._listeners):
            try:
                listener(agent_id, cause)
            except Exception:
                self._log.warning(
                    "removal listener failed for agent %r (%s)", agent_id, cause,
                    exc_info=True, extra={"agent_id": agent_id, "cause": str(cause)},
                )

    def detach(self, gen: _Generation[R, A], cause: RemovalCause) -> None:
        """Take ``gen`` out of the map (its agent is disposed now or at its last release)."""
        self._store.detach(gen, cause)

    def remove(self, agent_id: str, cause: RemovalCause) -> bool:
        """Take ``agent_id``'s entry out of the map, if there is one."""
        gen = self.current.get(agent_id)
        if gen is None:
            return False
        self._store.detach(gen, cause)
        return True

    def remove_each(self, gens: list[_Generation[R, A]], cause: RemovalCause) -> int:
        """Remove each of ``gens`` still current; return how many."""
        removed = 0
        for gen in gens:
            if gen.current:  # (a predicate that chose them may have had side effects)
                self._store.detach(gen, cause)
                removed += 1
        return removed

    def remove_user(self, user_id: str) -> int:
        """Remove every entry of ``user_id`` (cause ``explicit``); return how many."""
        store = self._store
        removed = 0
        for agent_id in store.user_agent_ids(user_id):
            store.detach(store.current[agent_id], RemovalCause.EXPLICIT)
            removed += 1
        return removed

    def pop_expired(self, limit: int) -> int:
        """Remove up to ``limit`` expired idle entries (see ``_Store.pop_expired``)."""
        return self._store.pop_expired(self._now(), limit)

    def discard(self, agent_id: str, seed: object) -> None:
        """A build or rebuild made ``seed`` for the cache, which will not install it: its
        agent has no other owner, so it is disposed (unless the cache holds it too)."""
        agent = getattr(seed, "agent", None) if isinstance(seed, RuntimeSeed) else None
        if agent is not None and not self._store.owns(agent):
            self._orphaned(agent_id, agent)

    def discard_late(self, agent_id: str, seed: object) -> None:
        """As ``discard``, for a seed that a build or rebuild given up returned after all:
        disposed even after close (this agent was never cached)."""
        agent = getattr(seed, "agent", None) if isinstance(seed, RuntimeSeed) else None
        if agent is not None and not self._store.owns(agent):
            self._late(agent_id, agent)

    # ------------------------------------------------------------------ shutdown

    def shut(self) -> asyncio.Event | None:
        """Closing: remove every entry (cause ``shutdown``); an event set when the last pin
        is released, or None when nothing is pinned."""
        for gen in list(self.current.values()):
            self._store.detach(gen, RemovalCause.SHUTDOWN)
        if not self.pinned():
            return None
        self._drained = asyncio.Event()
        return self._drained

    def finish_pinned(self) -> list[str]:
        """The grace period is over: give up every agent still pinned; return their ids."""
        leftover = self._store.unfinished_pinned()
        ids = [gen.agent_id for gen in leftover]  # (read before finishing: the warning's order)
        for gen in leftover:
            self._store.finish(gen)
        return ids

    # ------------------------------------------------------------------ reads and pins

    def pin_waiter(self, gen: _Generation[R, A], *, loose: bool = False) -> None:
        """Pin ``gen`` for a waiter of a load or of a refresh (the one pin path that is not
        a hit); ``loose`` for an ``acquire``, whose pin ``release(agent_id)`` gives back."""
        if loose:
            gen.loose_pins += 1
        else:
            gen.lease_pins += 1
        self._stats.waiter_pins += 1

    def hit(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """The live entry ``user_id`` may have (the caller pins it): count a hit, a miss
        (None) or a denial (``_Denied``)."""
        gen = self.lookup(agent_id, user_id)
        if gen is None:
            self._stats.misses += 1
        return gen

    def lookup(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """As ``hit``, but a miss (None) is left for the caller to count: a lease that goes
        on to a load is counted when it leaves the load (see ``_loads``)."""
        gen = self.live(agent_id)
        if gen is None:
            return None
        if user_id is not None and user_id != gen._user_id:
            # departure: the original left owner checks to its callers.
            self._stats.denied += 1
            raise _Denied
        gen.hits += 1  # EntryInfo.hits: hits since install
        self._stats.hits += 1
        return gen

    def live(self, agent_id: str) -> _Generation[R, A] | None:
        """The live current generation (an expired unpinned one is removed on the way)."""
        gen = self.current.get(agent_id)
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

    def release_slow(self, agent_id: str) -> None:
        """``release`` when the inline case does not apply: older generations are pinned,
        or no pin is outstanding."""
        gen = self.current.get(agent_id)
        # older generations of some id are still pinned: give back the oldest first
        for old in self.detached.get(agent_id, ()):
            if old.loose_pins:
                gen = old
                break
        if gen is None or not gen.loose_pins:
            self._log.debug("release(%r) with no pin outstanding: ignored", agent_id)
            return
        gen.loose_pins -= 1
        self.unpinned(gen)

    def unpinned(self, gen: _Generation[R, A]) -> None:
        """One pin of ``gen`` was just given back (the caller decremented its counter)."""
        self._stats.unpins += 1
        if gen.loose_pins or gen.lease_pins:
            return
        if gen.current and self._now() < gen.expires_at and not self.capacity.slow_release:
            try:  # in use until now: the policy hears it went idle
                self.touch(gen._agent_id)
            except KeyError:
                self.idle(gen)
            return
        self.last_pin_gone(gen)

    def last_pin_gone(self, gen: _Generation[R, A]) -> None:
        """The slow cases of a last unpin (release and ``unpinned`` handle the common one):
        over capacity or a quota, idle expiry on, the refresh window open, the entry
        expired, or it is detached."""
        now = self._now()
        if not gen.current:
            self._store.drop_detached(gen)
            # closing detached every entry, so draining ends on this branch
            if self._drained is not None and not self.pinned():
                self._drained.set()
            return
        live = now < gen.deadline  # (``expires_at`` may be refresh-ahead's threshold)
        if live and type(gen) is _IdleGeneration:
            # in use until now, so never idle: its idle time starts here, and the hot
            # path's bound moves with it (an open refresh window stays)
            gen.last_used = now
            idle_at = now + self._idle_ticks
            upper = gen.refresh_at or gen.deadline
            gen.expires_at = idle_at if idle_at < upper else upper
        if not live:
            self._store.detach(gen, RemovalCause.EXPIRED)
            return
        try:  # in use until now: the policy hears it went idle
            self.touch(gen._agent_id)
        except KeyError:
            self.idle(gen)
        self.capacity.released()

    # ------------------------------------------------------------------ install

    def install(
        self,
        seed: RuntimeSeed[R, A],
        cause: RemovalCause | None,
        now: int | None = None,
        *,
        build_ms: float | None = None,
    ) -> _Generation[R, A]:
        """Install ``seed`` (``build_ms``: how long its build or rebuild took, if it had one);
        the entry it replaces leaves with ``cause`` (None: a same-version refresh)."""
        rules = self._rules
        if now is None:
            now = self._now()
        ttl_ms = seed.ttl_ms
        if ttl_ms is None:
            ttl_ms = rules.default_ttl_ms
        else:
            resolved = resolve_seed_ttl_ms(ttl_ms, rules.default_ttl_ms, rules.max_ttl_ms)
            if resolved != ttl_ms:
                self._log.warning(
                    "ttl_ms=%d of agent %r's seed resolved to the guard's %d ms",
                    ttl_ms, seed.agent_id, resolved, extra={"agent_id": seed.agent_id},
                )
            ttl_ms = resolved
        jitter = rules.jitter
        if jitter:
            # spread a batch installed together: each TTL shortened by up to this fraction
            ttl_ms -= int(ttl_ms * jitter * self._random.random())
        gen = self._store.install(
            seed,
            now + ttl_ms * rules.ticks_per_ms,
            cause,
            in_order=ttl_ms == rules.default_ttl_ms and not jitter,
            installed_at=now,
            build_ms=build_ms,
        )
        if rules.refresh_window_ms:
            # The window: refresh_window_ms before expiry, at most the second half of this
            # entry's life (a shorter TTL of its own must not refresh on its first hit).
            window_ms = min(rules.refresh_window_ms, ttl_ms // 2)
            if window_ms > 0:
                refresh_at = gen.deadline - window_ms * rules.ticks_per_ms
                gen.refresh_at = refresh_at
                if refresh_at < gen.expires_at:  # (idle expiry may have set an earlier bound)
                    gen.expires_at = refresh_at
        self._store.pop_expired(now, _EXPIRE_BATCH)
        self.capacity.installed(gen)
        return gen

    def learn_cost(self, agent_id: str, started_ms: int) -> float:
        """A build or rebuild begun at ``started_ms`` (the injected clock) just ended:
        tell the policy, and return the duration (``EntryInfo.last_build_ms``)."""
        cost_ms = float(self._now_ms() - started_ms)
        self._store.policy.learn_cost(agent_id, cost_ms)
        return cost_ms

