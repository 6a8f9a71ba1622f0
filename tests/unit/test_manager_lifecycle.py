"""Construction and lifecycle: constructor checks, start, aclose(grace_ms) and ``async with``
(CONTRACT §1 constructor, §6 closed-manager rules, §7 sweeper start, §10 aclose)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeManagerClosed
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, removal_event, settle

SAFETY_S = 5


class Gate:
    def __init__(self, result: Seed | None) -> None:
        self.result = result
        self.started = asyncio.Event()
        self.cancelled = False

    async def __call__(self, *args: object) -> Seed | None:
        self.started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        return self.result


def new_work(name: str, m: Manager, make_seed: MakeSeed) -> Coroutine[Any, Any, Any]:
    async def lease(build: bool) -> None:
        async def builder(agent_id: str) -> Seed | None:
            return make_seed(agent_id)

        async with m.lease("a", build=builder if build else None):
            pass

    calls: dict[str, Callable[[], Coroutine[Any, Any, Any]]] = {
        "acquire": lambda: m.acquire("a"),
        "acquire_with_agent": lambda: m.acquire_with_agent("a"),
        "lease": lambda: lease(False),
        "lease_build": lambda: lease(True),
        "shadow_seed": lambda: m.shadow_seed(make_seed("a", 9)),
        "on_invalidate": lambda: m.on_invalidate("a", 9),
        "evict": lambda: m.evict("a"),
        "evict_all": lambda: m.evict_all(),
        "start": lambda: m.start(),
    }
    return calls[name]()


WORK = ["acquire", "acquire_with_agent", "lease", "lease_build", "shadow_seed", "on_invalidate",
        "evict", "evict_all", "start"]


# ---------------------------------------------------------------- construction


@pytest.mark.parametrize("name", ["build_timeout_ms", "sweep_interval_ms", "dispose_timeout_ms"])
@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_constructor_rejects_bad_durations(name: str, bad: object) -> None:
    with pytest.raises(ValueError, match=name):
        AgentRuntimeManager(**{name: bad})  # type: ignore[arg-type]


def test_constructor_defaults() -> None:
    m: Manager = AgentRuntimeManager()
    assert (m.max_entries, m.default_ttl_ms, m.guards) == (64, 300_000, GuardConfig())
    assert (m.size, len(m), m.closed) == (0, 0, False)


def test_logger_is_under_snak_runtime_or_injected(
    make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    custom = logging.getLogger("host.cache")
    m = make_manager(logger=custom)
    with caplog.at_level(logging.DEBUG):
        m.release("nothing")
    assert [r.name for r in caplog.records] == ["host.cache"]
    m2 = make_manager()
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        m2.release("nothing")
    assert all(r.name.startswith("snak_runtime") for r in caplog.records)
    assert caplog.records


# ---------------------------------------------------------------- closed manager


@pytest.mark.parametrize("work", WORK)
async def test_new_work_after_aclose_raises(
    make_manager: MakeManager, make_seed: MakeSeed, work: str
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    await m.aclose()
    assert m.closed
    with pytest.raises(RuntimeManagerClosed):
        await new_work(work, m, make_seed)


@pytest.mark.parametrize("work", WORK)
async def test_new_work_is_refused_from_the_moment_aclose_is_called(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, work: str
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    await m.acquire("a")
    closing = asyncio.create_task(m.aclose(grace_ms=10_000))
    await settle()
    assert not closing.done()  # draining the pin
    with pytest.raises(RuntimeManagerClosed):
        await new_work(work, m, make_seed)
    m.release("a")
    async with asyncio.timeout(SAFETY_S):
        await closing
    assert_stats(m, pinned=0, size=0)


async def test_release_and_lease_exit_work_while_draining(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed: list[tuple[str, str]] = []
    m.on_removal(lambda agent_id, cause: removed.append((agent_id, str(cause))))
    a, b, c = make_seed("a"), make_seed("b"), make_seed("c")
    for seed in (a, b, c):
        await m.shadow_seed(seed)
    await m.acquire("a")
    inside = asyncio.Event()
    leave = asyncio.Event()

    async def leased() -> None:
        async with m.lease("b"):
            inside.set()
            await leave.wait()

    holder = asyncio.create_task(leased())
    await inside.wait()
    closing = asyncio.create_task(m.aclose(grace_ms=10_000))
    await settle()
    assert sorted(removed) == [("a", "shutdown"), ("b", "shutdown"), ("c", "shutdown")]
    assert disposer.disposed == [c.agent]  # every unpinned entry at once
    m.release("a")
    await settle()
    assert disposer.disposed == [c.agent, a.agent]  # at once, not after the grace period
    assert not closing.done()
    leave.set()
    async with asyncio.timeout(SAFETY_S):
        await holder
        await closing
    assert disposer.disposed == [c.agent, a.agent, b.agent]
    assert_stats(m, pinned=0, size=0, disposals=3, removals={"shutdown": 3})


async def test_after_grace_period_pinned_agents_are_disposed(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_manager()
    a, b = make_seed("a", 1), make_seed("a", 2)
    await m.shadow_seed(a)
    await m.acquire("a")
    await m.shadow_seed(b)  # a detached and pinned, b current and pinned
    await m.acquire("a")
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        async with asyncio.timeout(SAFETY_S):
            await m.aclose(grace_ms=50)
    assert sorted(map(id, disposer.disposed)) == sorted([id(a.agent), id(b.agent)])
    assert any("still in use" in r.getMessage() for r in caplog.records)
    m.release("a")
    m.release("a")
    m.release("a")
    await settle()
    assert len(disposer.disposed) == 2
    assert_stats(m, pinned=0, size=0, disposals=2)


async def test_aclose_waits_for_every_disposal(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    finished: list[object] = []

    class SlowDisposer:
        async def dispose(self, agent: object) -> None:
            await settle()  # takes a few loop rounds: aclose must wait for them
            finished.append(agent)

    m = make_manager(disposer=SlowDisposer())
    seeds = [make_seed(k) for k in "abc"]
    for seed in seeds:
        await m.shadow_seed(seed)
    await m.shadow_seed(make_seed("a", 2))  # one disposal already under way
    await m.aclose()
    assert len(finished) == 4


async def test_aclose_cancels_builds_in_flight(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    gate = Gate(make_seed("a"))

    async def user() -> None:
        async with m.lease("a", build=gate):
            pass

    users = [asyncio.create_task(user()) for _ in range(3)]
    await gate.started.wait()
    async with asyncio.timeout(SAFETY_S):
        await m.aclose()
        results = await asyncio.gather(*users, return_exceptions=True)
    assert gate.cancelled
    assert all(isinstance(r, RuntimeManagerClosed) for r in results), results
    assert_stats(m, size=0, pinned=0)


async def test_aclose_cancels_rebuilds_in_flight_and_their_waiters(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    gate = Gate(make_seed("a", 2))
    v1 = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(v1)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    waiters = [
        asyncio.create_task(m.acquire("a")),
        asyncio.create_task(m.shadow_seed(make_seed("a", 3))),
        asyncio.create_task(m.evict("a")),
        asyncio.create_task(m.on_invalidate("a", 4)),
    ]
    await settle()
    async with asyncio.timeout(SAFETY_S):
        await m.aclose()
        results = await asyncio.gather(invalidation, *waiters, return_exceptions=True)
    assert gate.cancelled
    assert all(isinstance(r, RuntimeManagerClosed) for r in results), results
    assert disposer.count(v1.agent) == 1
    assert_stats(m, size=0, pinned=0, rebuild_failures=1)


async def test_aclose_is_idempotent(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    async with asyncio.timeout(SAFETY_S):
        await asyncio.gather(m.aclose(), m.aclose())
        await m.aclose(grace_ms=5)
    assert len(disposer.disposed) == 1
    assert_stats(m, disposals=1, removals={"shutdown": 1})


async def test_aclose_of_an_unused_manager(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.aclose()
    assert m.closed


async def test_cancelling_an_aclose_caller_does_not_stop_the_close(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    await m.acquire("a")
    caller = asyncio.create_task(m.aclose(grace_ms=10_000))
    await settle()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    m.release("a")
    async with asyncio.timeout(SAFETY_S):
        await m.aclose()
    assert disposer.disposed == [seed.agent]


async def test_async_with_starts_the_sweeper_and_closes(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
) -> None:
    m = make_manager(sweep_interval_ms=10)
    a, b = make_seed("a", ttl_ms=100), make_seed("b")
    async with m as same:
        assert same is m
        await m.shadow_seed(a)
        await m.shadow_seed(b)
        swept = removal_event(m, 1)
        fake_clock.advance(100)
        async with asyncio.timeout(SAFETY_S):
            await swept.wait()  # m.size == 1
        await settle()
        assert disposer.disposed == [a.agent]
    assert m.closed
    assert disposer.disposed == [a.agent, b.agent]


async def test_async_with_closes_on_error(make_manager: MakeManager) -> None:
    m = make_manager()
    with pytest.raises(KeyError):
        async with m:
            raise KeyError("x")
    assert m.closed
