"""Every example runs here, so the examples cannot rot: quickstart, FastAPI app, override tests,
versioned resync (against the session's server)."""

from __future__ import annotations

import inspect
import os
import sys
import warnings
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if (
    str(ROOT) not in sys.path
):  # `examples` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

import examples.test_overrides as override_examples  # noqa: E402
from examples import quickstart  # noqa: E402
from snak_runtime import CacheStats  # noqa: E402

try:
    import fastapi  # noqa: F401
except ImportError:  # pragma: no cover - only without the [examples] extra
    if os.environ.get("CI") == "true":
        raise  # CI installs the [examples] extra: never skip the FastAPI example there
    pytest.skip("the FastAPI example needs the [examples] extra", allow_module_level=True)

with warnings.catch_warnings():
    # Recent Starlette deprecates driving its test client with `httpx` in favour of `httpx2`;
    # either works for this test, so the import-time notice is not an error here.
    warnings.filterwarnings("ignore", message=r"Using `httpx` with `starlette\.testclient`")
    from fastapi.testclient import TestClient

from examples.fastapi_app.containers import AppContainer  # noqa: E402
from examples.fastapi_app.main import create_app  # noqa: E402
from examples.fastapi_app.services import AgentDirectory, ChatService  # noqa: E402

# ---------------------------------------------------------------------------- quickstart


async def test_quickstart_runs_its_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    stats = await quickstart.main()
    assert isinstance(stats, CacheStats)
    assert (stats.hits, stats.misses, stats.loads, stats.load_failures) == (4, 3, 1, 0)
    assert (stats.invalidations, stats.rebuilds, stats.rebuild_failures) == (1, 1, 0)
    removals = {cause: n for cause, n in stats.removals.items() if n}
    assert removals == {"invalidated": 1, "explicit": 1, "expired": 1}
    assert (stats.disposals, stats.dispose_failures, stats.size, stats.pinned) == (3, 0, 0, 0)
    out = capsys.readouterr().out
    assert "[support-bot v2]" in out
    assert "every agent closed: True" in out


# ---------------------------------------------------------------------------- overrides module

OverrideTest = Callable[[], Coroutine[Any, Any, None]]
OVERRIDE_TESTS: list[OverrideTest] = [
    fn
    for name, fn in inspect.getmembers(override_examples, inspect.iscoroutinefunction)
    if name.startswith("test_")
]


def test_override_examples_are_found() -> None:
    assert len(OVERRIDE_TESTS) >= 3


@pytest.mark.parametrize("example", OVERRIDE_TESTS, ids=lambda fn: fn.__name__)
async def test_override_example(example: OverrideTest) -> None:
    await example()


# ---------------------------------------------------------------------------- FastAPI app


@pytest.fixture
def container() -> AppContainer:
    return AppContainer()


@pytest.fixture
def client(container: AppContainer) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:  # runs the app's lifespan
        yield test_client
    container.unwire()


def _chat(client: TestClient, agent_id: str, user_id: str, text: str = "hi") -> Any:
    return client.post(
        f"/agents/{agent_id}/chat", json={"text": text}, headers={"X-User-Id": user_id}
    )


def _stats(client: TestClient) -> dict[str, int]:
    response = client.get("/cache/stats")
    assert response.status_code == 200
    stats: dict[str, int] = response.json()
    return stats


def test_chat_service_gets_the_manager_by_constructor_injection(container: AppContainer) -> None:
    service = container.chat_service()
    assert isinstance(service, ChatService)
    assert service._manager is container.runtime.manager()


def test_miss_builds_then_hits(client: TestClient, container: AppContainer) -> None:
    first = _chat(client, "support-bot", "alice", "hello")
    assert first.status_code == 200
    assert first.json() == {
        "agent_id": "support-bot",
        "cfg_version": 1,
        "reply": "support-bot (v1) heard: hello",
    }
    assert _stats(client) == {"hits": 0, "misses": 1, "denied": 0, "loads": 1, "size": 1}

    second = _chat(client, "support-bot", "alice", "again")
    assert second.status_code == 200
    assert second.json()["reply"] == "support-bot (v1) heard: again"
    assert _stats(client) == {"hits": 1, "misses": 1, "denied": 0, "loads": 1, "size": 1}
    assert len(container.directory().built) == 1  # built once, then served from the cache


def test_wrong_user_is_denied_without_revealing_the_agent(client: TestClient) -> None:
    assert _chat(client, "support-bot", "alice").status_code == 200

    denied = _chat(client, "support-bot", "mallory")
    unknown = _chat(client, "no-such-bot", "mallory")
    assert denied.status_code == unknown.status_code == 404
    assert denied.json() == unknown.json() == {"detail": "agent not found"}
    stats = _stats(client)
    assert stats["denied"] == 1
    assert stats["loads"] == 2  # the unknown agent's build ran and found nothing


def test_wrong_user_on_a_cold_cache_is_denied_too(client: TestClient) -> None:
    denied = _chat(client, "support-bot", "mallory")
    assert denied.status_code == 404
    assert denied.json() == {"detail": "agent not found"}
    assert _chat(client, "support-bot", "alice").status_code == 200


def test_shutdown_disposes_every_agent(container: AppContainer) -> None:
    directory: AgentDirectory = container.directory()
    with TestClient(create_app(container)) as client:
        assert _chat(client, "support-bot", "alice").status_code == 200
        manager = container.runtime.manager()
        assert not manager.closed
        assert [agent.closed for agent in directory.built] == [False]
    container.unwire()
    assert manager.closed
    assert [agent.closed for agent in directory.built] == [True]
    assert manager.stats().disposals == 1


# ---------------------------------------------------------------------------- versioned resync


async def test_versioned_resync_example_repairs_only_what_changed(
    redis_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from examples import versioned_resync

    stats, sub_stats, builds = await versioned_resync.main(redis_server.url)
    assert builds == [*(f"agent-{i}@1" for i in range(5)), "agent-1@2"]
    assert (stats.rebuilds, stats.rebuild_failures) == (1, 0)
    assert {k: n for k, n in stats.removals.items() if n} == {"invalidated": 1, "resync": 1}
    assert sub_stats.version_repaired == 2 and sub_stats.reconciliations >= 1
    assert sub_stats.version_source_failures == 0 and sub_stats.reconnects == 0
    out = capsys.readouterr().out
    assert "repaired by reconciliation" in out
