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
``version_source_abandoned``, ``coalesced``, ``restarts``),
``snak_runtime.invalidation.dropped`` (attribute ``reason``), and observable gauges
``snak_runtime.invalidation.connected`` and ``.pending``.

Nothing is recorded on the hit path; the callbacks only read counters, so a periodic
reader may run them in its own thread.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any, Protocol, final

from opentelemetry.metrics import (
    CallbackOptions,
    Meter,
    MeterProvider,
    Observation,
    get_meter_provider,
)

from .. import __version__
from .._manager import AgentRuntimeManager
from .._stats import DURATION_BUCKETS_MS, CacheStats, RemovalCause
from ..invalidation._stats import InvalidationStats
from ..invalidation._wire import DropReason

__all__ = ("COUNTERS", "GAUGES", "INVALIDATION_COUNTERS", "RuntimeCacheInstruments", "instrument")

Manager = AgentRuntimeManager[Any, Any]
_Points = Iterable[tuple[float, dict[str, str]]]


class Subscriber(Protocol):
    """What is read of an ``InvalidationSubscriber``."""

    def stats(self) -> InvalidationStats: ...

COUNTERS: tuple[tuple[str, str, str, str], ...] = (
    ("snak_runtime.hits", "hits", "{read}", "Reads that found a live entry."),
    ("snak_runtime.misses", "misses", "{read}", "Reads that found no live entry."),
    ("snak_runtime.denied", "denied", "{read}",
     "Reads refused because the entry belongs to another user."),
    ("snak_runtime.loads", "loads", "{build}", "Calls of a build loader on a miss."),
    ("snak_runtime.load_failures", "load_failures", "{build}",
     "Build loader calls that raised, timed out or returned None."),
    ("snak_runtime.rebuilds", "rebuilds", "{rebuild}",
     "Calls of an entry's rebuild() on invalidation."),
    ("snak_runtime.rebuild_failures", "rebuild_failures", "{rebuild}",
     "rebuild() calls that raised, timed out or were cancelled."),
    ("snak_runtime.refreshes", "refreshes", "{refresh}",
     "Calls of an entry's rebuild() by refresh-ahead, before the entry expires."),
    ("snak_runtime.refresh_failures", "refresh_failures", "{refresh}",
     "Refreshes that raised, timed out, were cancelled or gave a seed not installed."),
    ("snak_runtime.invalidations", "invalidations", "{invalidation}",
     "Calls of on_invalidate()."),
    ("snak_runtime.disposals", "disposals", "{disposal}", "Disposer calls."),
    ("snak_runtime.dispose_failures", "dispose_failures", "{disposal}",
     "Disposer calls that raised or timed out."),
    ("snak_runtime.quota_evictions", "quota_evictions", "{entry}",
     "Entries evicted because their user held more than max_entries_per_user."),
)
"""(instrument name, ``CacheStats`` field, unit, description) of each plain counter."""

GAUGES: tuple[tuple[str, str, str], ...] = (
    ("snak_runtime.entries", "{entry}", "Entries in the map (current generations)."),
    ("snak_runtime.pinned", "{pin}", "Outstanding pins, all generations."),
    ("snak_runtime.max_entries", "{entry}", "Resolved capacity of the cache."),
    ("snak_runtime.default_ttl", "s", "Resolved default time to live of an entry."),
)

INVALIDATION_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("received", "{message}", "Payloads received on the invalidation channel (valid or not)."),
    ("applied", "{message}", "Invalidation messages applied."),
    ("failures", "{message}", "Invalidation messages whose on_invalidate/evict raised."),
    ("unknown_events", "{message}", "Valid messages with an unknown event (evicted)."),
    ("reconnects", "{connection}", "Subscriptions after a lost connection or failed attempt."),
    ("resyncs", "{resync}", "Resyncs after those reconnects."),
    ("resync_evictions", "{entry}", "Entries removed with cause resync."),
    ("version_checked", "{agent}",
     "Cached agents compared with the version source (resync and reconciliation)."),
    ("version_repaired", "{agent}",
     "Compared agents found stale, deleted or unusable, and repaired."),
    ("version_unusable", "{agent}", "Versions from the source that were not versions."),
    ("version_source_failures", "{call}",
     "Version source calls that raised, timed out or returned no mapping."),
    ("reconciliations", "{check}", "Periodic reconciliations completed."),
    ("version_source_abandoned", "{call}",
     "Version source calls abandoned at their timeout (ignoring cancellation, or still running)."),
    ("coalesced", "{message}",
     "Invalidation messages superseded by a newer one for the same agent before they ran."),
    ("restarts", "{restart}",
     "Unexpected exits of the listener or the reconciler, each followed by a restart."),
)
"""(``InvalidationStats`` field, unit, description): ``snak_runtime.invalidation.<field>``."""

_BUCKET_BOUNDS = (*(repr(ms / 1000) for ms in DURATION_BUCKETS_MS), "+Inf")

# One set of instruments per meter provider: the SDK returns an already created instrument
# without its new callbacks, so a second manager gets a label value, not new instruments.
_instruments: weakref.WeakKeyDictionary[MeterProvider, _Instruments] = (
    weakref.WeakKeyDictionary()
)


def _gauge_values(manager: Manager, stats: CacheStats) -> tuple[float, ...]:
    return (stats.size, stats.pinned, manager.max_entries, manager.default_ttl_ms / 1000)


def _cumulative(counts: tuple[int, ...]) -> list[int]:
    total, out = 0, []
    for count in counts or (0,) * len(_BUCKET_BOUNDS):
        total += count
        out.append(total)
    return out


@final
class _Instruments:
    """The instruments of one meter provider and the managers they report, by cache label."""

    def __init__(self, meter: Meter) -> None:
        # Replaced, never mutated, so a reader thread iterates a stable dict.
        self.managers: dict[str, Manager] = {}
        self.subscribers: dict[str, Subscriber] = {}
        for name, field, unit, doc in COUNTERS:
            meter.create_observable_counter(
                name, [self._callback(self._field(field))], unit=unit, description=doc
            )
        meter.create_observable_counter(
            "snak_runtime.removals",
            [self._callback(self._removals)],
            unit="{generation}",
            description="Generations that left the map, by cause "
            "(capacity, expired and idle are evictions).",
        )
        for i, (name, unit, doc) in enumerate(GAUGES):
            meter.create_observable_gauge(
                name, [self._callback(self._gauge(i))], unit=unit, description=doc
            )
        for kind, what, total, buckets in (
            ("build", "build loaders (misses)", "load_time_ms", "load_duration_buckets"),
            ("rebuild", "rebuild() (invalidations)", "rebuild_time_ms",
             "rebuild_duration_buckets"),
        ):
            meter.create_observable_counter(
                f"snak_runtime.{kind}.time",
                [self._callback(self._seconds(total))],
                unit="s",
                description=f"Total time spent in {what}.",
            )
            meter.create_observable_counter(
                f"snak_runtime.{kind}.count",
                [self._callback(self._buckets(buckets))],
                unit=f"{{{kind}}}",
                description=f"Calls of {what} that took at most `le` seconds (cumulative).",
            )

        self._instrument_subscribers(meter)

    def _instrument_subscribers(self, meter: Meter) -> None:
        for field, unit, doc in INVALIDATION_COUNTERS:
            meter.create_observable_counter(
                f"snak_runtime.invalidation.{field}",
                [self._subscriber_callback(self._subscriber_field(field))],
                unit=unit,
                description=doc,
            )
        meter.create_observable_counter(
            "snak_runtime.invalidation.dropped",
            [self._subscriber_callback(self._dropped)],
            unit="{message}",
            description="Invalid invalidation payloads dropped, by reason.",
        )
        for field, unit, doc in (
            ("connected", "1", "1 while subscribed (and resynced)."),
            ("pending", "{message}", "Messages and repairs queued."),
        ):
            meter.create_observable_gauge(
                f"snak_runtime.invalidation.{field}",
                [self._subscriber_callback(self._subscriber_field(field))],
                unit=unit,
                description=doc,
            )

    def _subscriber_callback(
        self, points: Callable[[InvalidationStats], _Points]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            return [
                Observation(value, {"cache": cache, **attributes})
                for cache, subscriber in self.subscribers.items()
                for value, attributes in points(subscriber.stats())
            ]

        return callback

    @staticmethod
    def _subscriber_field(field: str) -> Callable[[InvalidationStats], _Points]:
        return lambda stats: ((float(getattr(stats, field)), {}),)

    @staticmethod
    def _dropped(stats: InvalidationStats) -> _Points:
        return ((stats.dropped.get(r.value, 0), {"reason": r.value}) for r in DropReason)

    def _callback(
        self, points: Callable[[Manager, CacheStats], _Points]
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            observations = []
            for cache, manager in self.managers.items():
                stats = manager.stats()
                for value, attributes in points(manager, stats):
                    observations.append(Observation(value, {"cache": cache, **attributes}))
            return observations

        return callback

    @staticmethod
    def _field(field: str) -> Callable[[Manager, CacheStats], _Points]:
        return lambda manager, stats: ((getattr(stats, field), {}),)

    @staticmethod
    def _removals(manager: Manager, stats: CacheStats) -> _Points:
        return ((stats.removals.get(c.value, 0), {"cause": c.value}) for c in RemovalCause)

    @staticmethod
    def _gauge(i: int) -> Callable[[Manager, CacheStats], _Points]:
        return lambda manager, stats: ((_gauge_values(manager, stats)[i], {}),)

    @staticmethod
    def _seconds(field: str) -> Callable[[Manager, CacheStats], _Points]:
        return lambda manager, stats: ((getattr(stats, field) / 1000, {}),)

    @staticmethod
    def _buckets(field: str) -> Callable[[Manager, CacheStats], _Points]:
        return lambda manager, stats: (
            (n, {"le": le})
            for le, n in zip(_BUCKET_BOUNDS, _cumulative(getattr(stats, field)), strict=True)
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
