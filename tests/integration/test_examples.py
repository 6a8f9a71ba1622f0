"""Every example runs here, so the examples cannot rot: quickstart, FastAPI app, override tests,
versioned resync (against the session's server)."""

from __future__ import annotations

import asyncio
import gc
import importlib
import inspect
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
if (
    str(ROOT) not in sys.path
):  # `examples` is a directory of the repository, not an installed package
    sys.path.insert(0, str(ROOT))

from fastapi.routing import APIRoute  # noqa: E402
from redis_server import RedisServer  # noqa: E402

import examples.test_overrides as override_examples  # noqa: E402
from examples import quickstart  # noqa: E402
from examples.fastapi_app.containers import AppContainer  # noqa: E402
from examples.fastapi_app.main import create_app, router  # noqa: E402
from examples.fastapi_app.services import Agent, AgentDirectory, ConfigService  # noqa: E402
from snak_runtime import AgentRuntimeManager, CacheStats, RuntimeNotCached  # noqa: E402
from tests.fastapi_client import TestClient  # noqa: E402

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


# ---------------------------------------------------------------------------- LangGraph agent


@pytest.fixture
def langgraph_example() -> Any:
    """The LangGraph example module (its dependencies are in the dev extra: CI never skips)."""
    try:
        return importlib.import_module("examples.langgraph_agent")
    except ImportError:  # pragma: no cover - only without the [langgraph] extra
        if os.environ.get("CI") == "true":
            raise
        pytest.skip("the LangGraph example needs the [langgraph] extra")


async def test_langgraph_agent_runs_its_scenario(
    langgraph_example: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    result = await langgraph_example.main()
    assert result.answers == [
        "research-bot v1: here is what I found",
        "research-bot v1: here is what I found",
        "research-bot v2: here is what I found",
    ]
    assert result.tool_requests == 3  # every graph run called the loopback tool service
    assert result.builds == 2  # one build, one rebuild: the second question was a hit
    assert result.open_clients_before_close == 1  # the replaced graph's client was closed
    assert result.open_clients == 0  # shutdown closed the cached one
    stats = result.stats
    assert (stats.hits, stats.misses, stats.loads, stats.rebuilds) == (2, 1, 1, 1)
    assert (stats.disposals, stats.dispose_failures, stats.size, stats.pinned) == (2, 0, 0, 0)
    assert "context: 'docs for /search?q=what is snak?'" in capsys.readouterr().out


async def test_langgraph_agent_disposal_closes_its_http_client(langgraph_example: Any) -> None:
    tools = langgraph_example.ToolServer()
    await tools.start()
    configs = langgraph_example.AgentConfigs(tool_url=tools.url)
    manager: AgentRuntimeManager[Any, Any] = AgentRuntimeManager()
    try:
        answer, _ = await langgraph_example.ask(manager, configs, "research-bot", "alice", "q")
        assert answer == "research-bot v1: here is what I found"
        async with manager.lease("research-bot", user_id="alice") as lease:
            assert lease.agent is not None
            http = lease.agent.http
            assert not http.is_closed
            assert await manager.evict("research-bot")
            await asyncio.sleep(0)
            assert not http.is_closed  # pinned by this lease: disposal waits for it
        await manager.wait_for_disposals()
        assert http.is_closed and configs.open_clients == 0
        with pytest.raises(RuntimeNotCached):
            await langgraph_example.ask(manager, configs, "no-such-bot", "alice", "q")
        with pytest.raises(RuntimeNotCached):  # not alice's: rebuilt, then denied
            await langgraph_example.ask(manager, configs, "research-bot", "mallory", "q")
    finally:
        await manager.aclose()
        await tools.aclose()
    assert configs.open_clients == 0


# ---------------------------------------------------------------------------- FastAPI app


@pytest.fixture
def container() -> AppContainer:
    return AppContainer()


@pytest.fixture
def client(container: AppContainer) -> Iterator[TestClient]:
    with TestClient(create_app(container)) as test_client:  # runs the app's lifespan
        yield test_client


def _chat(client: TestClient, agent_id: str, user_id: str, text: str = "hi") -> Any:
    return client.post(
        f"/agents/{agent_id}/chat", json={"text": text}, headers={"X-User-Id": user_id}
    )


def _bump(client: TestClient, agent_id: str, user_id: str) -> Any:
    return client.post(f"/agents/{agent_id}/config", headers={"X-User-Id": user_id})


def _stats(client: TestClient) -> dict[str, int]:
    response = client.get("/cache/stats")
    assert response.status_code == 200
    stats: dict[str, int] = response.json()
    return stats


def test_config_service_gets_the_manager_by_constructor_injection(
    container: AppContainer,
) -> None:
    service = container.config_service()
    assert isinstance(service, ConfigService)
    assert service._manager is container.runtime.manager()


def test_miss_builds_then_hits(client: TestClient, container: AppContainer) -> None:
    first = _chat(client, "support-bot", "alice", "hello")
    assert first.status_code == 200
    assert first.json() == {
        "agent_id": "support-bot",
        "cfg_version": 1,
        "reply": "support-bot (v1) heard: hello",
    }
    expected = {"hits": 0, "misses": 1, "denied": 0, "loads": 1, "rebuilds": 0, "size": 1}
    assert _stats(client) == expected

    second = _chat(client, "support-bot", "alice", "again")
    assert second.status_code == 200
    assert second.json()["reply"] == "support-bot (v1) heard: again"
    assert _stats(client) == {**expected, "hits": 1}
    assert container.directory().builds == 1  # built once, then served from the cache


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
        assert (directory.builds, directory.open_agents) == (1, 1)
    assert manager.closed
    assert (directory.builds, directory.open_agents) == (1, 0)
    assert manager.stats().disposals == 1


def test_a_configuration_change_is_applied_and_served(
    client: TestClient, container: AppContainer
) -> None:
    assert _chat(client, "support-bot", "alice").json()["cfg_version"] == 1
    changed = _bump(client, "support-bot", "alice")
    assert changed.status_code == 200
    # One process (no REDIS_*): applied here, nothing to publish.
    assert changed.json() == {"agent_id": "support-bot", "cfg_version": 2, "published": False}
    assert _chat(client, "support-bot", "alice").json()["reply"] == "support-bot (v2) heard: hi"
    assert _stats(client)["rebuilds"] == 1
    assert _bump(client, "support-bot", "mallory").status_code == 404  # only the owner
    assert _bump(client, "no-such-bot", "alice").status_code == 404
    assert container.directory().builds == 2


def test_the_app_keeps_no_agent_it_built(client: TestClient, container: AppContainer) -> None:
    """Memory stays bounded: 150 rebuilds later, only a bounded number of agents is alive."""
    for _ in range(150):
        assert _bump(client, "support-bot", "alice").status_code == 200
        assert _chat(client, "support-bot", "alice").status_code == 200
    directory: AgentDirectory = container.directory()
    assert directory.builds == 150
    gc.collect()
    open_agents = [o for o in gc.get_objects() if isinstance(o, Agent) and not o.closed]
    assert len(open_agents) == directory.open_agents <= 2  # the cached one (+ one closing)
    # Closed ones linger only in the cache's lazy-deletion queue (compacted past 64 stale).
    assert sum(isinstance(o, Agent) for o in gc.get_objects()) <= 70


def test_routes_use_async_dependencies_not_the_thread_pool() -> None:
    """A plain-function dependency (a ``Provide`` marker is one) runs in FastAPI's thread pool."""
    routes = [route for route in router.routes if isinstance(route, APIRoute)]
    calls = [dep.call for route in routes for dep in route.dependant.dependencies]
    assert {route.path for route in routes} >= {"/agents/{agent_id}/chat", "/cache/stats"}
    assert len(calls) >= len(routes)  # every route takes its service by a dependency
    on_the_loop = (inspect.iscoroutinefunction, inspect.isasyncgenfunction)  # the lease: a yield
    assert all(any(test(call) for test in on_the_loop) for call in calls), calls


def _subscribers(url: str, channel: str) -> int:
    import redis

    with redis.Redis.from_url(url) as sync_client:
        return int(dict(sync_client.pubsub_numsub(channel))[channel.encode()])


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_a_fleet_converges_on_a_published_change(
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two processes' worth of apps on one Redis: a change made on one reaches the other."""
    monkeypatch.setenv("REDIS_URL", redis_server.url)
    caplog.set_level(logging.WARNING, logger="snak_runtime")
    with (
        TestClient(create_app(AppContainer())) as first,
        TestClient(create_app(AppContainer())) as second,
    ):
        _wait_for(lambda: _subscribers(redis_server.url, "agent_cfg_invalidate") == 2,
                  "both subscribers")
        for client in (first, second):
            assert _chat(client, "support-bot", "alice").json()["cfg_version"] == 1

        changed = _bump(first, "support-bot", "alice").json()
        assert changed == {"agent_id": "support-bot", "cfg_version": 2, "published": True}
        assert _chat(first, "support-bot", "alice").json()["cfg_version"] == 2
        _wait_for(lambda: _stats(second)["rebuilds"] == 1, "the second app's rebuild")
        assert _chat(second, "support-bot", "alice").json()["cfg_version"] == 2

        assert _bump(second, "support-bot", "alice").json()["cfg_version"] == 3
        _wait_for(lambda: _stats(first)["rebuilds"] == 2, "the first app's rebuild")
        assert _chat(first, "support-bot", "alice").json()["cfg_version"] == 3
        # Each app rebuilt once per change: its own echo of a change is a no-op.
        assert _stats(first)["rebuilds"] == _stats(second)["rebuilds"] == 2
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


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


def test_the_same_app_runs_under_two_test_clients(container: AppContainer) -> None:
    """``with TestClient(app)`` twice in one process: the second gets a fresh manager."""
    app = create_app(container)
    managers = []
    for _ in range(2):
        with TestClient(app) as client:
            assert _chat(client, "support-bot", "alice").status_code == 200
            assert _stats(client)["loads"] == 1  # a fresh cache each time
            managers.append(container.runtime.manager())
    first, second = managers
    assert first is not second
    assert first.closed and second.closed
    directory: AgentDirectory = container.directory()
    assert (directory.builds, directory.open_agents) == (2, 0)


async def test_the_readme_uvicorn_command_serves_the_app() -> None:
    """``uvicorn examples.fastapi_app.main:app``: the ``examples`` extra installs uvicorn."""
    import httpx
    import uvicorn

    container = AppContainer()
    server = uvicorn.Server(uvicorn.Config(create_app(container), log_level="warning"))
    listening = _loopback_socket()
    serving = asyncio.create_task(server.serve(sockets=[listening]))
    try:
        while not server.started:
            assert not serving.done(), "uvicorn stopped before it started"
            await asyncio.sleep(0.01)
        (port,) = {s.getsockname()[1] for srv in server.servers for s in srv.sockets}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
            reply = await http.post(
                "/agents/support-bot/chat", json={"text": "hi"}, headers={"X-User-Id": "alice"}
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["reply"] == "support-bot (v1) heard: hi"
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=30)
        listening.close()


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
