"""OpenTelemetry export: the scripted scenario read through the SDK's InMemoryMetricReader."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum

from snak_runtime._stats import DURATION_BUCKETS_MS
from snak_runtime.invalidation import DropReason
from snak_runtime.metrics.otel import instrument
from tests.unit.metrics_scenario import (
    SUBSCRIBER_EXPECTED,
    TTL_MS,
    make_manager,
    run_quota_scenario,
    run_scenario,
    run_subscriber_scenario,
    seed,
)

Points = dict[tuple[str, frozenset[tuple[str, str]]], float]

EXPECTED: dict[str, float] = {
    "snak_runtime.hits": 2,
    "snak_runtime.misses": 4,
    "snak_runtime.denied": 1,
    "snak_runtime.loads": 2,
    "snak_runtime.load_failures": 1,
    "snak_runtime.rebuilds": 1,
    "snak_runtime.rebuild_failures": 0,
    "snak_runtime.invalidations": 1,
    "snak_runtime.disposals": 3,
    "snak_runtime.dispose_failures": 1,
    "snak_runtime.entries": 1,  # "a": expired but not touched since
    "snak_runtime.pinned": 0,
    "snak_runtime.max_entries": 2,
    "snak_runtime.default_ttl": TTL_MS / 1000,
}
EXPECTED_REMOVALS = {
    "expired": 1, "idle": 0, "capacity": 1, "invalidated": 1, "replaced": 0, "explicit": 0,
    "shutdown": 0, "resync": 0, "quota": 0,
}
GAUGES = {"snak_runtime.entries", "snak_runtime.pinned", "snak_runtime.max_entries",
          "snak_runtime.default_ttl"}


def read(reader: InMemoryMetricReader) -> tuple[Points, dict[str, str]]:
    """Every data point by (instrument name, attributes), and each metric's kind and unit."""
    points: Points = {}
    kinds: dict[str, str] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            assert scope.scope.name == "snak_runtime"
            for metric in scope.metrics:
                if isinstance(metric.data, Sum):
                    assert metric.data.is_monotonic
                    kind = "counter"
                else:
                    assert isinstance(metric.data, Gauge)
                    kind = "gauge"
                kinds[metric.name] = f"{kind} {metric.unit}"
                for point in metric.data.data_points:
                    attributes = {k: str(v) for k, v in (point.attributes or {}).items()}
                    key = (metric.name, frozenset(attributes.items()))
                    assert key not in points, f"duplicate data point {key}"
                    points[key] = point.value
    return points, kinds


def value(points: Points, name: str, **attributes: str) -> float:
    return points[(name, frozenset(attributes.items()))]


async def test_scenario_values_read_through_the_sdk() -> None:
    manager, clock, disposer = make_manager()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(manager, meter_provider=provider, cache="agents")
    await run_scenario(manager, clock, disposer)
    stats = manager.stats()

    points, kinds = read(reader)

    for name, expected in EXPECTED.items():
        assert value(points, name, cache="agents") == expected, name
        assert kinds[name].startswith("gauge" if name in GAUGES else "counter"), name
    for cause, expected in EXPECTED_REMOVALS.items():
        assert value(points, "snak_runtime.removals", cache="agents", cause=cause) \
            == expected, cause
    assert all(dict(attributes)["cache"] == "agents" for _, attributes in points)
    assert kinds["snak_runtime.default_ttl"] == "gauge s"

    # durations: total seconds, and cumulative counts per bound (le, in seconds)
    bounds = [*(repr(ms / 1000) for ms in DURATION_BUCKETS_MS), "+Inf"]
    for kind, buckets, total_ms, calls in (
        ("build", stats.load_duration_buckets, stats.load_time_ms, 2),
        ("rebuild", stats.rebuild_duration_buckets, stats.rebuild_time_ms, 1),
    ):
        assert kinds[f"snak_runtime.{kind}.time"] == "counter s"
        assert value(points, f"snak_runtime.{kind}.time", cache="agents") \
            == pytest.approx(total_ms / 1000)
        counts = [value(points, f"snak_runtime.{kind}.count", cache="agents", le=le)
                  for le in bounds]
        assert counts == [sum(buckets[: i + 1]) for i in range(len(buckets))]
        assert counts[-1] == calls
    await manager.aclose()
    provider.shutdown()


async def test_two_managers_one_provider_and_duplicates() -> None:
    first, _, _ = make_manager()
    second, _, _ = make_manager()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(first, meter_provider=provider, cache="chat")
    handle = instrument(second, meter_provider=provider, cache="tools")
    await second.shadow_seed(seed("x"))
    assert await second.acquire("x") == "x-v1"

    with pytest.raises(ValueError, match="already instrumented"):
        instrument(first, meter_provider=provider, cache="other")
    with pytest.raises(ValueError, match="cache='chat' is already used"):
        instrument(make_manager()[0], meter_provider=provider, cache="chat")
    with pytest.raises(ValueError, match="non-empty string"):
        instrument(make_manager()[0], meter_provider=provider, cache="")

    points, _ = read(reader)
    assert value(points, "snak_runtime.hits", cache="chat") == 0
    assert value(points, "snak_runtime.hits", cache="tools") == 1
    assert value(points, "snak_runtime.pinned", cache="tools") == 1
    second.release("x")

    handle.close()
    handle.close()
    assert handle.closed
    points, _ = read(reader)
    assert ("snak_runtime.entries", frozenset({("cache", "tools")})) not in points
    assert value(points, "snak_runtime.entries", cache="chat") == 0
    instrument(second, meter_provider=provider, cache="tools")  # label free again
    await first.aclose()
    await second.aclose()
    provider.shutdown()


async def test_the_invalidation_subscriber_is_reported_under_the_same_cache() -> None:
    manager, _, _ = make_manager()
    subscriber = await run_subscriber_scenario(manager)
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    handle = instrument(manager, meter_provider=provider, cache="agents", subscriber=subscriber)
    points, kinds = read(reader)
    for field, expected in SUBSCRIBER_EXPECTED.items():
        name = f"snak_runtime.invalidation.{field}"
        assert value(points, name, cache="agents") == expected, name
        gauge = field in ("connected", "pending")
        assert kinds[name].startswith("gauge" if gauge else "counter"), name
    for reason in DropReason:
        assert value(
            points, "snak_runtime.invalidation.dropped", cache="agents", reason=reason.value
        ) == (1 if reason is DropReason.INVALID_JSON else 0)
    assert value(points, "snak_runtime.removals", cache="agents", cause="resync") == 1
    handle.close()
    assert reader.get_metrics_data() is None  # neither the manager nor its subscriber is left


async def test_quota_evictions_are_a_counter_and_a_removal_cause() -> None:
    manager = await run_quota_scenario()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    instrument(manager, meter_provider=provider, cache="tenants")
    points, kinds = read(reader)
    assert value(points, "snak_runtime.quota_evictions", cache="tenants") == 1
    assert kinds["snak_runtime.quota_evictions"] == "counter {entry}"
    assert value(points, "snak_runtime.removals", cache="tenants", cause="quota") == 1
    assert value(points, "snak_runtime.removals", cache="tenants", cause="capacity") == 0
    await manager.aclose()
    provider.shutdown()
