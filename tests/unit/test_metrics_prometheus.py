"""Prometheus export: a scripted scenario scraped and parsed with prometheus_client's parser."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from snak_runtime._stats import DURATION_BUCKETS_MS
from snak_runtime.invalidation import DropReason
from snak_runtime.metrics import prometheus_resource
from snak_runtime.metrics.prometheus import RuntimeCacheCollector, register, unregister
from tests.unit.metrics_scenario import (
    SUBSCRIBER_EXPECTED,
    TTL_MS,
    make_manager,
    run_quota_scenario,
    run_scenario,
    run_subscriber_scenario,
    seed,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

EXPECTED: dict[str, float] = {
    "snak_runtime_hits_total": 2,
    "snak_runtime_misses_total": 4,
    "snak_runtime_denied_total": 1,
    "snak_runtime_loads_total": 2,
    "snak_runtime_load_failures_total": 1,
    "snak_runtime_rebuilds_total": 1,
    "snak_runtime_rebuild_failures_total": 0,
    "snak_runtime_invalidations_total": 1,
    "snak_runtime_disposals_total": 3,
    "snak_runtime_dispose_failures_total": 1,
    "snak_runtime_entries": 1,  # "a": expired but not touched since
    "snak_runtime_pinned": 0,
    "snak_runtime_max_entries": 2,
    "snak_runtime_default_ttl_seconds": TTL_MS / 1000,
    "snak_runtime_build_duration_seconds_count": 2,
    "snak_runtime_rebuild_duration_seconds_count": 1,
}
EXPECTED_REMOVALS = {
    "expired": 1, "idle": 0, "capacity": 1, "invalidated": 1, "replaced": 0, "explicit": 0,
    "shutdown": 0, "resync": 0, "quota": 0,
}


def scrape(registry: CollectorRegistry) -> tuple[Samples, dict[str, str]]:
    """Every sample by (name, labels), and each family's type, from the exposition text."""
    samples: Samples = {}
    types: dict[str, str] = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        types[family.name] = family.type
        for s in family.samples:
            key = (s.name, frozenset(s.labels.items()))
            assert key not in samples, f"duplicate sample {key}"
            samples[key] = s.value
    return samples, types


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


async def test_scenario_values_parsed_from_the_exposition_text() -> None:
    manager, clock, disposer = make_manager()
    registry = CollectorRegistry()
    register(manager, registry=registry, cache="agents")
    await run_scenario(manager, clock, disposer)
    stats = manager.stats()

    samples, types = scrape(registry)

    for name, expected in EXPECTED.items():
        assert value(samples, name, cache="agents") == expected, name
    for cause, expected in EXPECTED_REMOVALS.items():
        assert value(samples, "snak_runtime_removals_total", cache="agents", cause=cause) \
            == expected, cause
    assert types["snak_runtime_hits"] == "counter"
    assert types["snak_runtime_removals"] == "counter"
    assert types["snak_runtime_entries"] == "gauge"
    assert types["snak_runtime_build_duration_seconds"] == "histogram"
    # every sample carries the cache label
    assert all(dict(labels)["cache"] == "agents" for _, labels in samples)

    # histograms: cumulative buckets in seconds from the stats' per-bucket counts, sum in s
    for prefix, buckets, total_ms in (
        ("snak_runtime_build_duration_seconds", stats.load_duration_buckets, stats.load_time_ms),
        ("snak_runtime_rebuild_duration_seconds", stats.rebuild_duration_buckets,
         stats.rebuild_time_ms),
    ):
        bounds = [*(repr(ms / 1000) for ms in DURATION_BUCKETS_MS), "+Inf"]
        scraped = [value(samples, f"{prefix}_bucket", cache="agents", le=le) for le in bounds]
        assert scraped == [sum(buckets[: i + 1]) for i in range(len(buckets))]
        assert scraped == sorted(scraped)
        assert scraped[-1] == value(samples, f"{prefix}_count", cache="agents")
        assert value(samples, f"{prefix}_sum", cache="agents") == pytest.approx(total_ms / 1000)
    assert value(samples, "snak_runtime_build_duration_seconds_bucket",
                 cache="agents", le="0.001") >= 0
    await manager.aclose()


async def test_counters_are_read_at_scrape_time() -> None:
    manager, _, _ = make_manager()
    registry = CollectorRegistry()
    register(manager, registry=registry)
    samples, _ = scrape(registry)
    assert value(samples, "snak_runtime_misses_total", cache="default") == 0
    assert await manager.acquire("x") is None
    await manager.shadow_seed(seed("x"))
    assert await manager.acquire("x") == "x-v1"
    samples, _ = scrape(registry)
    assert value(samples, "snak_runtime_misses_total", cache="default") == 1
    assert value(samples, "snak_runtime_hits_total", cache="default") == 1
    assert value(samples, "snak_runtime_pinned", cache="default") == 1
    manager.release("x")
    await manager.aclose()


async def test_two_managers_in_one_registry_are_two_label_values() -> None:
    first, _, _ = make_manager()
    second, _, _ = make_manager()
    registry = CollectorRegistry()
    shared = register(first, registry=registry, cache="chat")
    assert register(second, registry=registry, cache="tools") is shared
    await second.shadow_seed(seed("x"))
    assert await second.acquire("x") == "x-v1"
    second.release("x")

    samples, _ = scrape(registry)  # one family per metric, no duplicate samples

    assert value(samples, "snak_runtime_hits_total", cache="chat") == 0
    assert value(samples, "snak_runtime_hits_total", cache="tools") == 1
    assert value(samples, "snak_runtime_entries", cache="chat") == 0
    assert value(samples, "snak_runtime_entries", cache="tools") == 1
    await first.aclose()
    await second.aclose()


async def test_duplicate_registration_raises_at_registration() -> None:
    manager, _, _ = make_manager()
    other, _, _ = make_manager()
    registry = CollectorRegistry()
    register(manager, registry=registry, cache="chat")

    with pytest.raises(ValueError, match="already registered in this registry"):
        register(manager, registry=registry, cache="other")
    with pytest.raises(ValueError, match="cache='chat' is already used"):
        register(other, registry=registry, cache="chat")
    with pytest.raises(ValueError, match="non-empty string"):
        register(other, registry=registry, cache="")
    # a hand-made second collector is refused by the registry itself, at registration
    with pytest.raises(ValueError, match="use register"):
        register(other, registry=_registry_with(RuntimeCacheCollector(manager)))

    samples, _ = scrape(registry)  # the registry still scrapes cleanly
    assert value(samples, "snak_runtime_hits_total", cache="chat") == 0
    # the same manager in another registry is fine
    register(manager, registry=CollectorRegistry(), cache="chat")
    await manager.aclose()
    await other.aclose()


def _registry_with(collector: RuntimeCacheCollector) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


async def test_unregister_frees_the_label_and_empties_the_registry() -> None:
    manager, _, _ = make_manager()
    other, _, _ = make_manager()
    registry = CollectorRegistry()
    register(manager, registry=registry)

    assert unregister(manager, registry=registry) is True
    assert unregister(manager, registry=registry) is False
    assert generate_latest(registry) == b""
    register(other, registry=registry)  # "default" is free again
    samples, _ = scrape(registry)
    assert value(samples, "snak_runtime_max_entries", cache="default") == 2
    await manager.aclose()
    await other.aclose()


async def test_resource_helper_registers_while_running() -> None:
    manager, _, _ = make_manager()
    registry = CollectorRegistry()

    off = prometheus_resource(manager, registry=None)
    assert next(off) is None
    with pytest.raises(StopIteration):
        next(off)

    running = prometheus_resource(manager, registry=registry, cache="chat")
    collector = next(running)
    assert collector is not None
    assert collector.caches == ("chat",)
    with pytest.raises(StopIteration):
        next(running)  # resource shutdown
    assert generate_latest(registry) == b""
    await manager.aclose()


def test_importing_snak_runtime_imports_no_metrics_library() -> None:
    code = (
        "import sys, snak_runtime, snak_runtime.metrics, snak_runtime.testing\n"
        "loaded = [m for m in ('prometheus_client', 'opentelemetry') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


async def test_the_invalidation_subscriber_is_exported_under_the_same_label() -> None:
    manager, _, _ = make_manager()
    subscriber = await run_subscriber_scenario(manager)
    registry = CollectorRegistry()
    register(manager, registry=registry, cache="agents", subscriber=subscriber)
    samples, types = scrape(registry)
    for field, expected in SUBSCRIBER_EXPECTED.items():
        name = f"snak_runtime_invalidation_{field}"
        gauge = field in ("connected", "pending")
        assert value(samples, name if gauge else f"{name}_total", cache="agents") == expected
        assert types[name] == ("gauge" if gauge else "counter"), name
    for reason in DropReason:
        assert value(
            samples, "snak_runtime_invalidation_dropped_total", cache="agents", reason=reason.value
        ) == (1 if reason is DropReason.INVALID_JSON else 0)
    assert value(samples, "snak_runtime_removals_total", cache="agents", cause="resync") == 1
    assert unregister(manager, registry=registry)
    assert not any(
        name.startswith("snak_runtime_invalidation_") for name, _ in scrape(registry)[0]
    )


async def test_a_manager_without_subscriber_exports_no_invalidation_samples() -> None:
    manager, _, _ = make_manager()
    registry = CollectorRegistry()
    register(manager, registry=registry, cache="agents")
    samples, types = scrape(registry)
    assert types["snak_runtime_invalidation_received"] == "counter"
    assert not any(name.startswith("snak_runtime_invalidation_") for name, _ in samples)


async def test_quota_evictions_are_a_counter_and_a_removal_cause() -> None:
    manager = await run_quota_scenario()
    registry = CollectorRegistry()
    register(manager, registry=registry, cache="tenants")
    samples, types = scrape(registry)
    assert value(samples, "snak_runtime_quota_evictions_total", cache="tenants") == 1
    assert types["snak_runtime_quota_evictions"] == "counter"
    assert value(samples, "snak_runtime_removals_total", cache="tenants", cause="quota") == 1
    assert value(samples, "snak_runtime_removals_total", cache="tenants", cause="capacity") == 0
    await manager.aclose()
