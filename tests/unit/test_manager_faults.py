"""Fault injection: disposers that raise or hang, rebuilds that raise or hang, builders that
raise or hang, listeners that raise; the cache's invariants hold throughout (CONTRACT §5, §6,
§8, §10)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from snak_runtime import GuardConfig, RemovalCause
from snak_runtime.testing import FakeClock
from tests.helpers import AssertStats, MakeManager, MakeSeed, Seed, settle

SAFETY_S = 10
MAX_ENTRIES = 3


class FaultAgent:
    def __init__(self, name: str, fault: str) -> None:
        self.name = name
        self.fault = fault  # how disposing it goes: "ok", "raise" or "hang"

    def __repr__(self) -> str:
        return f"FaultAgent({self.name!r}, {self.fault!r})"


class CheckingDisposer:
    """Disposes by each agent's fault; records every breach of the disposal invariants."""

    def __init__(self) -> None:
        self.held: dict[int, int] = {}
        self.times: dict[int, int] = {}
        self.violations: list[str] = []

    def hold(self, agent: object) -> None:
        self.held[id(agent)] = self.held.get(id(agent), 0) + 1

    def drop(self, agent: object) -> None:
        self.held[id(agent)] -= 1

    async def dispose(self, agent: object) -> None:
        if self.held.get(id(agent), 0):
            self.violations.append(f"{agent!r} disposed while pinned")
        self.times[id(agent)] = self.times.get(id(agent), 0) + 1
        if self.times[id(agent)] > 1:
            self.violations.append(f"{agent!r} disposed twice")
        assert isinstance(agent, FaultAgent)
        if agent.fault == "raise":
            raise OSError(f"cannot close {agent.name}")
        if agent.fault == "hang":
            await asyncio.Event().wait()


FAULT_MIXES = {
    "all-ok": ["ok"],
    "all-raise": ["raise"],
    "all-hang": ["hang"],
    "mixed": ["ok", "raise", "hang"],
}


@pytest.mark.parametrize("mix", FAULT_MIXES)
async def test_invariants_hold_under_injected_faults(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
    mix: str,
) -> None:
    faults = FAULT_MIXES[mix]
    disposer = CheckingDisposer()
    m = make_manager(
        disposer=disposer,
        guards=GuardConfig(max_entries=MAX_ENTRIES, max_ttl_ms=1_000),
        dispose_timeout_ms=50,
        build_timeout_ms=100,
    )

    def broken_listener(agent_id: str, cause: RemovalCause) -> None:
        raise ValueError("listener bug")

    m.on_removal(broken_listener)
    accepted: list[FaultAgent] = []
    counter = iter(range(10_000))

    def seed(agent_id: str, version: int, rebuild: Any = None, **kw: Any) -> Seed:
        n = next(counter)
        agent = FaultAgent(f"{agent_id}#{n}", faults[n % len(faults)])
        return make_seed(agent_id, version, agent=agent, rebuild=rebuild, **kw)

    async def install(s: Seed) -> None:
        await m.shadow_seed(s)
        accepted.append(s.agent)  # type: ignore[arg-type]

    def check() -> None:
        stats = m.stats()
        assert stats.pinned >= 0
        assert stats.pinned == sum(disposer.held.values())
        if stats.size > MAX_ENTRIES:
            assert stats.pinned > 0, "above capacity with nothing pinned"
        assert disposer.violations == []

    async def raising_rebuild() -> Seed | None:
        raise ConnectionError("rebuild failed")

    hung_rebuild_started = asyncio.Event()

    async def hanging_rebuild() -> Seed | None:
        hung_rebuild_started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    good_v2 = seed("c", 2)

    async def good_rebuild() -> Seed | None:
        return good_v2

    async with asyncio.timeout(SAFETY_S):
        # a: pinned, then its rebuild raises
        await install(seed("a", 1, raising_rebuild))
        got_a = await m.acquire_with_agent("a")
        assert got_a is not None
        disposer.hold(got_a.agent)
        with pytest.raises(ConnectionError):
            await m.on_invalidate("a", 2)
        assert await m.acquire("a") is None
        check()

        # b: leased, then its rebuild hangs and the invalidation is cancelled
        await install(seed("b", 1, hanging_rebuild))
        inside, leave = asyncio.Event(), asyncio.Event()

        async def lease_b() -> None:
            async with m.lease("b") as lease:
                disposer.hold(lease.agent)
                inside.set()
                await leave.wait()
                disposer.drop(lease.agent)

        holder = asyncio.create_task(lease_b())
        await inside.wait()
        invalidation = asyncio.create_task(m.on_invalidate("b", 2))
        await hung_rebuild_started.wait()
        invalidation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await invalidation
        assert "b" not in m
        check()

        # c: a good rebuild
        await install(seed("c", 1, good_rebuild))
        await m.on_invalidate("c", 2)
        accepted.append(good_v2.agent)  # type: ignore[arg-type]
        check()

        # d: builder raises; e: builder hangs past build_timeout_ms
        async def raising_build(agent_id: str) -> Seed | None:
            raise RuntimeError("builder failed")

        async def hanging_build(agent_id: str) -> Seed | None:
            await asyncio.Event().wait()
            raise AssertionError("unreachable")

        with pytest.raises(RuntimeError, match="builder failed"):
            async with m.lease("d", build=raising_build):
                pass
        with pytest.raises(TimeoutError):
            async with m.lease("e", build=hanging_build):
                pass
        assert ("d" in m, "e" in m) == (False, False)
        check()

        # i: a rebuild that hangs past build_timeout_ms
        await install(seed("i", 1, hanging_rebuild))
        with pytest.raises(TimeoutError):
            await m.on_invalidate("i", 2)
        check()

        # churn: capacity evictions, replacements, expiry, while disposers fail
        for round_ in range(3):
            for k in "fgh":
                await install(seed(k, round_ + 1))
                check()
            fake_clock.advance(400)
        fake_clock.advance(1_000)
        for k in "fgh":
            assert await m.acquire(k) is None
        check()

        # let the pins go
        disposer.drop(got_a.agent)
        m.release("a")
        leave.set()
        await holder
        await settle()
        check()
        await m.aclose(grace_ms=50)

    check()
    missing = [a for a in accepted if disposer.times.get(id(a), 0) != 1]
    assert missing == [], "after aclose every accepted agent is disposed exactly once"
    failing = sum(1 for a in accepted if a.fault != "ok")
    assert_stats(
        m,
        pinned=0,
        size=0,
        disposals=len(accepted),
        dispose_failures=failing,
        rebuilds=4,  # a raised, b hung and was cancelled, c succeeded, i timed out
        rebuild_failures=3,
        loads=2,
        load_failures=2,
    )
    # every accepted generation left the map exactly once
    assert sum(m.stats().removals.values()) == len(accepted)


async def test_disposer_that_hangs_cannot_hang_shutdown(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    class Hangs:
        async def dispose(self, agent: object) -> None:
            await asyncio.Event().wait()

    m = make_manager(disposer=Hangs(), dispose_timeout_ms=50)
    for k in "abc":
        await m.shadow_seed(make_seed(k))
    await m.acquire("a")
    async with asyncio.timeout(SAFETY_S):
        await m.aclose(grace_ms=50)
    assert_stats(m, disposals=3, dispose_failures=3, size=0)


async def test_listener_and_disposer_faults_do_not_reach_callers(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    class Raises:
        async def dispose(self, agent: object) -> None:
            raise OSError("nope")

    m = make_manager(disposer=Raises())
    seen: list[RemovalCause] = []

    def listener(agent_id: str, cause: RemovalCause) -> None:
        seen.append(cause)
        raise RuntimeError("listener bug")

    m.on_removal(listener)
    await m.shadow_seed(make_seed("a", 1))
    await m.shadow_seed(make_seed("a", 2))
    assert await m.evict("a") is True
    await settle()
    assert seen == [RemovalCause.REPLACED, RemovalCause.EXPLICIT]
    assert_stats(m, disposals=2, dispose_failures=2, size=0)
