"""The one catalog of exported metrics: both exporters (``prometheus``, ``otel``) read it.

Each row names a metric (after the ``snak_runtime`` prefix: ``hits``,
``invalidation.received``), its kind, its unit (OpenTelemetry's UCUM notation), its help text
and how to read it from a snapshot: a manager's ``CacheReading`` or a subscriber's
``InvalidationStats``. The exporters only spell the names their own way:

- Prometheus: ``snak_runtime_<name, dots as underscores>``, ``_seconds`` appended when the
  unit is seconds, ``_total`` on counters (added by ``prometheus_client``); a duration is a
  histogram ``snak_runtime_<name>_duration_seconds``;
- OpenTelemetry: ``snak_runtime.<name>``; a duration is two observable counters,
  ``.<name>.time`` (seconds) and ``.<name>.count`` (attribute ``le``), as it has no
  observable histogram.

Adding a counter is one row here: ``_cache_counter(...)`` reads a ``CacheStats`` field,
``_invalidation_counter(...)`` an ``InvalidationStats`` one (``tests/unit/
test_metrics_catalog.py`` checks both exporters export exactly the catalog). This module
imports neither ``prometheus_client`` nor ``opentelemetry``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from operator import attrgetter
from typing import Generic, Literal, Protocol, TypeVar

from .._stats import DURATION_BUCKETS_MS, CacheStats, RemovalCause
from ..invalidation._stats import InvalidationStats
from ..invalidation._wire import DropReason

S = TypeVar("S")

Kind = Literal["counter", "gauge"]

BUCKET_BOUNDS = (*(repr(ms / 1000) for ms in DURATION_BUCKETS_MS), "+Inf")
"""Each duration bucket's upper bound in seconds, as ``prometheus_client`` writes ``le``
(``repr``: "0.001", "1.0"), then "+Inf"."""


class Subscriber(Protocol):
    """What the exporters read of an ``InvalidationSubscriber``."""

    def stats(self) -> InvalidationStats: ...


@dataclass(frozen=True, slots=True)
class CacheReading:
    """One manager read at collection: its stats and its resolved limits."""

    stats: CacheStats
    max_entries: int
    default_ttl_ms: int


@dataclass(frozen=True, slots=True)
class Scalar(Generic[S]):
    """A counter or a gauge: one value per snapshot."""

    name: str
    kind: Kind
    unit: str
    help: str
    read: Callable[[S], float]


@dataclass(frozen=True, slots=True)
class Labelled(Generic[S]):
    """A counter split by one label (``cause``, ``reason``), every label value present."""

    name: str
    unit: str
    help: str
    label: str
    read: Callable[[S], Iterable[tuple[str, float]]]
    kind: Kind = "counter"


@dataclass(frozen=True, slots=True)
class Duration(Generic[S]):
    """How long calls of ``what`` took: per-bucket counts (``BUCKET_BOUNDS``) and a total."""

    name: str
    what: str
    read: Callable[[S], tuple[tuple[int, ...], float]]
    """(calls per bucket, not cumulative; total milliseconds)."""
    unit: str = "s"

    @property
    def help(self) -> str:
        return f"Time spent in {self.what}."


Metric = Scalar[S] | Labelled[S] | Duration[S]


def cumulative(counts: tuple[int, ...]) -> list[tuple[str, int]]:
    """(``le`` bound, calls that took at most that) for each bound: cumulative, as Prometheus
    buckets are. No calls yet (empty ``counts``) is every bucket at 0."""
    total, out = 0, []
    for bound, count in zip(BUCKET_BOUNDS, counts or (0,) * len(BUCKET_BOUNDS), strict=True):
        total += count
        out.append((bound, total))
    return out


def _cache_counter(field: str, unit: str, doc: str) -> Scalar[CacheReading]:
    return Scalar(field, "counter", unit, doc, attrgetter(f"stats.{field}"))


def _cache_gauge(
    name: str, unit: str, doc: str, read: Callable[[CacheReading], float]
) -> Scalar[CacheReading]:
    return Scalar(name, "gauge", unit, doc, read)


def _removals(reading: CacheReading) -> Iterable[tuple[str, float]]:
    removals = reading.stats.removals
    return ((cause.value, removals.get(cause.value, 0)) for cause in RemovalCause)


DurationRead = Callable[[CacheReading], tuple[tuple[int, ...], float]]


def _duration(buckets: str, total_ms: str) -> DurationRead:
    def read(reading: CacheReading) -> tuple[tuple[int, ...], float]:
        return getattr(reading.stats, buckets), getattr(reading.stats, total_ms)

    return read


CACHE_METRICS: tuple[Metric[CacheReading], ...] = (
    _cache_counter("hits", "{read}", "Reads that found a live entry."),
    _cache_counter("misses", "{read}", "Reads that found no live entry."),
    _cache_counter("denied", "{read}", "Reads refused because the entry belongs to another user."),
    _cache_counter("loads", "{build}", "Calls of a build loader on a miss."),
    _cache_counter("load_failures", "{build}",
                   "Build loader calls that raised, timed out or returned None."),
    _cache_counter("rebuilds", "{rebuild}", "Calls of an entry's rebuild() on invalidation."),
    _cache_counter("rebuild_failures", "{rebuild}",
                   "rebuild() calls that raised, timed out or were cancelled."),
    _cache_counter("refreshes", "{refresh}",
                   "Calls of an entry's rebuild() by refresh-ahead, before the entry expires."),
    _cache_counter(
        "refresh_failures", "{refresh}",
        "Refreshes that raised, timed out, were cancelled or gave a seed not installed.",
    ),
    _cache_counter("invalidations", "{invalidation}", "Calls of on_invalidate()."),
    _cache_counter("disposals", "{disposal}", "Disposer calls."),
    _cache_counter("dispose_failures", "{disposal}", "Disposer calls that raised or timed out."),
    _cache_counter("quota_evictions", "{entry}",
                   "Entries evicted because their user held more than the per-user quota."),
    Labelled("removals", "{generation}",
             "Generations that left the map, by cause (capacity, expired and idle are evictions).",
             "cause", _removals),
    _cache_gauge("entries", "{entry}", "Entries in the map (current generations).",
                 attrgetter("stats.size")),
    _cache_gauge("pinned", "{pin}", "Outstanding pins, all generations.",
                 attrgetter("stats.pinned")),
    _cache_gauge("max_entries", "{entry}", "Resolved capacity of the cache.",
                 attrgetter("max_entries")),
    _cache_gauge("default_ttl", "s", "Resolved default time to live of an entry.",
                 lambda reading: reading.default_ttl_ms / 1000),
    Duration("build", "build loaders (misses)",
             _duration("load_duration_buckets", "load_time_ms")),
    Duration("rebuild", "rebuild() (invalidations)",
             _duration("rebuild_duration_buckets", "rebuild_time_ms")),
)
"""A manager's metrics, in export order."""


def _invalidation_counter(field: str, unit: str, doc: str) -> Scalar[InvalidationStats]:
    return Scalar(f"invalidation.{field}", "counter", unit, doc, _float(field))


def _invalidation_gauge(field: str, unit: str, doc: str) -> Scalar[InvalidationStats]:
    return Scalar(f"invalidation.{field}", "gauge", unit, doc, _float(field))


def _float(field: str) -> Callable[[InvalidationStats], float]:
    return lambda stats: float(getattr(stats, field))


def _dropped(stats: InvalidationStats) -> Iterable[tuple[str, float]]:
    return ((reason.value, stats.dropped.get(reason.value, 0)) for reason in DropReason)


INVALIDATION_METRICS: tuple[Metric[InvalidationStats], ...] = (
    _invalidation_counter("received", "{message}",
                          "Payloads received on the invalidation channel (valid or not)."),
    _invalidation_counter("applied", "{message}", "Invalidation messages applied."),
    _invalidation_counter("failures", "{message}",
                          "Invalidation messages whose on_invalidate/evict raised."),
    _invalidation_counter("unknown_events", "{message}",
                          "Valid messages with an unknown event (evicted)."),
    _invalidation_counter("reconnects", "{connection}",
                          "Subscriptions after a lost connection or a failed attempt."),
    _invalidation_counter("resyncs", "{resync}", "Resyncs after those reconnects."),
    _invalidation_counter("resync_evictions", "{entry}", "Entries removed with cause resync."),
    _invalidation_counter("version_checked", "{agent}",
                          "Cached agents compared with the version source "
                          "(resync and reconciliation)."),
    _invalidation_counter("version_repaired", "{agent}",
                          "Compared agents found stale, deleted or unusable, and repaired."),
    _invalidation_counter("version_unusable", "{agent}",
                          "Versions from the source that were not versions (evicted)."),
    _invalidation_counter("version_source_failures", "{call}",
                          "Version source calls that raised, timed out or returned no mapping."),
    _invalidation_counter("reconciliations", "{check}", "Periodic reconciliations completed."),
    _invalidation_counter("version_source_abandoned", "{call}",
                          "Version source calls abandoned at their timeout (ignoring "
                          "cancellation, or still running)."),
    _invalidation_counter("coalesced", "{message}",
                          "Invalidation messages superseded by a newer one for the same agent "
                          "before they ran."),
    _invalidation_counter("restarts", "{restart}",
                          "Unexpected exits of the listener or the reconciler, each followed by "
                          "a restart."),
    _invalidation_counter("gaps_detected", "{message}",
                          "Outbox ids given up as lost after the gap tolerance (a lost publish, "
                          "or an id never published such as a rolled-back transaction's)."),
    _invalidation_counter("gap_reconciliations", "{check}",
                          "Reconciliations run at once because of outbox id gaps "
                          "(at most one per tolerance window)."),
    _invalidation_counter("gap_resets", "{reset}",
                          "Outbox id jumps too large to chase (a bogus id, a sequence reset), "
                          "which restarted gap tracking."),
    _invalidation_counter("malformed_outbox_ids", "{message}",
                          "Messages whose outbox_id was malformed (ignored; the message applied)."),
    _invalidation_counter("malformed_processed_at", "{message}",
                          "Messages whose processed_at was malformed (ignored; the message "
                          "applied)."),
    _invalidation_counter("lag_clamped", "{message}",
                          "Negative propagation lags (clock skew between hosts) recorded as 0."),
    Duration("invalidation.lag", "propagation, from the publisher's processed_at to applied "
             "here", lambda stats: (stats.lag_buckets, stats.lag_time_ms)),
    Labelled("invalidation.dropped", "{message}",
             "Invalid invalidation payloads dropped, by reason.", "reason", _dropped),
    _invalidation_gauge("connected", "1", "1 while subscribed (and resynced)."),
    _invalidation_gauge("pending", "{message}", "Messages and repairs queued."),
)
"""An ``InvalidationSubscriber``'s metrics, in export order."""
