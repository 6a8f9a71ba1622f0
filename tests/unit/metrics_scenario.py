"""The scripted scenario both metrics exporters are checked against (imported by their tests)."""

from __future__ import annotations

import asyncio

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.testing import FakeClock

Manager = AgentRuntimeManager[str, object]

TTL_MS = 10_000
class Agent:
    def __init__(self, name: str) -> None:
        self.name = name


class FailingForBad:
    """Disposes every agent, but raises for the agent named ``bad``."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def dispose(self, agent: object) -> None:
        assert isinstance(agent, Agent)
        self.calls.append(agent.name)
        if agent.name == "bad":
            raise RuntimeError("cannot close bad")


def seed(agent_id: str, version: int = 1) -> RuntimeSeed[str, object]:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        return seed(agent_id, version + 1)

    return RuntimeSeed(
        agent_id=agent_id,
        user_id="u1",
        cfg_version=version,
        runtime=f"{agent_id}-v{version}",
        rebuild=rebuild,
        agent=Agent(agent_id),
    )


async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
    if agent_id == "boom":
        raise RuntimeError("build failed")
    return seed(agent_id)


def make_manager() -> tuple[Manager, FakeClock, FailingForBad]:
    clock, disposer = FakeClock(), FailingForBad()
    manager: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=2, max_ttl_ms=TTL_MS),
        settings=RuntimeCacheSettings(),
        clock=clock,
        disposer=disposer,
    )
    return manager, clock, disposer


async def run_scenario(manager: Manager, clock: FakeClock, disposer: FailingForBad) -> None:
    """Misses and loads, hits, a denial, an invalidation, a capacity eviction whose dispose
    fails, an expiry. See EXPECTED for the counts."""
    await manager.shadow_seed(seed("bad"))
    async with manager.lease("a", build=build):  # miss, load
        pass
    with pytest.raises(RuntimeError, match="build failed"):  # miss, failed load
        async with manager.lease("boom", build=build):
            pass
    assert await manager.acquire("a") == "a-v1"  # hit
    manager.release("a")
    assert await manager.acquire("a", user_id="intruder") is None  # denied
    assert await manager.acquire("nobody") is None  # miss
    await manager.on_invalidate("a", 2)  # rebuild: a-v1 removed (invalidated), disposed
    await manager.shadow_seed(seed("c"))  # capacity: LRU "bad" evicted, its dispose raises
    assert await manager.acquire("c") == "c-v1"  # hit
    manager.release("c")
    clock.advance(TTL_MS)
    assert await manager.acquire("c") is None  # miss: expired, removed, disposed
    for _ in range(100):
        if len(disposer.calls) == 3 and manager.stats().disposals == 3:
            break
        await asyncio.sleep(0)
    await manager.wait_for_disposals()  # let the failing dispose record its failure
    assert sorted(disposer.calls) == ["a", "bad", "c"]
