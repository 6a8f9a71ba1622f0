"""CacheStats snapshots and their counter (CONTRACT §9)."""

from __future__ import annotations

import dataclasses

import pytest

from snak_runtime import CacheStats, RemovalCause
from snak_runtime._stats import _StatsCounter

CONTRACT_FIELDS = (
    "hits", "misses", "denied", "loads", "load_failures", "invalidations", "rebuilds",
    "rebuild_failures", "evictions", "expirations", "disposals", "dispose_failures",
    "size", "pinned",
)


def test_snapshot_has_every_contract_field_starting_at_zero() -> None:
    stats = CacheStats()
    assert {name: getattr(stats, name) for name in CONTRACT_FIELDS} == dict.fromkeys(
        CONTRACT_FIELDS, 0
    )
    assert (stats.load_time_ms, stats.rebuild_time_ms, dict(stats.removals)) == (0.0, 0.0, {})


def test_snapshot_is_frozen() -> None:
    stats = CacheStats(hits=1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.hits = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("hits", "misses", "rate"), [(0, 0, 1.0), (3, 1, 0.75), (0, 2, 0.0), (5, 0, 1.0)]
)
def test_hit_rate_and_requests(hits: int, misses: int, rate: float) -> None:
    stats = CacheStats(hits=hits, misses=misses, denied=7)
    assert (stats.requests, stats.hit_rate) == (hits + misses, rate)


def test_removal_causes_are_the_contract_strings() -> None:
    assert sorted(c.value for c in RemovalCause) == sorted(
        ["expired", "idle", "capacity", "invalidated", "replaced", "explicit", "shutdown",
         "resync", "refreshed", "quota"]
    )


def test_counter_snapshot_maps_removals_to_evictions_and_expirations() -> None:
    counter = _StatsCounter()
    counter.hits, counter.misses, counter.denied = 4, 3, 2
    for cause in (RemovalCause.CAPACITY, RemovalCause.CAPACITY, RemovalCause.EXPIRED,
                  RemovalCause.EXPLICIT, RemovalCause.RESYNC, RemovalCause.IDLE,
                  RemovalCause.IDLE, RemovalCause.IDLE):
        counter.record_removal(cause)
    stats = counter.snapshot(size=5, pinned=6)
    assert (stats.hits, stats.misses, stats.denied, stats.size, stats.pinned) == (4, 3, 2, 5, 6)
    assert (stats.evictions, stats.expirations, stats.idle_expirations) == (2, 1, 3)
    assert dict(stats.removals) == {
        "expired": 1, "idle": 3, "capacity": 2, "invalidated": 0, "replaced": 0, "explicit": 1,
        "shutdown": 0, "resync": 1, "refreshed": 0, "quota": 0,
    }


def test_snapshot_does_not_change_with_later_counting() -> None:
    counter = _StatsCounter()
    first = counter.snapshot(size=0, pinned=0)
    counter.hits += 1
    counter.record_removal(RemovalCause.SHUTDOWN)
    assert (first.hits, first.removals["shutdown"]) == (0, 0)
    with pytest.raises(TypeError):
        first.removals["shutdown"] = 9  # type: ignore[index]
