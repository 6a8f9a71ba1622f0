"""The subscriber on a Redis client the application already has (issue 27): one client serves
the app's own keys and the subscription; the subscriber neither builds nor closes it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis_server import RedisServer

from snak_runtime import AgentRuntimeManager, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import InvalidationSubscriber, publish_invalidation
from snak_runtime.invalidation import _client as client_module

Manager = AgentRuntimeManager[str, object]


async def _seed(manager: Manager, agent_id: str, version: int) -> None:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        return None

    await manager.shadow_seed(
        RuntimeSeed(
            agent_id=agent_id, user_id="alice", cfg_version=version,
            runtime=f"{agent_id}@{version}", rebuild=rebuild, agent=object(),
        )
    )


def _removed(manager: Manager) -> asyncio.Event:
    event = asyncio.Event()
    manager.on_removal(lambda agent_id, cause: event.set())
    return event


async def test_one_client_serves_the_apps_keys_and_the_subscriber(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[Any] = []
    real_make_client = client_module.make_client

    def recording_make_client(*args: Any, **kwargs: Any) -> Any:
        built.append(real_make_client(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(
        "snak_runtime.invalidation._subscriber.make_client", recording_make_client
    )
    # A client that retries (redis-py's own default for Redis(...)): the subscription must not.
    client = Redis.from_url(redis_server.url, retry=Retry(ExponentialBackoff(), 3))
    manager: Manager = AgentRuntimeManager()
    subscriber = InvalidationSubscriber(manager, client=client)
    assert subscriber.endpoint.describe() == f"redis://127.0.0.1:{redis_server.port}/0"
    try:
        await subscriber.start()
        async with asyncio.timeout(120):
            await subscriber.wait_connected()
        subscribed = list(client.connection_pool._in_use_connections)
        assert [c.retry._retries for c in subscribed] == [0]  # no silent resubscription
        await client.set("app:cfg_version:bot", 2)  # the app's version store, same client
        await _seed(manager, "bot", 1)
        removed = _removed(manager)
        assert await publish_invalidation("bot", 1, event="cfg_deleted", redis=client) == 1
        async with asyncio.timeout(120):
            await removed.wait()
        assert "bot" not in manager
    finally:
        await subscriber.stop()
        await manager.aclose()
    assert built == []  # the subscriber built no client of its own
    assert await client.get("app:cfg_version:bot") == b"2"  # not closed: still the app's
    pool = client.connection_pool
    connections = [*pool._available_connections, *pool._in_use_connections]
    assert len(connections) == 2  # the app's and the subscription's, both back in the pool
    # The subscription ran without retries; its connection got the app's policy back.
    assert [c.retry._retries for c in connections] == [3, 3]
    await client.aclose()


async def test_the_container_passes_the_apps_client_to_its_subscriber(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A client given starts the subscriber even with no REDIS_* variable set."""
    for name in ("REDIS_URL", "REDIS_HOST", "REDIS_PORT"):
        monkeypatch.delenv(name, raising=False)
    client = Redis.from_url(redis_server.url)
    container = RuntimeContainer()
    container.invalidation_client.override(client)
    await container.init_resources()  # type: ignore[misc]
    try:
        subscriber = await container.invalidation()
        assert isinstance(subscriber, InvalidationSubscriber)
        async with asyncio.timeout(120):
            await subscriber.wait_connected()
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
    assert not subscriber.connected
    assert await client.ping()  # the container did not close the app's client
    await client.aclose()
