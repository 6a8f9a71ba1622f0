"""RuntimeContainer: providers, overrides, resource lifecycle, guard file, host embedding."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import pytest
from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer
from dependency_injector.wiring import Provide, inject

from snak_runtime import (
    DefaultDisposer,
    GuardConfig,
    MonotonicClock,
    RuntimeCacheSettings,
    RuntimeManagerClosed,
    RuntimeSeed,
)
from snak_runtime._config import GuardConfigError
from snak_runtime.containers import RuntimeContainer
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import Manager


@pytest.fixture
def container() -> RuntimeContainer:
    return RuntimeContainer()


async def _resources(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


def _seed(agent_id: str, *, user_id: str = "u1", version: int = 1, agent: object = None) -> Any:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        return None

    return RuntimeSeed(
        agent_id=agent_id,
        user_id=user_id,
        cfg_version=version,
        runtime=f"runtime:{agent_id}:v{version}",
        rebuild=rebuild,
        agent=agent if agent is not None else object(),
    )


def _write_guards(path: Path, cache: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"global": {}, "agent_runtime": {"cache": cache}}))
    return path


# ---------------------------------------------------------------------------- defaults


def test_defaults_come_from_builtin_guards_and_environment(container: RuntimeContainer) -> None:
    assert container.guards() == GuardConfig()
    assert isinstance(container.settings(), RuntimeCacheSettings)
    assert isinstance(container.clock(), MonotonicClock)
    assert isinstance(container.disposer(), DefaultDisposer)
    manager: Manager = container.manager()
    assert (manager.max_entries, manager.default_ttl_ms) == (64, 300_000)
    assert manager.limits.warnings == ()


def test_one_manager_per_container() -> None:
    first, second = RuntimeContainer(), RuntimeContainer()
    assert first.manager() is first.manager()
    assert first.manager() is not second.manager()


def test_environment_variables_reach_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "5")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_SECONDS", "2")
    manager: Manager = RuntimeContainer().manager()
    assert (manager.max_entries, manager.default_ttl_ms) == (5, 2_000)
    assert "AGENT_RUNTIME_CACHE_MAX_ENTRIES" in manager.limits.max_entries_source


def test_expiry_options_from_the_environment_and_the_container_paths(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_IDLE_TTL_MS", "60000")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_JITTER", "0.25")
    manager: Manager = RuntimeContainer().manager()
    assert (manager.idle_ttl_ms, manager.ttl_jitter) == (60_000, 0.25)
    container = RuntimeContainer()
    container.idle_ttl_ms.override(5_000)  # a container path is a keyword: beats the variable
    container.ttl_jitter.override(0.0)
    manager = container.manager()
    assert (manager.idle_ttl_ms, manager.ttl_jitter) == (5_000, 0.0)
def test_eviction_from_the_environment_or_the_container(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert RuntimeContainer().manager().eviction == "adaptive"  # the default
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_EVICTION", "lru")
    assert RuntimeContainer().manager().eviction == "lru"
    container = RuntimeContainer()
    container.eviction.override("cost-aware")  # the container path beats the variable
    assert container.manager().eviction == "cost-aware"


# ---------------------------------------------------------------------------- overrides


async def test_clock_override_expires_entries(container: RuntimeContainer) -> None:
    clock = FakeClock()
    with container.clock.override(clock):
        manager: Manager = container.manager()
    await manager.shadow_seed(_seed("a1"))
    clock.advance(manager.default_ttl_ms - 1)
    assert "a1" in manager
    clock.advance(1)
    assert "a1" not in manager
    assert await manager.acquire("a1") is None
    assert manager.stats().expirations == 1
    await manager.aclose()


async def test_disposer_override_records_disposals(container: RuntimeContainer) -> None:
    disposer = RecordingDisposer()
    container.disposer.override(disposer)
    manager: Manager = container.manager()
    agent = object()
    await manager.shadow_seed(_seed("a1", agent=agent))
    assert await manager.evict("a1") is True
    await asyncio.wait_for(disposer.event.wait(), timeout=5)
    assert disposer.count(agent) == 1
    await manager.aclose()
    assert disposer.disposed == [agent]


async def test_guards_override_caps_size(container: RuntimeContainer) -> None:
    container.guards.override(GuardConfig(max_entries=2, max_ttl_ms=1_000))
    manager: Manager = container.manager()
    assert (manager.max_entries, manager.default_ttl_ms) == (2, 1_000)
    for agent_id in ("a1", "a2", "a3"):
        await manager.shadow_seed(_seed(agent_id))
    assert manager.size == 2
    assert "a3" in manager  # never the one just installed
    assert manager.stats().evictions == 1
    await manager.aclose()


async def test_settings_override_is_used(container: RuntimeContainer) -> None:
    container.settings.override(
        providers.Object(RuntimeCacheSettings.model_validate({"AGENT_RUNTIME_CACHE_TTL_MS": "50"}))
    )
    manager: Manager = container.manager()
    assert manager.default_ttl_ms == 50


def test_override_after_first_build_needs_reset(container: RuntimeContainer) -> None:
    first: Manager = container.manager()
    container.guards.override(GuardConfig(max_entries=3))
    assert container.manager() is first  # the singleton keeps what it was built with
    container.reset_singletons()
    second: Manager = container.manager()
    assert second is not first
    assert second.max_entries == 3


# ---------------------------------------------------------------------------- resources


async def test_init_resources_starts_and_shutdown_disposes_every_agent(
    container: RuntimeContainer,
) -> None:
    disposer = RecordingDisposer()
    container.disposer.override(disposer)
    await _resources(container.init_resources())
    manager: Manager = container.manager()
    assert not manager.closed
    agents = [object() for _ in range(3)]
    for i, agent in enumerate(agents):
        await manager.shadow_seed(_seed(f"a{i}", agent=agent))
    pinned = await manager.acquire("a0")
    assert pinned is not None
    manager.release("a0")

    await _resources(container.shutdown_resources())

    assert manager.closed
    assert sorted(map(id, disposer.disposed)) == sorted(map(id, agents))
    assert all(disposer.count(agent) == 1 for agent in agents)
    assert manager.stats().removals["shutdown"] == 3
    with pytest.raises(RuntimeManagerClosed):
        await manager.acquire("a1")


async def test_lifespan_resource_yields_the_manager(container: RuntimeContainer) -> None:
    await _resources(container.init_resources())
    assert await container.lifespan() is container.manager()
    await _resources(container.shutdown_resources())


async def test_init_resources_runs_the_expiry_sweeper(container: RuntimeContainer) -> None:
    clock, disposer = FakeClock(), RecordingDisposer()
    container.clock.override(clock)
    container.disposer.override(disposer)
    container.manager.add_kwargs(sweep_interval_ms=1)
    await _resources(container.init_resources())
    manager: Manager = container.manager()
    agent = object()
    await manager.shadow_seed(_seed("idle", agent=agent))
    clock.advance(manager.default_ttl_ms)
    # No traffic at all: only the sweeper can dispose it.
    await asyncio.wait_for(disposer.event.wait(), timeout=5)
    assert disposer.disposed == [agent]
    assert manager.size == 0
    assert manager.stats().expirations == 1
    await _resources(container.shutdown_resources())


async def test_reset_singletons_after_shutdown_gives_a_fresh_manager(
    container: RuntimeContainer,
) -> None:
    await _resources(container.init_resources())
    first: Manager = container.manager()
    await _resources(container.shutdown_resources())
    container.reset_singletons()
    await _resources(container.init_resources())
    second: Manager = container.manager()
    assert second is not first
    assert first.closed and not second.closed
    await _resources(container.shutdown_resources())
    assert second.closed


async def test_shutdown_then_init_gives_a_fresh_working_manager(
    container: RuntimeContainer,
) -> None:
    """A Resource comes back fresh on the next init: no reset_singletons() needed."""
    disposer = RecordingDisposer()
    container.disposer.override(disposer)
    for round_ in range(3):
        await _resources(container.init_resources())
        manager: Manager = container.manager()
        assert not manager.closed
        assert await container.lifespan() is manager
        agent = object()
        await manager.shadow_seed(_seed("a", agent=agent, version=round_ + 1))
        async with manager.lease("a", user_id="u1") as lease:
            assert lease.runtime == f"runtime:a:v{round_ + 1}"
        await _resources(container.shutdown_resources())
        assert manager.closed
        assert disposer.count(agent) == 1
        assert container.manager() is not manager


# ---------------------------------------------------------------------------- guard file


async def test_guards_config_path_is_honoured(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _write_guards(tmp_path / "guards.json", {"max_entries": 3, "max_ttl_ms": 1_500})
    monkeypatch.setenv("GUARDS_CONFIG_PATH", str(path))
    container = RuntimeContainer()
    guards = container.guards()
    assert (guards.max_entries, guards.max_ttl_ms) == (3, 1_500)
    await _resources(container.init_resources())
    manager: Manager = container.manager()
    assert (manager.max_entries, manager.default_ttl_ms) == (3, 1_500)
    await _resources(container.shutdown_resources())


async def test_guard_file_caps_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = _write_guards(tmp_path / "guards.json", {"max_entries": 3, "max_ttl_ms": 1_500})
    monkeypatch.setenv("GUARDS_CONFIG_PATH", str(path))
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "10")
    manager: Manager = RuntimeContainer().manager()
    assert manager.max_entries == 3
    assert any("AGENT_RUNTIME_CACHE_MAX_ENTRIES" in w for w in manager.limits.warnings)


def _guards_json(**cache: object) -> str:
    return json.dumps({"agent_runtime": {"cache": cache}})


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (None, "agent_runtime.cache"),
        ("{not json", "agent_runtime.cache"),
        (_guards_json(max_ttl_ms=1), "max_entries"),
        (_guards_json(max_entries=0, max_ttl_ms=1), "max_entries"),
        (_guards_json(max_entries=2, max_ttl_ms=1.0), "max_ttl_ms"),
    ],
    ids=["missing-file", "invalid-json", "missing-key", "non-positive", "float"],
)
async def test_bad_guards_config_path_fails_start_up_naming_file_and_key(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, key: str
) -> None:
    path = tmp_path / "guards.json"
    if content is not None:
        path.write_text(content)
    monkeypatch.setenv("GUARDS_CONFIG_PATH", str(path))
    container = RuntimeContainer()
    with pytest.raises(GuardConfigError) as caught:
        await _resources(container.init_resources())
    message = str(caught.value)
    assert str(path) in message
    assert key in message
    assert "\n" not in message
    await _resources(container.shutdown_resources())  # nothing was started: a no-op


# ---------------------------------------------------------------------------- host embedding


class HostService:
    """A host service that receives the manager by constructor injection."""

    def __init__(self, manager: Manager) -> None:
        self.manager = manager

    async def runtime_for(self, agent_id: str, user_id: str) -> str | None:
        runtime = await self.manager.acquire(agent_id, user_id=user_id)
        if runtime is not None:
            self.manager.release(agent_id)
        return runtime


class HostContainer(DeclarativeContainer):
    runtime = providers.Container(RuntimeContainer)
    service = providers.Factory(HostService, manager=runtime.manager)


@inject
async def wired_handler(
    agent_id: str,
    manager: Manager = Provide[HostContainer.runtime.manager],
) -> int | None:
    return manager.version_of(agent_id)


@pytest.fixture
def host() -> Iterator[HostContainer]:
    c = HostContainer()
    c.wire(modules=[sys.modules[__name__]])
    yield c
    c.unwire()


async def test_host_container_embeds_runtime_container(host: HostContainer) -> None:
    disposer = RecordingDisposer()
    host.runtime.disposer.override(disposer)
    await _resources(host.init_resources())  # starts the embedded lifespan too
    manager: Manager = host.runtime.manager()
    service = host.service()
    assert service.manager is manager
    assert host.service() is not service  # a Factory, sharing the one manager
    assert host.service().manager is manager

    agent = object()
    await manager.shadow_seed(_seed("a1", user_id="alice", agent=agent))
    assert await service.runtime_for("a1", "alice") == "runtime:a1:v1"
    assert await service.runtime_for("a1", "mallory") is None

    await _resources(host.shutdown_resources())
    assert manager.closed
    assert disposer.disposed == [agent]


async def test_inject_wiring_gives_the_host_the_same_manager(host: HostContainer) -> None:
    await _resources(host.init_resources())
    manager: Manager = host.runtime.manager()
    await manager.shadow_seed(_seed("a1", version=7))
    assert await wired_handler("a1") == 7
    assert await wired_handler("absent") is None
    await _resources(host.shutdown_resources())


async def test_embedded_providers_can_be_overridden(host: HostContainer) -> None:
    clock = FakeClock()
    host.runtime.clock.override(clock)
    host.runtime.guards.override(GuardConfig(max_entries=1, max_ttl_ms=100))
    await _resources(host.init_resources())
    manager: Manager = host.service().manager
    await manager.shadow_seed(_seed("a1"))
    await manager.shadow_seed(_seed("a2"))
    assert manager.size == 1
    clock.advance(100)
    assert await wired_handler("a2") is None
    await _resources(host.shutdown_resources())


def test_refresh_options_reach_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: environment, and the container paths as explicit keywords beating it."""
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS", "30000")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING", "true")
    from_env: Manager = RuntimeContainer().manager()
    assert (from_env.refresh_ahead_ms, from_env.stale_while_rebuilding) == (30_000, True)
    container = RuntimeContainer()
    container.refresh_ahead_ms.override(5_000)
    container.stale_while_rebuilding.override(False)
    overridden: Manager = container.manager()
    assert (overridden.refresh_ahead_ms, overridden.stale_while_rebuilding) == (5_000, False)
