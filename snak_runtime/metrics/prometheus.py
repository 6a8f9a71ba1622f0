"""A ``prometheus_client`` collector that reads each manager's ``stats()`` at scrape time.

Every sample carries a ``cache`` label, one value per manager, so several managers share
one registry without colliding. A manager's invalidation subscriber, when given, is exported
under the same label (``snak_runtime_invalidation_*``). The collector only reads counters:
nothing is recorded on the hit path, and scraping from another thread (``start_http_server``)
is safe.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any, Protocol, final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from .._manager import AgentRuntimeManager
from .._stats import DURATION_BUCKETS_MS, CacheStats, RemovalCause
from ..invalidation._stats import InvalidationStats
from ..invalidation._wire import DropReason

__all__ = (
    "COUNTERS",
    "INVALIDATION_COUNTERS",
    "RuntimeCacheCollector",
    "register",
    "unregister",
)

Manager = AgentRuntimeManager[Any, Any]


class Subscriber(Protocol):
    """What is read of an ``InvalidationSubscriber``."""

    def stats(self) -> InvalidationStats: ...

COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("snak_runtime_hits", "hits", "Reads that found a live entry."),
    ("snak_runtime_misses", "misses", "Reads that found no live entry."),
    ("snak_runtime_denied", "denied", "Reads refused because the entry belongs to another user."),
    ("snak_runtime_loads", "loads", "Calls of a build loader on a miss."),
    ("snak_runtime_load_failures", "load_failures",
     "Build loader calls that raised, timed out or returned None."),
    ("snak_runtime_rebuilds", "rebuilds", "Calls of an entry's rebuild() on invalidation."),
    ("snak_runtime_rebuild_failures", "rebuild_failures",
     "rebuild() calls that raised, timed out or were cancelled."),
    ("snak_runtime_refreshes", "refreshes",
     "Calls of an entry's rebuild() by refresh-ahead, before the entry expires."),
    ("snak_runtime_refresh_failures", "refresh_failures",
     "Refreshes that raised, timed out, were cancelled or gave a seed not installed."),
    ("snak_runtime_invalidations", "invalidations", "Calls of on_invalidate()."),
    ("snak_runtime_disposals", "disposals", "Disposer calls."),
    ("snak_runtime_dispose_failures", "dispose_failures",
     "Disposer calls that raised or timed out."),
    ("snak_runtime_quota_evictions", "quota_evictions",
     "Entries evicted because their user held more than max_entries_per_user."),
)
"""(metric name without ``_total``, ``CacheStats`` field, help text) of each plain counter."""

INVALIDATION_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("snak_runtime_invalidation_received", "received",
     "Payloads received on the invalidation channel (valid or not)."),
    ("snak_runtime_invalidation_applied", "applied", "Invalidation messages applied."),
    ("snak_runtime_invalidation_failures", "failures",
     "Invalidation messages whose on_invalidate/evict raised."),
    ("snak_runtime_invalidation_unknown_events", "unknown_events",
     "Valid messages with an unknown event (evicted)."),
    ("snak_runtime_invalidation_reconnects", "reconnects",
     "Subscriptions after a lost connection or a failed attempt."),
    ("snak_runtime_invalidation_resyncs", "resyncs", "Resyncs after those reconnects."),
    ("snak_runtime_invalidation_resync_evictions", "resync_evictions",
     "Entries removed with cause resync."),
    ("snak_runtime_invalidation_version_checked", "version_checked",
     "Cached agents compared with the version source (resync and reconciliation)."),
    ("snak_runtime_invalidation_version_repaired", "version_repaired",
     "Compared agents found stale, deleted or unusable, and repaired."),
    ("snak_runtime_invalidation_version_unusable", "version_unusable",
     "Versions from the source that were not versions (evicted)."),
    ("snak_runtime_invalidation_version_source_failures", "version_source_failures",
     "Version source calls that raised, timed out or returned no mapping."),
    ("snak_runtime_invalidation_reconciliations", "reconciliations",
     "Periodic reconciliations completed."),
    ("snak_runtime_invalidation_version_source_abandoned", "version_source_abandoned",
     "Version source calls abandoned at their timeout (ignoring cancellation, or still running)."),
    ("snak_runtime_invalidation_coalesced", "coalesced",
     "Invalidation messages superseded by a newer one for the same agent before they ran."),
    ("snak_runtime_invalidation_restarts", "restarts",
     "Unexpected exits of the listener or the reconciler, each followed by a restart."),
)
"""(metric name without ``_total``, ``InvalidationStats`` field, help text) of each counter."""

# repr() of the bound in seconds, as prometheus_client writes ``le`` ("0.001", "1.0", "+Inf").
_BUCKET_BOUNDS = (*(repr(ms / 1000) for ms in DURATION_BUCKETS_MS), "+Inf")
_EMPTY_BUCKETS = (0,) * len(_BUCKET_BOUNDS)

# One collector per registry, so that every manager registered there is one more label value
# of the same metric families (two collectors would emit each family twice).
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, RuntimeCacheCollector] = (
    weakref.WeakKeyDictionary()
)


@final
class RuntimeCacheCollector:
    """Exports the stats of one or more managers, one ``cache`` label value each.

    Prefer ``register()``, which shares one collector per registry. Registering two
    collectors in one registry fails at registration (``describe()`` names the metrics).
    """

    def __init__(self, manager: Manager | None = None, *, cache: str = "default") -> None:
        # Replaced, never mutated, so a scrape in another thread iterates a stable dict.
        self._managers: dict[str, Manager] = {}
        self._subscribers: dict[str, Subscriber] = {}
        if manager is not None:
            self.add(manager, cache=cache)

    @property
    def caches(self) -> tuple[str, ...]:
        """The ``cache`` label values exported, in registration order."""
        return tuple(self._managers)

    def add(
        self, manager: Manager, *, cache: str = "default", subscriber: Subscriber | None = None
    ) -> None:
        """Export ``manager`` (and its invalidation ``subscriber``, if any) under ``cache``.

        Raises ``ValueError`` if this manager or this label is exported already.
        """
        if not isinstance(cache, str) or not cache:
            raise ValueError(f"the cache label must be a non-empty string, got {cache!r}")
        for label, known in self._managers.items():
            if known is manager:
                raise ValueError(
                    f"this AgentRuntimeManager is already registered in this registry "
                    f"(cache={label!r}); register each manager once"
                )
        if cache in self._managers:
            raise ValueError(
                f"cache={cache!r} is already used by another AgentRuntimeManager in this "
                "registry; give each manager its own cache label"
            )
        self._managers = {**self._managers, cache: manager}
        if subscriber is not None:
            self._subscribers = {**self._subscribers, cache: subscriber}

    def remove(self, manager: Manager) -> bool:
        """Stop exporting ``manager`` and its subscriber; return whether it was exported."""
        kept = {label: m for label, m in self._managers.items() if m is not manager}
        removed = len(kept) != len(self._managers)
        self._managers = kept
        self._subscribers = {k: s for k, s in self._subscribers.items() if k in kept}
        return removed

    def describe(self) -> Iterator[Metric]:
        """The metric families without samples, so the registry can detect collisions."""
        yield from self._families(())
        yield from _invalidation_families(())

    def collect(self) -> Iterator[Metric]:
        """Read every manager's and subscriber's ``stats()`` now and yield the families."""
        yield from self._families(
            tuple((label, m.stats(), m.max_entries, m.default_ttl_ms)
                  for label, m in self._managers.items())
        )
        yield from _invalidation_families(
            tuple((label, s.stats()) for label, s in self._subscribers.items())
        )

    def _families(
        self, snapshots: tuple[tuple[str, CacheStats, int, int], ...]
    ) -> Iterator[Metric]:
        for name, field, doc in COUNTERS:
            counter = CounterMetricFamily(name, doc, labels=("cache",))
            for label, stats, _, _ in snapshots:
                counter.add_metric((label,), getattr(stats, field))
            yield counter

        removals = CounterMetricFamily(
            "snak_runtime_removals",
            "Generations that left the map, by cause (capacity, expired and idle are evictions).",
            labels=("cache", "cause"),
        )
        for label, stats, _, _ in snapshots:
            for cause in RemovalCause:
                removals.add_metric((label, cause.value), stats.removals.get(cause.value, 0))
        yield removals

        gauges = (
            ("snak_runtime_entries", "Entries in the map (current generations)."),
            ("snak_runtime_pinned", "Outstanding pins, all generations."),
            ("snak_runtime_max_entries", "Resolved capacity of the cache."),
            ("snak_runtime_default_ttl_seconds", "Resolved default time to live of an entry."),
        )
        values = tuple(
            (label, (stats.size, stats.pinned, max_entries, ttl_ms / 1000))
            for label, stats, max_entries, ttl_ms in snapshots
        )
        for i, (name, doc) in enumerate(gauges):
            gauge = GaugeMetricFamily(name, doc, labels=("cache",))
            for label, row in values:
                gauge.add_metric((label,), row[i])
            yield gauge

        histograms = (
            ("snak_runtime_build_duration_seconds", "Time spent in build loaders (misses).",
             "load_duration_buckets", "load_time_ms"),
            ("snak_runtime_rebuild_duration_seconds", "Time spent in rebuild() (invalidations).",
             "rebuild_duration_buckets", "rebuild_time_ms"),
        )
        for name, doc, buckets_field, total_field in histograms:
            histogram = HistogramMetricFamily(name, doc, labels=("cache",), unit="seconds")
            for label, stats, _, _ in snapshots:
                counts: tuple[int, ...] = getattr(stats, buckets_field) or _EMPTY_BUCKETS
                cumulative, buckets = 0, []
                for bound, count in zip(_BUCKET_BOUNDS, counts, strict=True):
                    cumulative += count
                    buckets.append((bound, float(cumulative)))
                histogram.add_metric((label,), buckets, getattr(stats, total_field) / 1000)
            yield histogram


def _invalidation_families(
    snapshots: tuple[tuple[str, InvalidationStats], ...],
) -> Iterator[Metric]:
    for name, field, doc in INVALIDATION_COUNTERS:
        counter = CounterMetricFamily(name, doc, labels=("cache",))
        for label, stats in snapshots:
            counter.add_metric((label,), getattr(stats, field))
        yield counter
    dropped = CounterMetricFamily(
        "snak_runtime_invalidation_dropped",
        "Invalid invalidation payloads dropped, by reason.",
        labels=("cache", "reason"),
    )
    for label, stats in snapshots:
        for reason in DropReason:
            dropped.add_metric((label, reason.value), stats.dropped.get(reason.value, 0))
    yield dropped
    for name, doc, field in (
        ("snak_runtime_invalidation_connected", "1 while subscribed (and resynced).", "connected"),
        ("snak_runtime_invalidation_pending", "Messages and repairs queued.", "pending"),
    ):
        gauge = GaugeMetricFamily(name, doc, labels=("cache",))
        for label, stats in snapshots:
            gauge.add_metric((label,), float(getattr(stats, field)))
        yield gauge


def register(
    manager: Manager,
    registry: CollectorRegistry = REGISTRY,
    cache: str = "default",
    subscriber: Subscriber | None = None,
) -> RuntimeCacheCollector:
    """Export ``manager``'s stats from ``registry`` under the label ``cache="<cache>"``.

    With ``subscriber`` (its ``InvalidationSubscriber``), that one's counters too. All managers
    registered in one registry share one collector (returned). Raises ``ValueError`` at once if
    this manager or this cache label is registered there already.
    """
    collector = _collectors.get(registry)
    if collector is not None:
        collector.add(manager, cache=cache, subscriber=subscriber)
        return collector
    collector = RuntimeCacheCollector()
    collector.add(manager, cache=cache, subscriber=subscriber)
    try:
        registry.register(collector)
    except ValueError as exc:
        raise ValueError(
            f"cannot register snak_runtime metrics: {exc}; use register() for every manager "
            "so that one collector exports them all"
        ) from exc
    _collectors[registry] = collector
    return collector


def unregister(manager: Manager, registry: CollectorRegistry = REGISTRY) -> bool:
    """Stop exporting ``manager`` from ``registry``; return whether it was registered.

    Its cache label is free again. The collector leaves the registry with its last manager.
    """
    collector = _collectors.get(registry)
    if collector is None or not collector.remove(manager):
        return False
    if not collector.caches:
        registry.unregister(collector)
        del _collectors[registry]
    return True
