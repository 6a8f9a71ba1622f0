"""Testing code that uses the runtime cache: override the container's providers.

Copy this into your own test suite (``pytest`` with ``asyncio_mode = "auto"``). Rules:

- Create a fresh ``RuntimeContainer`` per test; its ``manager`` is a singleton.
- Override ``clock``, ``disposer``, ``guards`` or ``settings`` *before* the manager is first
  built: a built singleton keeps what it was built with. To rebuild it, shut the resources
  down, then ``container.reset_singletons()``.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.testing import FakeClock, RecordingDisposer


async def _resources(pending: Awaitable[None] | None) -> None:
    if pending is not None:  # init_resources()/shutdown_resources() return an awaitable
        await pending


def _seed(agent_id: str, agent: object) -> RuntimeSeed[str, object]:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        return None

    return RuntimeSeed(agent_id, "alice", 1, f"runtime of {agent_id}", rebuild, agent=agent)


async def test_fake_clock_expires_entries() -> None:
    container = RuntimeContainer()
    clock = FakeClock()
    with container.clock.override(clock):  # the manager below is built with the fake clock
        manager: AgentRuntimeManager[str, object] = container.manager()
        await manager.shadow_seed(_seed("support-bot", object()))
        clock.advance(manager.default_ttl_ms)  # no sleeping: time moves when told to
        assert await manager.acquire("support-bot") is None
        await manager.aclose()


async def test_recording_disposer_sees_every_disposal() -> None:
    container = RuntimeContainer()
    disposer = RecordingDisposer()
    container.disposer.override(disposer)
    await _resources(container.init_resources())
    manager: AgentRuntimeManager[Any, Any] = container.manager()
    agents = [object(), object()]
    for i, agent in enumerate(agents):
        await manager.shadow_seed(_seed(f"agent-{i}", agent))
    await _resources(container.shutdown_resources())  # aclose(): every agent disposed once
    assert [disposer.count(agent) for agent in agents] == [1, 1]


async def test_tiny_guard_caps_the_cache() -> None:
    container = RuntimeContainer()
    container.guards.override(GuardConfig(max_entries=1, max_ttl_ms=1_000))
    manager: AgentRuntimeManager[str, object] = container.manager()
    await manager.shadow_seed(_seed("first", object()))
    await manager.shadow_seed(_seed("second", object()))
    assert (manager.size, "first" in manager) == (1, False)
    assert manager.stats().evictions == 1
    await manager.aclose()


async def test_reset_singletons_rebuilds_the_manager_with_new_overrides() -> None:
    container = RuntimeContainer()
    first: AgentRuntimeManager[Any, Any] = container.manager()
    await first.aclose()
    container.guards.override(GuardConfig(max_entries=2))
    container.reset_singletons()  # settings, guards, clock, disposer and manager are rebuilt
    second: AgentRuntimeManager[Any, Any] = container.manager()
    assert second is not first and second.max_entries == 2
    await second.aclose()
