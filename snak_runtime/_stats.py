"""Counters and their frozen snapshot, in Caffeine's vocabulary."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import final

DURATION_BUCKETS_MS: tuple[float, ...] = (
    1, 5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000,
)
"""Upper bounds of the build/rebuild duration histogram (the last bucket is +Inf)."""


class RemovalCause(StrEnum):
    """Why a generation left the map; the values are the contract's strings."""

    EXPIRED = "expired"
    IDLE = "idle"  # idle expiry: no use for the idle TTL
    CAPACITY = "capacity"
    INVALIDATED = "invalidated"
    REPLACED = "replaced"
    EXPLICIT = "explicit"
    SHUTDOWN = "shutdown"
    # The invalidation subscriber's resync: its version source said the agent is gone (or gave
    # an unusable version), or, with no source answering after a reconnect, everything went.
    RESYNC = "resync"
    REFRESHED = "refreshed"  # refresh-ahead installed a new generation, or its rebuild gave None
    # An install gave its user more entries than its quota: that user's entry the
    # eviction policy valued least left (never another user's, never the one installed).
    QUOTA = "quota"


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A point-in-time snapshot of the manager's counters.

    ``evictions`` counts capacity removals only, ``expirations`` TTL expiries only,
    ``idle_expirations`` idle expiries (the idle TTL) and ``quota_evictions`` the per-user
    quota's (cause ``quota``); ``removals`` counts every cause.
    ``rebuilds`` counts the ``rebuild()`` calls of ``on_invalidate``; ``refreshes`` those of
    refresh-ahead (its window), and ``refresh_failures`` the refreshes that raised,
    timed out, were cancelled or returned a seed that could not be installed.
    ``load_time_ms`` / ``rebuild_time_ms`` are the total wall time spent in ``build`` /
    ``rebuild()`` calls (successful or not), so ``load_time_ms / loads`` is the mean cost.
    """

    hits: int = 0
    misses: int = 0
    denied: int = 0
    loads: int = 0
    load_failures: int = 0
    invalidations: int = 0
    rebuilds: int = 0
    rebuild_failures: int = 0
    refreshes: int = 0
    refresh_failures: int = 0
    evictions: int = 0
    expirations: int = 0
    idle_expirations: int = 0
    quota_evictions: int = 0
    disposals: int = 0
    dispose_failures: int = 0
    size: int = 0
    pinned: int = 0
    load_time_ms: float = 0.0
    rebuild_time_ms: float = 0.0
    removals: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    load_duration_buckets: tuple[int, ...] = ()
    """Non-cumulative counts of build durations per ``DURATION_BUCKETS_MS`` bound, +Inf last."""
    rebuild_duration_buckets: tuple[int, ...] = ()

    @property
    def requests(self) -> int:
        """Reads that found or missed an entry (denied reads excluded)."""
        return self.hits + self.misses

    @property
    def hit_rate(self) -> float:
        """``hits / (hits + misses)``, 1.0 when nothing was read yet (as Caffeine)."""
        total = self.hits + self.misses
        return 1.0 if total == 0 else self.hits / total


@final
class _StatsCounter:
    """Mutable counters owned by one manager; plain attributes keep the hot path cheap."""

    __slots__ = (
        "denied",
        "disposals",
        "dispose_failures",
        "hits",
        "invalidations",
        "load_buckets",
        "load_failures",
        "load_time_ms",
        "loads",
        "misses",
        "rebuild_buckets",
        "rebuild_failures",
        "rebuild_time_ms",
        "rebuilds",
        "refresh_failures",
        "refreshes",
        "removals",
        "unpins",
        "waiter_pins",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.denied = 0
        # Outstanding pins = hits + pins given to load waiters - unpins (see ``pinned``); kept
        # as counters so that a hit updates one number, not two.
        self.waiter_pins = 0
        self.unpins = 0
        self.loads = 0
        self.load_failures = 0
        self.invalidations = 0
        self.rebuilds = 0
        self.rebuild_failures = 0
        self.refreshes = 0
        self.refresh_failures = 0
        self.disposals = 0
        self.dispose_failures = 0
        self.load_time_ms = 0.0
        self.rebuild_time_ms = 0.0
        self.removals: dict[RemovalCause, int] = dict.fromkeys(RemovalCause, 0)
        self.load_buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.rebuild_buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)

    def pinned(self) -> int:
        """Outstanding pins, all generations. Every pin is a hit (``hits``: the inline hot
        paths and the cache's ``hit``/``lookup``) or a pin handed to a load waiter
        (``waiter_pins``); every unpin is counted in ``unpins``. A new pin path counts one
        of these, or it breaks this sum."""
        return self.hits + self.waiter_pins - self.unpins

    def record_load_time(self, ms: float) -> None:
        self.load_time_ms += ms
        self.load_buckets[bisect_left(DURATION_BUCKETS_MS, ms)] += 1

    def record_rebuild_time(self, ms: float) -> None:
        self.rebuild_time_ms += ms
        self.rebuild_buckets[bisect_left(DURATION_BUCKETS_MS, ms)] += 1

    def record_removal(self, cause: RemovalCause) -> None:
        self.removals[cause] += 1

    def snapshot(self, *, size: int, pinned: int) -> CacheStats:
        removals = self.removals
        return CacheStats(
            hits=self.hits,
            misses=self.misses,
            denied=self.denied,
            loads=self.loads,
            load_failures=self.load_failures,
            invalidations=self.invalidations,
            rebuilds=self.rebuilds,
            rebuild_failures=self.rebuild_failures,
            refreshes=self.refreshes,
            refresh_failures=self.refresh_failures,
            evictions=removals[RemovalCause.CAPACITY],
            expirations=removals[RemovalCause.EXPIRED],
            idle_expirations=removals[RemovalCause.IDLE],
            quota_evictions=removals[RemovalCause.QUOTA],
            disposals=self.disposals,
            dispose_failures=self.dispose_failures,
            size=size,
            pinned=pinned,
            load_time_ms=self.load_time_ms,
            rebuild_time_ms=self.rebuild_time_ms,
            removals=MappingProxyType({str(c): n for c, n in removals.items()}),
            load_duration_buckets=tuple(self.load_buckets),
            rebuild_duration_buckets=tuple(self.rebuild_buckets),
        )
