"""A ``prometheus_client`` collector that reads each manager's ``stats()`` at scrape time.

Every sample carries a ``cache`` label, one value per manager, so several managers share
one registry without colliding. A manager's invalidation subscriber, when given, is exported
under the same label (``snak_runtime_invalidation_*``). The collector only reads counters:
nothing is recorded on the hit path, and scraping from another thread (``start_http_server``)
is safe. Every family and its help text come from the one catalog both exporters read
(``_catalog.py``).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any, TypeVar, final

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
)
from prometheus_client.metrics_core import Metric as Family

from .._manager import AgentRuntimeManager
from ._catalog import (
    CACHE_METRICS,
    INVALIDATION_METRICS,
    CacheReading,
    Duration,
    Labelled,
    Metric,
    Scalar,
    Subscriber,
    cumulative,
)

__all__ = (
    "COUNTERS",
    "INVALIDATION_COUNTERS",
    "RuntimeCacheCollector",
    "register",
    "unregister",
)

Manager = AgentRuntimeManager[Any, Any]
S = TypeVar("S")


def metric_name(metric: Metric[Any]) -> str:
    """The family name of a catalog row (counters without ``_total``: the client adds it)."""
    base = "snak_runtime_" + metric.name.replace(".", "_")
    if isinstance(metric, Duration):
        return f"{base}_duration_seconds"
    return f"{base}_seconds" if metric.unit == "s" else base


COUNTERS: tuple[tuple[str, str, str], ...] = tuple(
    (metric_name(m), m.name, m.help)
    for m in CACHE_METRICS if isinstance(m, Scalar) and m.kind == "counter"
)
"""(metric name without ``_total``, ``CacheStats`` field, help text) of each plain counter:
a view of the catalog (``_catalog.CACHE_METRICS``)."""

INVALIDATION_COUNTERS: tuple[tuple[str, str, str], ...] = tuple(
    (metric_name(m), m.name.removeprefix("invalidation."), m.help)
    for m in INVALIDATION_METRICS if isinstance(m, Scalar) and m.kind == "counter"
)
"""(metric name without ``_total``, ``InvalidationStats`` field, help text) of each counter:
a view of the catalog (``_catalog.INVALIDATION_METRICS``)."""

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

    def describe(self) -> Iterator[Family]:
        """The metric families without samples, so the registry can detect collisions."""
        yield from _families(CACHE_METRICS, ())
        yield from _families(INVALIDATION_METRICS, ())

    def collect(self) -> Iterator[Family]:
        """Read every manager's and subscriber's ``stats()`` now and yield the families."""
        yield from _families(CACHE_METRICS, tuple(
            (label, CacheReading(m.stats(), m.max_entries, m.default_ttl_ms))
            for label, m in self._managers.items()
        ))
        yield from _families(
            INVALIDATION_METRICS,
            tuple((label, s.stats()) for label, s in self._subscribers.items()),
        )


def _families(
    catalog: tuple[Metric[S], ...], snapshots: tuple[tuple[str, S], ...]
) -> Iterator[Family]:
    """One family per catalog row, a sample (or a label set of them) per ``cache`` label."""
    for metric in catalog:
        name = metric_name(metric)
        family: Family
        if isinstance(metric, Scalar):
            scalar = (CounterMetricFamily if metric.kind == "counter" else GaugeMetricFamily)(
                name, metric.help, labels=("cache",)
            )
            for label, snapshot in snapshots:
                scalar.add_metric((label,), metric.read(snapshot))
            family = scalar
        elif isinstance(metric, Labelled):
            labelled = CounterMetricFamily(name, metric.help, labels=("cache", metric.label))
            for label, snapshot in snapshots:
                for value_label, value in metric.read(snapshot):
                    labelled.add_metric((label, value_label), value)
            family = labelled
        else:
            family = _histogram(name, metric, snapshots)
        yield family


def _histogram(
    name: str, metric: Duration[S], snapshots: tuple[tuple[str, S], ...]
) -> HistogramMetricFamily:
    histogram = HistogramMetricFamily(name, metric.help, labels=("cache",), unit="seconds")
    for label, snapshot in snapshots:
        counts, total_ms = metric.read(snapshot)
        buckets = [(bound, float(n)) for bound, n in cumulative(counts)]
        histogram.add_metric((label,), buckets, total_ms / 1000)
    return histogram


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
