"""Both exporters export exactly the metrics catalog, and a new row reaches both."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import Gauge, InMemoryMetricReader, Sum
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from snak_runtime.invalidation import InvalidationStats
from snak_runtime.metrics import _catalog, otel, prometheus
from snak_runtime.metrics._catalog import (
    CACHE_METRICS,
    INVALIDATION_METRICS,
    Duration,
    Labelled,
    Metric,
    Scalar,
)
from tests.unit.metrics_scenario import make_manager, run_subscriber_scenario

CATALOG: tuple[Metric[Any], ...] = (*CACHE_METRICS, *INVALIDATION_METRICS)

# (name, type, help) of each Prometheus family; (name, kind, unit, description) of each
# OpenTelemetry instrument: what the catalog says each exporter writes.
PromFamily = tuple[str, str, str]
OtelInstrument = tuple[str, str, str, str]


def _prometheus_expected(catalog: tuple[Metric[Any], ...]) -> set[PromFamily]:
    expected = set()
    for metric in catalog:
        name = "snak_runtime_" + metric.name.replace(".", "_")
        if isinstance(metric, Duration):
            expected.add((f"{name}_duration_seconds", "histogram", metric.help))
        else:
            name += "_seconds" if metric.unit == "s" else ""
            expected.add((name, metric.kind, metric.help))
    return expected


def _otel_expected(catalog: tuple[Metric[Any], ...]) -> set[OtelInstrument]:
    expected = set()
    for metric in catalog:
        name = f"snak_runtime.{metric.name}"
        if isinstance(metric, Duration):
            expected.add((f"{name}.time", "counter", "s", f"Total time spent in {metric.what}."))
            expected.add((f"{name}.count", "counter", f"{{{metric.name}}}",
                          f"Calls of {metric.what} that took at most `le` seconds (cumulative)."))
        else:
            expected.add((name, metric.kind, metric.unit, metric.help))
    return expected


async def _scraped() -> set[PromFamily]:
    manager, _, _ = make_manager()
    registry = CollectorRegistry()
    prometheus.register(manager, registry=registry, subscriber=await run_subscriber_scenario(
        manager))
    families = text_string_to_metric_families(generate_latest(registry).decode())
    scraped = {(family.name, family.type, family.documentation) for family in families}
    await manager.aclose()
    return scraped


async def _observed() -> set[OtelInstrument]:
    manager, _, _ = make_manager()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    otel.instrument(manager, meter_provider=provider,
                    subscriber=await run_subscriber_scenario(manager))
    data = reader.get_metrics_data()
    assert data is not None
    observed = set()
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                assert isinstance(metric.data, Sum | Gauge)
                kind = "counter" if isinstance(metric.data, Sum) else "gauge"
                observed.add((metric.name, kind, metric.unit or "", metric.description or ""))
    provider.shutdown()
    await manager.aclose()
    return observed


async def test_prometheus_exports_exactly_the_catalog() -> None:
    expected = _prometheus_expected(CATALOG)
    assert len(expected) == len(CATALOG)  # no two rows collide on a name
    assert await _scraped() == expected


async def test_opentelemetry_exports_exactly_the_catalog() -> None:
    assert await _observed() == _otel_expected(CATALOG)


def test_the_exporters_tables_are_views_of_the_catalog() -> None:
    counters = [m for m in CACHE_METRICS if isinstance(m, Scalar) and m.kind == "counter"]
    assert [(name, doc) for name, _, doc in prometheus.COUNTERS] == [
        (f"snak_runtime_{m.name}", m.help) for m in counters
    ]
    assert [(name, unit, doc) for name, _, unit, doc in otel.COUNTERS] == [
        (f"snak_runtime.{m.name}", m.unit, m.help) for m in counters
    ]
    assert [field for field, _, _ in otel.INVALIDATION_COUNTERS] == [
        field for _, field, _ in prometheus.INVALIDATION_COUNTERS
    ]


def test_every_invalidation_stats_field_has_a_catalog_row() -> None:
    """A counter added to ``InvalidationStats`` is exported once its catalog row exists (a
    duration ``x`` reads the two fields ``x_buckets`` and ``x_time_ms``)."""
    exported = set()
    for m in INVALIDATION_METRICS:
        name = m.name.removeprefix("invalidation.")
        exported |= {f"{name}_buckets", f"{name}_time_ms"} if isinstance(m, Duration) else {name}
    fields = {field.name for field in dataclasses.fields(InvalidationStats)}
    assert fields == exported


async def test_a_new_catalog_row_reaches_both_exporters(monkeypatch: pytest.MonkeyPatch) -> None:
    """Adding a counter is one row: neither exporter names its metrics."""
    row: Scalar[InvalidationStats] = Scalar(
        "invalidation.example", "counter", "{message}", "A counter added in one row.",
        lambda stats: float(stats.received) * 10,
    )
    labelled: Labelled[InvalidationStats] = Labelled(
        "invalidation.example_by", "{message}", "A split counter added in one row.", "kind",
        lambda stats: (("a", 1.0), ("b", 2.0)),
    )
    extended = (*INVALIDATION_METRICS, row, labelled)
    for module in (_catalog, otel, prometheus):
        monkeypatch.setattr(module, "INVALIDATION_METRICS", extended)

    assert await _scraped() == _prometheus_expected((*CACHE_METRICS, *extended))
    assert await _observed() == _otel_expected((*CACHE_METRICS, *extended))
