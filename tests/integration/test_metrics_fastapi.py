"""The FastAPI example's ``/metrics`` route and the container's optional ``metrics`` provider."""

from __future__ import annotations

import os
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # `examples` is a directory of the repository, not a package
    sys.path.insert(0, str(ROOT))

from tests.fastapi_client import TestClient  # noqa: E402

try:
    import prometheus_client  # noqa: F401
except ImportError:  # pragma: no cover - only without the [prometheus] extra
    if os.environ.get("CI") == "true":
        raise  # CI installs the extra: never skip there
    pytest.skip("needs the [prometheus] extra", allow_module_level=True)

from prometheus_client import CollectorRegistry  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from examples.fastapi_app.containers import AppContainer  # noqa: E402
from examples.fastapi_app.main import create_app  # noqa: E402
from snak_runtime.containers import RuntimeContainer  # noqa: E402


@pytest.fixture
def container() -> AppContainer:
    return AppContainer()


@pytest.fixture
def client(container: AppContainer) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:  # runs the app's lifespan
        yield test_client
    container.unwire()


def _scrape(client: TestClient) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def _chat(client: TestClient, agent_id: str, user_id: str) -> Any:
    return client.post(
        f"/agents/{agent_id}/chat", json={"text": "hi"}, headers={"X-User-Id": user_id}
    )


def test_metrics_route_exposes_the_cache(client: TestClient) -> None:
    cache = frozenset({("cache", "default")})
    before = _scrape(client)
    assert before[("snak_runtime_misses_total", cache)] == 0
    assert before[("snak_runtime_max_entries", cache)] == 64

    assert _chat(client, "support-bot", "alice").status_code == 200  # miss, build
    assert _chat(client, "support-bot", "alice").status_code == 200  # hit
    assert _chat(client, "support-bot", "mallory").status_code == 404  # denied

    after = _scrape(client)
    assert after[("snak_runtime_hits_total", cache)] == 1
    assert after[("snak_runtime_misses_total", cache)] == 1
    assert after[("snak_runtime_denied_total", cache)] == 1
    assert after[("snak_runtime_loads_total", cache)] == 1
    assert after[("snak_runtime_entries", cache)] == 1
    assert after[("snak_runtime_pinned", cache)] == 0
    assert after[("snak_runtime_build_duration_seconds_count", cache)] == 1
    assert after[("snak_runtime_build_duration_seconds_sum", cache)] > 0


def test_the_collector_leaves_the_registry_at_shutdown(container: AppContainer) -> None:
    registry = container.runtime.metrics_registry()
    assert isinstance(registry, CollectorRegistry)
    with TestClient(create_app(container)) as client:
        assert "snak_runtime_hits_total" in client.get("/metrics").text
    container.unwire()
    assert list(registry.collect()) == []  # unregistered by the resource's shutdown


async def _resources(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


async def test_runtime_container_metrics_provider() -> None:
    off = RuntimeContainer()
    await _resources(off.init_resources())
    assert off.metrics() is None  # no registry: nothing registered
    await _resources(off.shutdown_resources())

    registry = CollectorRegistry()
    on = RuntimeContainer()
    on.metrics_registry.override(registry)
    await _resources(on.init_resources())
    collector = on.metrics()
    assert collector is not None
    assert collector.caches == ("default",)
    names = {family.name for family in registry.collect()}
    assert {"snak_runtime_hits", "snak_runtime_build_duration_seconds"} <= names
    await _resources(on.shutdown_resources())
    assert list(registry.collect()) == []
