"""The scripted scenario both metrics exporters are checked against (imported by their tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.invalidation import InvalidationSubscriber
from snak_runtime.testing import FakeClock
from tests.helpers import Manager

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


SUBSCRIBER_EXPECTED: dict[str, float] = {
    "received": 1,
    "applied": 0,
    "failures": 0,
    "unknown_events": 0,
    "reconnects": 0,
    "resyncs": 1,
    "resync_evictions": 1,
    "version_checked": 2,
    "version_repaired": 2,
    "version_unusable": 0,
    "version_source_failures": 0,
    "reconciliations": 0,
    "version_source_abandoned": 0,
    "coalesced": 0,
    "restarts": 0,
    "connected": 0,
    "pending": 0,
}
"""What ``run_subscriber_scenario`` leaves in the subscriber's stats (and so in the exports)."""


async def run_subscriber_scenario(manager: Manager) -> InvalidationSubscriber:
    """A resync by version over the two cached agents (one changed, one deleted), and one
    payload that is not JSON. The subscriber never connects."""
    versions: dict[str, int] = {"a": 1, "b": 1}
    for agent_id in versions:
        await manager.shadow_seed(seed(agent_id))
    versions.update(a=2)
    del versions["b"]

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        return {a: versions.get(a) for a in agent_ids}

    sub = InvalidationSubscriber(manager, "redis://127.0.0.1:1/0", version_source=source)
    await sub._resync()
    sub.submit("{not json")
    await sub.drain()
    return sub


async def run_quota_scenario() -> Manager:
    """Issue 19: a quota of 1, two agents of one user installed: one quota eviction."""
    manager: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=4, max_ttl_ms=TTL_MS),
        settings=RuntimeCacheSettings(),
        clock=FakeClock(),
        max_entries_per_user=1,
    )
    await manager.shadow_seed(seed("q1"))
    await manager.shadow_seed(seed("q2"))
    return manager
