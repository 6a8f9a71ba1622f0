"""Every example runs here, so the examples cannot rot: quickstart, FastAPI app, override tests."""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
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
    # The oldest declared FastAPI (.ci/floors.txt) brings a Starlette whose test client names
    # an alias newer anyio releases deprecate: the floor test run imports it too.
    warnings.filterwarnings("ignore", message=r"The anyio\.abc\.BlockingPortal alias")
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


def test_the_same_app_runs_under_two_test_clients(container: AppContainer) -> None:
    """``with TestClient(app)`` twice in one process: the second gets a fresh manager."""
    app = create_app(container)
    managers = []
    for _ in range(2):
        with TestClient(app) as client:
            assert _chat(client, "support-bot", "alice").status_code == 200
            assert _stats(client)["loads"] == 1  # a fresh cache each time
            managers.append(container.runtime.manager())
    container.unwire()
    first, second = managers
    assert first is not second
    assert first.closed and second.closed
    directory: AgentDirectory = container.directory()
    assert [agent.closed for agent in directory.built] == [True, True]


async def test_the_readme_uvicorn_command_serves_the_app() -> None:
    """``uvicorn examples.fastapi_app.main:app``: the ``examples`` extra installs uvicorn."""
    import httpx
    import uvicorn

    container = AppContainer()  # the module's own `app`, on a container this test can unwire
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
        container.unwire()


def _loopback_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock
