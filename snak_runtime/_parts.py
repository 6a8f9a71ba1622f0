"""The manager's parts, wired to each other: each part gets the few others it calls and the
resolved values it needs (``_Timings``, ``_CacheRules``, made once from the resolved limits
by the facade: no part reads an option),
and the observers are registered here, at construction (a write supersedes a refresh,
``evict_user`` marks the refreshes in flight, a removal supersedes a refresh)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from random import Random
from typing import Generic, TypeVar, final

from ._binding import _Binding, part_logger
from ._cache import _Cache, _CacheRules
from ._calls import _UserCalls
from ._clock import Clock, MonotonicClock
from ._disposal import Disposer, _Disposals
from ._keyed import _KeyedTurns
from ._lifecycle import _Lifecycle
from ._loads import _Loads
from ._policies import EvictionPolicy
from ._reads import _SlowReads
from ._refresh import _Refreshes
from ._stats import _StatsCounter
from ._writes import _Writes

R = TypeVar("R")
A = TypeVar("A")


def ticks_per_ms(clock: Clock) -> int:
    """Expiry is kept in clock ticks: the default clock is read as raw monotonic_ns (one C
    call on the hot path), any other clock through its now_ms()."""
    return 1_000_000 if type(clock) is MonotonicClock else 1


def _ticks(clock: Clock) -> Callable[[], int]:
    return time.monotonic_ns if type(clock) is MonotonicClock else clock.now_ms


@final
@dataclass(frozen=True, slots=True)
class _Timings:
    """The resolved values the parts other than the cache need, in their own units."""

    build_timeout_s: float
    dispose_timeout_s: float
    sweep_interval_s: float
    stale_reads: bool  # reads are served the cached entry while an invalidation rebuilds


@final
class _Parts(Generic[R, A]):
    """Every part of one manager (the facade keeps references, and aliases for its hot path)."""

    def __init__(
        self,
        timings: _Timings,
        rules: _CacheRules,
        policy: EvictionPolicy,
        clock: Clock,
        disposer: Disposer,
        logger: logging.Logger | None,
        rand: Random,
    ) -> None:
        self.now = _ticks(clock)
        self.rules = rules
        build_timeout_s = timings.build_timeout_s
        dispose_timeout_s = timings.dispose_timeout_s
        self.stats = stats = _StatsCounter()
        self.binding = binding = _Binding()
        self.disposals = disposals = _Disposals(
            disposer, dispose_timeout_s, stats, part_logger(logger, "snak_runtime._disposal"),
            lambda: binding.loop,
        )
        self.cache: _Cache[R, A] = _Cache(
            rules, policy, now=self.now,
            now_ms=clock.now_ms, stats=stats, jitter_random=rand,
            orphaned=disposals.orphaned, late=disposals.late,
            log=part_logger(logger, "snak_runtime._cache"),
            capacity_log=part_logger(logger, "snak_runtime._capacity"),
        )
        cache = self.cache
        self.turns = turns = _KeyedTurns()
        # Builds and rebuilds: bounded by the build timeout; once cancelled, one may take up
        # to the dispose timeout (or the build timeout, if shorter) to end before it is
        # abandoned, so an evict waits at most build + dispose timeouts for one in flight.
        self.calls = calls = _UserCalls(
            build_timeout_s, min(build_timeout_s, dispose_timeout_s),
            part_logger(logger, "snak_runtime._calls"), cache.discard_late,
        )
        stale = timings.stale_reads
        refresh_on = rules.refresh_window_ms > 0
        self.refreshes: _Refreshes[R, A] = _Refreshes(
            cache, turns, calls, binding, stats, part_logger(logger, "snak_runtime._refresh"),
            enabled=refresh_on,
        )
        self.loads: _Loads[R, A] = _Loads(
            cache, turns, calls, binding, stats, part_logger(logger, "snak_runtime._loads")
        )
        self.writes: _Writes[R, A] = _Writes(
            cache, turns, calls, binding, stats, part_logger(logger, "snak_runtime._writes"),
            stale_reads=stale, on_write=self.refreshes.supersede if refresh_on else None,
            on_user_evicted=self.refreshes.discard_user,
        )
        self.reads: _SlowReads[R, A] = _SlowReads(
            cache, turns, self.loads, self.refreshes, binding, stats, stale_reads=stale
        )
        self.lifecycle = _Lifecycle(
            binding, cache, disposals, (self.writes, self.refreshes, self.loads),
            sweep_interval_s=timings.sweep_interval_s, cancel_bound_s=build_timeout_s,
            log=part_logger(logger, "snak_runtime._lifecycle"),
        )
