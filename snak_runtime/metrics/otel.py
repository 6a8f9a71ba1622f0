"""OpenTelemetry observable instruments that read each manager's ``stats()`` at collection.

Instruments (meter ``snak_runtime``), every data point with a ``cache`` attribute:

- observable counters ``snak_runtime.hits``, ``.misses``, ``.denied``, ``.loads``,
  ``.load_failures``, ``.rebuilds``, ``.rebuild_failures``, ``.refreshes``,
  ``.refresh_failures``, ``.invalidations``, ``.disposals``, ``.dispose_failures``,
  ``.quota_evictions``, and ``snak_runtime.removals`` (attribute ``cause``);
- observable gauges ``snak_runtime.entries``, ``.pinned``, ``.max_entries`` and
  ``snak_runtime.default_ttl`` (seconds);
- durations: OpenTelemetry has no observable histogram, so each duration is two observable
  counters: ``snak_runtime.build.time`` / ``snak_runtime.rebuild.time``, the total seconds
  spent (divide by ``.loads`` / ``.rebuilds`` for the mean), and ``snak_runtime.build.count``
  / ``snak_runtime.rebuild.count`` with an ``le`` attribute: how many took at most ``le``
  seconds, cumulative like Prometheus buckets (``le="+Inf"`` counts them all).

With ``instrument(..., subscriber=...)``, the manager's ``InvalidationSubscriber`` is reported
under the same ``cache``: observable counters ``snak_runtime.invalidation.<field>`` for each
counter of its ``stats()`` (``received``, ``applied``, ..., ``version_checked``,
``version_repaired``, ``version_source_failures``, ``reconciliations``,
``version_source_abandoned``, ``coalesced``, ``restarts``, ``gaps_detected``,
``gap_reconciliations``, ``gap_resets``, ``malformed_outbox_ids``, ``malformed_processed_at``,
``lag_clamped``), ``snak_runtime.invalidation.dropped`` (attribute ``reason``), the propagation
lag as a duration (``snak_runtime.invalidation.lag.time`` / ``.count``), and observable gauges
``snak_runtime.invalidation.connected`` and ``.pending``.

Every instrument, its unit and its description come from the one catalog both exporters read
(``_catalog.py``). Nothing is recorded on the hit path; the callbacks only read counters, so a
periodic reader may run them in its own thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, final

from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    Observation,
    get_meter_provider,
)

from .. import __version__
from .._manager import AgentRuntimeManager
from ..invalidation._stats import InvalidationStats
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

__all__ = ("COUNTERS", "GAUGES", "INVALIDATION_COUNTERS", "RuntimeCacheInstruments", "instrument")

Manager = AgentRuntimeManager[Any, Any]
S = TypeVar("S")
_Points = Iterable[tuple[float, dict[str, str]]]
_Callback = Callable[[CallbackOptions], Iterable[Observation]]


COUNTERS: tuple[tuple[str, str, str, str], ...] = tuple(
    (f"snak_runtime.{m.name}", m.name, m.unit, m.help)
    for m in CACHE_METRICS if isinstance(m, Scalar) and m.kind == "counter"
)
"""(instrument name, ``CacheStats`` field, unit, description) of each plain counter: a view
of the catalog (``_catalog.CACHE_METRICS``)."""

GAUGES: tuple[tuple[str, str, str], ...] = tuple(
    (f"snak_runtime.{m.name}", m.unit, m.help)
    for m in CACHE_METRICS if isinstance(m, Scalar) and m.kind == "gauge"
)

INVALIDATION_COUNTERS: tuple[tuple[str, str, str], ...] = tuple(
    (m.name.removeprefix("invalidation."), m.unit, m.help)
    for m in INVALIDATION_METRICS if isinstance(m, Scalar) and m.kind == "counter"
)
"""(``InvalidationStats`` field, unit, description): ``snak_runtime.invalidation.<field>``;
a view of the catalog (``_catalog.INVALIDATION_METRICS``)."""

# One set of instruments per meter provider: the SDK returns an already created instrument
# without its new callbacks, so a second manager gets a label value, not new instruments.
_instruments: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def _reading(manager: Manager) -> CacheReading:
    return CacheReading(manager.stats(), manager.max_entries, manager.default_ttl_ms)


@final
class _Instruments:
    """The instruments of one meter provider and the managers they report, by cache label."""

    def __init__(self, meter: Meter) -> None:
        # Replaced, never mutated, so a reader thread iterates a stable dict.
        self.managers: dict[str, Manager] = {}
        self.subscribers: dict[str, Subscriber] = {}
        for metric in CACHE_METRICS:
            _create(meter, metric, self._manager_callback)
        for invalidation in INVALIDATION_METRICS:
            _create(meter, invalidation, self._subscriber_callback)

    def _manager_callback(self, points: Callable[[CacheReading], _Points]) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, {"cache": cache, **attributes})
                for cache, manager in self.managers.items()
                for value, attributes in points(_reading(manager))
            ]

        return callback

    def _subscriber_callback(
        self, points: Callable[[InvalidationStats], _Points]
    ) -> _Callback:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, {"cache": cache, **attributes})
                for cache, subscriber in self.subscribers.items()
                for value, attributes in points(subscriber.stats())
            ]

        return callback


def _create(
    meter: Meter, metric: Metric[S], callback: Callable[[Callable[[S], _Points]], _Callback]
) -> None:
    """The instrument(s) of one catalog row, each reading its points through ``callback``."""
    name = f"snak_runtime.{metric.name}"
    if isinstance(metric, Duration):
        _create_duration(meter, name, metric, callback)
        return
    create = (
        meter.create_observable_gauge if metric.kind == "gauge"
        else meter.create_observable_counter
    )
    create(name, [callback(_points(metric))], unit=metric.unit, description=metric.help)


def _points(metric: Scalar[S] | Labelled[S]) -> Callable[[S], _Points]:
    if isinstance(metric, Scalar):
        read = metric.read
        return lambda snapshot: ((read(snapshot), {}),)
    label, values = metric.label, metric.read
    return lambda snapshot: ((value, {label: key}) for key, value in values(snapshot))


def _create_duration(
    meter: Meter, name: str, metric: Duration[S],
    callback: Callable[[Callable[[S], _Points]], _Callback],
) -> None:
    """OpenTelemetry has no observable histogram: a counter of total seconds and one of calls
    per ``le`` bound (cumulative, as Prometheus buckets)."""
    read = metric.read

    def total(snapshot: S) -> _Points:
        return ((read(snapshot)[1] / 1000, {}),)

    def counts(snapshot: S) -> _Points:
        return ((n, {"le": le}) for le, n in cumulative(read(snapshot)[0]))

    meter.create_observable_counter(
        f"{name}.time", [callback(total)], unit="s",
        description=f"Total time spent in {metric.what}.",
    )
    meter.create_observable_counter(
        f"{name}.count", [callback(counts)], unit=f"{{{metric.name}}}",
        description=f"Calls of {metric.what} that took at most `le` seconds (cumulative).",
    )


@final
class RuntimeCacheInstruments:
    """Handle returned by ``instrument()``: ``close()`` stops reporting that manager.

    The OpenTelemetry API cannot remove an instrument or a callback, so the instruments
    stay; they just report no data point for this cache label any more, which is free again.
    """

    __slots__ = ("_cache", "_instruments", "_manager")

    def __init__(self, instruments: _Instruments, manager: Manager, cache: str) -> None:
        self._instruments = instruments
        self._manager = manager
        self._cache = cache

    @property
    def cache(self) -> str:
        return self._cache

    @property
    def closed(self) -> bool:
        return self._instruments.managers.get(self._cache) is not self._manager

    def close(self) -> None:
        """Stop reporting this manager (and its subscriber). Idempotent."""
        instruments = self._instruments
        if instruments.managers.get(self._cache) is self._manager:
            instruments.managers = {
                k: m for k, m in instruments.managers.items() if k != self._cache
            }
            instruments.subscribers = {
                k: s for k, s in instruments.subscribers.items() if k != self._cache
            }


def instrument(
    manager: Manager,
    meter_provider: MeterProvider | None = None,
    cache: str = "default",
    subscriber: Subscriber | None = None,
) -> RuntimeCacheInstruments:
    """Report ``manager``'s stats through ``meter_provider`` (the global one by default).

    With ``subscriber`` (its ``InvalidationSubscriber``), that one's counters too. Every data
    point carries ``cache=<cache>``. Raises ``ValueError`` if this manager or this cache label
    is reported through that provider already.
    """
    if not isinstance(cache, str) or not cache:
        raise ValueError(f"the cache label must be a non-empty string, got {cache!r}")
    provider = meter_provider if meter_provider is not None else get_meter_provider()
    instruments = _instruments.get(provider)
    if instruments is None:
        instruments = _Instruments(provider.get_meter("snak_runtime", __version__))
        _instruments[provider] = instruments
    for label, known in instruments.managers.items():
        if known is manager:
            raise ValueError(
                f"this AgentRuntimeManager is already instrumented with this meter provider "
                f"(cache={label!r}); instrument each manager once"
            )
    if cache in instruments.managers:
        raise ValueError(
            f"cache={cache!r} is already used by another AgentRuntimeManager with this meter "
            "provider; give each manager its own cache label"
        )
    instruments.managers = {**instruments.managers, cache: manager}
    if subscriber is not None:
        instruments.subscribers = {**instruments.subscribers, cache: subscriber}
    return RuntimeCacheInstruments(instruments, manager, cache)
