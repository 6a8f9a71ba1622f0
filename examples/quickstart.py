"""Quickstart: cache live agent runtimes in one process (no Redis, no files).

Run it with ``python examples/quickstart.py``. It shows a miss, a build on a lease, hits,
an invalidation that rebuilds, an eviction, an expiry and the stats.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from snak_runtime import AgentRuntimeManager, CacheStats, GuardConfig, RuntimeSeed
from snak_runtime.testing import FakeClock

BUILD_COST_S = 0.01  # building a real runtime (LLM clients, tools, memory) is the slow part


@dataclass(slots=True)
class Agent:
    """What the cache owns and disposes: here it only remembers that it was closed."""

    agent_id: str
    cfg_version: int
    closed: bool = False

    async def aclose(self) -> None:  # DefaultDisposer calls aclose(), dispose() or close()
        self.closed = True


@dataclass(frozen=True, slots=True)
class Runtime:
    """What callers use: a stand-in for a compiled agent graph."""

    agent_id: str
    cfg_version: int

    def reply(self, text: str) -> str:
        return f"[{self.agent_id} v{self.cfg_version}] you said {text!r}"


class AgentStore:
    """Where configurations live (a database in snak): version and owner per agent."""

    def __init__(self) -> None:
        self.versions = {"support-bot": 1, "sales-bot": 1}
        self.owners = {"support-bot": "alice", "sales-bot": "bob"}
        self.built: list[Agent] = []

    async def build(self, agent_id: str) -> RuntimeSeed[Runtime, Agent] | None:
        """The loader a lease calls on a miss; ``None`` means "no such agent"."""
        if agent_id not in self.versions:
            return None
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
            rebuild=rebuild,  # called by on_invalidate() when the configuration changes
            agent=agent,
        )


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.1f} ms"


async def main() -> CacheStats:
    store = AgentStore()
    clock = FakeClock()  # time moves only when told to, so the expiry below is instant
    manager: AgentRuntimeManager[Runtime, Agent] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=8, max_ttl_ms=60_000), clock=clock
    )
    async with manager:  # start() runs the expiry sweeper; aclose() at the end disposes all
        # 1. Nothing is cached yet: acquire() misses.
        print("acquire:", await manager.acquire("support-bot"))

        # 2. A lease with a builder: the miss builds (slow), the next leases hit (fast).
        for _ in range(3):
            started = time.perf_counter()
            async with manager.lease("support-bot", user_id="alice", build=store.build) as lease:
                print(lease.runtime.reply("hello"), _ms(started))

        # 3. acquire() pins the runtime until release(), as in the original.
        runtime = await manager.acquire("support-bot", user_id="alice")
        try:
            print("acquire:", runtime)
        finally:
            manager.release("support-bot")

        # 4. The configuration changes: on_invalidate() calls the entry's rebuild().
        store.versions["support-bot"] = 2
        await manager.on_invalidate("support-bot", 2)
        async with manager.lease("support-bot", user_id="alice") as lease:
            print("after invalidation:", lease.runtime.reply("hello again"))

        # 5. Prime another agent, then remove it explicitly (a deleted agent leaves like this).
        seed = await store.build("sales-bot")
        if seed is not None:
            await manager.shadow_seed(seed)
        print("evict sales-bot:", await manager.evict("sales-bot"))

        # 6. Entries expire a TTL after they were installed (60 s here, the guard's ceiling).
        clock.advance(manager.default_ttl_ms)
        print("support-bot still cached after the TTL:", "support-bot" in manager)
        print("acquire after the TTL:", await manager.acquire("support-bot"))

    stats = manager.stats()
    print(f"hits={stats.hits} misses={stats.misses} loads={stats.loads} rebuilds={stats.rebuilds}")
    removals = {cause: n for cause, n in stats.removals.items() if n}
    print(f"removals={removals} disposals={stats.disposals}")
    print("every agent closed:", all(agent.closed for agent in store.built))
    return stats


if __name__ == "__main__":
    asyncio.run(main())
