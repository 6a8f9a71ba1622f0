"""The host's own services: an agent directory (the database) and a chat service."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from snak_runtime import AgentRuntimeManager, RuntimeSeed

BUILD_COST_S = 0.005


@dataclass(slots=True)
class Agent:
    """A live agent the cache owns; the default disposer calls ``aclose()``."""

    agent_id: str
    cfg_version: int
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class Runtime:
    agent_id: str
    cfg_version: int

    def reply(self, text: str) -> str:
        return f"{self.agent_id} (v{self.cfg_version}) heard: {text}"


@dataclass(slots=True)
class AgentDirectory:
    """Agent configurations by id: owner and version. Builds runtimes on cache misses."""

    owners: dict[str, str] = field(default_factory=lambda: {"support-bot": "alice"})
    versions: dict[str, int] = field(default_factory=lambda: {"support-bot": 1})
    built: list[Agent] = field(default_factory=list)

    async def build(self, agent_id: str) -> RuntimeSeed[Runtime, Agent] | None:
        if agent_id not in self.owners:
            return None  # the lease raises RuntimeNotCached
        await asyncio.sleep(BUILD_COST_S)
        version = self.versions[agent_id]
        agent = Agent(agent_id, version)
        self.built.append(agent)

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


class ChatService:
    """Answers a user's message with the agent's cached runtime (constructor-injected manager)."""

    def __init__(self, manager: AgentRuntimeManager[Any, Any], directory: AgentDirectory) -> None:
        self._manager = manager
        self._directory = directory

    async def chat(self, agent_id: str, user_id: str, text: str) -> tuple[int, str]:
        """The agent's version and reply; raises ``RuntimeNotCached`` for unknown or not-yours.

        The lease checks the owner and pins the runtime for the duration of the call.
        """
        async with self._manager.lease(
            agent_id, user_id=user_id, build=self._directory.build
        ) as lease:
            runtime: Runtime = lease.runtime
            return lease.cfg_version, runtime.reply(text)
