"""Disposal: exactly once per agent, never while pinned, off the caller's path, bounded and
contained (CONTRACT §3 ownership, §8)."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Awaitable, Callable

import pytest

from snak_runtime import AgentRuntimeManager, DefaultDisposer
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, removal_event, settle

SAFETY_S = 5


class PinAwareDisposer:
    """Fails the test if an agent is disposed while the test still holds a pin on it."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self.disposed: list[object] = []
        self.violations: list[object] = []

    def hold(self, agent: object) -> None:
        self.held[id(agent)] = self.held.get(id(agent), 0) + 1

    def drop(self, agent: object) -> None:
        self.held[id(agent)] -= 1

    async def dispose(self, agent: object) -> None:
        if self.held.get(id(agent), 0):
            self.violations.append(agent)
        self.disposed.append(agent)

    def count(self, agent: object) -> int:
        return sum(1 for a in self.disposed if a is agent)


def returning(seed: Seed | None) -> Callable[[], Awaitable[Seed | None]]:
    async def rebuild() -> Seed | None:
        return seed

    return rebuild


async def failing() -> Seed | None:
    raise ConnectionError("rebuild failed")


CAUSES = ["replaced", "expired-touch", "expired-sweep", "capacity", "invalidated-seed",
          "invalidated-none", "invalidated-error", "explicit", "shutdown"]


async def remove_by(cause: str, m: Manager, make_seed: MakeSeed, clock: FakeClock) -> None:
    """Make agent id "a" leave the map for ``cause``."""
    if cause == "replaced":
        await m.shadow_seed(make_seed("a", 2))
    elif cause == "expired-touch":
        clock.advance(m.default_ttl_ms)
        assert await m.acquire("a") is None
    elif cause == "expired-sweep":
        await m.start()
        swept = removal_event(m, 1)
        clock.advance(m.default_ttl_ms)
        async with asyncio.timeout(SAFETY_S):
            await swept.wait()  # m.size == 0
    elif cause == "capacity":
        for k in "bcd":
            await m.shadow_seed(make_seed(k))
    elif cause.startswith("invalidated"):
        if cause == "invalidated-error":
            with pytest.raises(ConnectionError):
                await m.on_invalidate("a", 2)
        else:
            await m.on_invalidate("a", 2)
    elif cause == "explicit":
        assert await m.evict("a")
    else:
        assert cause == "shutdown"
        await m.aclose(grace_ms=100)


def rebuild_for(cause: str, make_seed: MakeSeed) -> Callable[[], Awaitable[Seed | None]]:
    if cause == "invalidated-seed":
        return returning(make_seed("a", 2))
    if cause == "invalidated-error":
        return failing
    return returning(None)


@pytest.mark.parametrize("cause", CAUSES)
async def test_each_agent_is_disposed_exactly_once(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
    cause: str,
) -> None:
    disposer = PinAwareDisposer()
    # "capacity" evicts "a" as the least recently used entry
    m = make_manager(disposer=disposer, sweep_interval_ms=10, eviction="lru")
    seed = make_seed("a", 1, rebuild=rebuild_for(cause, make_seed))
    await m.shadow_seed(seed)
    await remove_by(cause, m, make_seed, fake_clock)
    await settle()
    assert disposer.count(seed.agent) == 1
    await m.aclose(grace_ms=100)
    assert disposer.count(seed.agent) == 1
    assert len(disposer.disposed) == len({id(a) for a in disposer.disposed})
    assert disposer.violations == []


@pytest.mark.parametrize("cause", [c for c in CAUSES if c not in ("capacity", "expired-sweep")])
async def test_never_disposed_while_pinned(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
    cause: str,
) -> None:
    disposer = PinAwareDisposer()
    m = make_manager(disposer=disposer)
    seed = make_seed("a", 1, rebuild=rebuild_for(cause, make_seed))
    await m.shadow_seed(seed)
    got = await m.acquire_with_agent("a")
    assert got is not None
    disposer.hold(got.agent)
    if cause == "shutdown":
        closing = asyncio.create_task(m.aclose(grace_ms=10_000))
        await settle()
    else:
        await remove_by(cause, m, make_seed, fake_clock)
        await settle()
    assert disposer.count(seed.agent) == 0
    disposer.drop(got.agent)
    m.release("a")
    await settle()
    assert disposer.count(seed.agent) == 1
    if cause == "shutdown":
        async with asyncio.timeout(SAFETY_S):
            await closing  # drained: no need to wait for the whole grace period
    assert disposer.violations == []
    assert_stats(m, pinned=0)


async def test_agent_shared_by_generations_is_disposed_once_when_the_last_goes(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    agent = object()
    await m.shadow_seed(make_seed("a", 1, agent=agent))
    await m.acquire("a")
    await m.shadow_seed(make_seed("a", 2, agent=agent))
    await m.acquire("a")
    await m.evict("a")
    m.release("a")
    await settle()
    assert disposer.count(agent) == 0
    m.release("a")
    await settle()
    assert disposer.count(agent) == 1
    await m.aclose(grace_ms=1)
    assert disposer.count(agent) == 1


async def test_agent_shared_by_two_ids_is_disposed_once(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    agent = object()
    await m.shadow_seed(make_seed("a", agent=agent))
    await m.shadow_seed(make_seed("b", agent=agent))
    await m.evict("a")
    await settle()
    assert disposer.count(agent) == 0
    await m.evict("b")
    await settle()
    assert disposer.count(agent) == 1


async def test_agentless_entries_dispose_nothing(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", agent=None))
    await m.evict("a")
    await m.aclose(grace_ms=1)
    assert_stats(m, disposals=0, dispose_failures=0)


class BlockingDisposer:
    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started: list[object] = []
        self.finished: list[object] = []

    async def dispose(self, agent: object) -> None:
        self.started.append(agent)
        await self.release.wait()
        self.finished.append(agent)


async def test_disposal_runs_off_the_callers_path(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    disposer = BlockingDisposer()
    m = make_manager(disposer=disposer)
    v1 = make_seed("a", 1)
    async with asyncio.timeout(SAFETY_S):
        await m.shadow_seed(v1)
        await m.shadow_seed(make_seed("a", 2))  # v1 is being disposed, slowly
        await settle()
        assert disposer.started == [v1.agent]
        assert await m.acquire("a") is not None
        m.release("a")
        assert await m.evict("a") is True
        await m.shadow_seed(make_seed("a", 3))
    gc.collect()  # disposal tasks are kept referenced: collecting must not lose them
    disposer.release.set()
    await settle()
    assert sorted(map(id, disposer.finished)) == sorted(map(id, disposer.started))
    assert len(disposer.finished) == 2
    assert_stats(m, disposals=2, dispose_failures=0)


class FaultyDisposer:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls = 0

    async def dispose(self, agent: object) -> None:
        self.calls += 1
        if self.mode == "raise":
            raise OSError("close failed")
        await asyncio.Event().wait()  # hangs, whatever its own timeout would have been


@pytest.mark.parametrize("mode", ["raise", "hang"])
async def test_failing_disposer_is_logged_counted_and_contained(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
    assert_stats: AssertStats,
    mode: str,
) -> None:
    disposer = FaultyDisposer(mode)
    m = make_manager(disposer=disposer, dispose_timeout_ms=50)
    await m.shadow_seed(make_seed("agent-x"))
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        assert await m.evict("agent-x") is True
        await m.shadow_seed(make_seed("agent-y"))
        async with asyncio.timeout(SAFETY_S):
            await m.aclose(grace_ms=1)
    assert disposer.calls == 2
    assert_stats(m, disposals=2, dispose_failures=2, size=0)
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("'agent-x'" in msg for msg in messages)
    assert any("'agent-y'" in msg for msg in messages)


class StubbornDisposer:
    """Ignores cancellation: keeps waiting until the test lets it finish."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls = 0
        self.finished = False

    async def dispose(self, agent: object) -> None:
        self.calls += 1
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue  # swallowed on purpose
        self.finished = True


async def test_disposer_ignoring_cancellation_cannot_hang_shutdown(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    disposer = StubbornDisposer()
    m = make_manager(disposer=disposer, dispose_timeout_ms=50)
    await m.shadow_seed(make_seed("agent-x"))
    assert await m.evict("agent-x") is True
    async with asyncio.timeout(SAFETY_S):
        await m.aclose(grace_ms=1)
    assert disposer.calls == 1 and not disposer.finished  # shutdown did not wait for it
    assert_stats(m, disposals=1, dispose_failures=1, size=0)
    disposer.release.set()
    async with asyncio.timeout(SAFETY_S):
        while not disposer.finished:
            await asyncio.sleep(0)


class PlainDisposer:
    """Not async, against the protocol: the manager still copes."""

    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.disposed: list[object] = []

    def dispose(self, agent: object) -> None:
        if self.fail:
            raise OSError("cannot close")
        self.disposed.append(agent)


@pytest.mark.parametrize("fail", [False, True])
async def test_plain_function_disposer_is_called_and_its_failure_counted(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, fail: bool
) -> None:
    disposer = PlainDisposer(fail)
    m = make_manager(disposer=disposer)
    seed = make_seed("a")
    await m.shadow_seed(seed)
    assert await m.evict("a") is True
    await m.wait_for_disposals()
    assert disposer.disposed == ([] if fail else [seed.agent])
    assert_stats(m, disposals=1, dispose_failures=int(fail))


async def test_default_disposer_closes_agents(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    closed: list[str] = []

    class AsyncAgent:
        async def aclose(self) -> None:
            closed.append("aclose")

    class SyncAgent:
        def close(self) -> None:
            closed.append("close")

    m = make_manager(disposer=DefaultDisposer(timeout_ms=1_000))
    await m.shadow_seed(make_seed("a", agent=AsyncAgent()))
    await m.shadow_seed(make_seed("b", agent=SyncAgent()))
    await m.shadow_seed(make_seed("c", agent=object()))
    await m.aclose(grace_ms=1)
    assert sorted(closed) == ["aclose", "close"]
    assert_stats(m, disposals=3, dispose_failures=0)


async def test_manager_default_disposer_is_used(make_seed: MakeSeed) -> None:
    closed: list[str] = []

    class Agent:
        def dispose(self) -> None:
            closed.append("dispose")

    m: Manager = AgentRuntimeManager(clock=FakeClock())
    await m.shadow_seed(make_seed("a", agent=Agent()))
    await m.aclose(grace_ms=1)
    assert closed == ["dispose"]
