"""The host's own services: agent configurations (the database) and configuration changes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from snak_runtime import AgentRuntimeManager, RuntimeSeed
from snak_runtime.invalidation import InvalidationSettings, publish_invalidation

BUILD_COST_S = 0.005
KEY_PREFIX = "snak-example:cfg_version:"


@dataclass(slots=True)
class Agent:
    """A live agent the cache owns; the default disposer calls ``aclose()``."""

    agent_id: str
    cfg_version: int
    directory: AgentDirectory
    closed: bool = False

    async def aclose(self) -> None:
        if not self.closed:
            self.closed = True
            self.directory.open_agents -= 1


@dataclass(frozen=True, slots=True)
class Runtime:
    agent_id: str
    cfg_version: int

    def reply(self, text: str) -> str:
        return f"{self.agent_id} (v{self.cfg_version}) heard: {text}"


class VersionStore(Protocol):
    """Where each agent's configuration version lives: shared by the fleet in Redis mode."""

    async def version(self, agent_id: str) -> int: ...

    async def bump(self, agent_id: str) -> int: ...

    async def publish(self, agent_id: str, version: int) -> bool:
        """Tell the other processes; false when there are none to tell (one process)."""
        ...


@dataclass(slots=True)
class MemoryVersions:
    """One process (the embedded default): versions in a dict, one key per known agent."""

    versions: dict[str, int] = field(default_factory=dict)

    async def version(self, agent_id: str) -> int:
        return self.versions.get(agent_id, 1)

    async def bump(self, agent_id: str) -> int:
        self.versions[agent_id] = self.versions.get(agent_id, 1) + 1
        return self.versions[agent_id]

    async def publish(self, agent_id: str, version: int) -> bool:
        return False


class RedisVersions:
    """A fleet: versions in Redis, so every process rebuilds the version that was published."""

    def __init__(self, client: Any, channel: str) -> None:
        self.client = client
        self.channel = channel

    async def version(self, agent_id: str) -> int:
        raw = await self.client.get(KEY_PREFIX + agent_id)
        return 1 if raw is None else int(raw)

    async def bump(self, agent_id: str) -> int:
        key = KEY_PREFIX + agent_id
        await self.client.set(key, 1, nx=True)  # an agent starts at version 1
        return int(await self.client.incr(key))

    async def publish(self, agent_id: str, version: int) -> bool:
        await publish_invalidation(
            agent_id, version, event="cfg_updated", redis=self.client, channel=self.channel
        )
        return True


@dataclass(slots=True)
class AgentDirectory:
    """Agent configurations by id: owner and version. Builds runtimes on cache misses.

    It keeps counters, not the agents it built: the cache owns them (a list of every agent
    ever built is a leak: about 4 MB a minute at 500 builds a second).
    """

    versions: VersionStore = field(default_factory=MemoryVersions)
    owners: dict[str, str] = field(default_factory=lambda: {"support-bot": "alice"})
    builds: int = 0
    open_agents: int = 0

    async def build(self, agent_id: str) -> RuntimeSeed[Runtime, Agent] | None:
        if agent_id not in self.owners:
            return None  # the lease raises RuntimeNotCached
        version = await self.versions.version(agent_id)
        await asyncio.sleep(BUILD_COST_S)
        agent = Agent(agent_id, version, self)
        self.builds += 1
        self.open_agents += 1

        async def rebuild() -> RuntimeSeed[Runtime, Agent] | None:
            return await self.build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id,
            user_id=self.owners[agent_id],
            cfg_version=version,
            runtime=Runtime(agent_id, version),
            rebuild=rebuild,
            agent=agent,
        )


def make_redis(settings: InvalidationSettings) -> Any:
    """The app's Redis client when ``REDIS_*`` is set (it connects on first use), else None."""
    if not settings.configured:
        return None
    from redis.asyncio import Redis

    endpoint = settings.endpoint()
    if endpoint.url is not None:
        return Redis.from_url(endpoint.url)
    return Redis(
        host=endpoint.host, port=endpoint.port, password=endpoint.password, db=endpoint.db
    )


async def close_redis(client: Any) -> AsyncIterator[None]:
    """The container's Resource that closes the app's client at shutdown."""
    try:
        yield None
    finally:
        if client is not None:
            await client.aclose()


def make_versions(client: Any, channel: str) -> VersionStore:
    """Redis when the app has a client, else a dict."""
    return MemoryVersions() if client is None else RedisVersions(client, channel)


class ConfigService:
    """Changes an agent's configuration: bump its version, then tell every cache.

    This process applies the change at once (read your own write); with Redis configured it
    also publishes it, and every process's subscriber calls ``on_invalidate`` (this one's
    too: a no-op, its cache already has that version). The rebuilds read the new version from
    the shared store, so the fleet converges on it.
    """

    def __init__(self, manager: AgentRuntimeManager[Any, Any], directory: AgentDirectory) -> None:
        self._manager = manager
        self._directory = directory

    async def bump(self, agent_id: str, user_id: str) -> tuple[int, bool]:
        """The new version and whether it was published; ``KeyError`` if not the owner's."""
        if self._directory.owners.get(agent_id) != user_id:
            raise KeyError(agent_id)
        version = await self._directory.versions.bump(agent_id)
        await self._manager.on_invalidate(agent_id, version)
        return version, await self._directory.versions.publish(agent_id, version)
