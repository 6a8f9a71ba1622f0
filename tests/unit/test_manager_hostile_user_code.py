"""User code that ignores or fakes cancellation (issue 23, finding 5; CONTRACT §12): builds,
rebuilds, refreshes and disposers are bounded by their timeouts without their cooperation.
Past the bound a call is abandoned (a seed it returns later is disposed, an exception it
raises later is logged once), and a CancelledError that user code raises on its own is that
call's failure, never the end of a caller that nobody cancelled.

The tests assert completion and counts, never elapsed time: ``HANG_GUARD_S`` only turns a
hang into a failure. Every stubborn coroutine is released at teardown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from snak_runtime import RuntimeManagerClosed
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, settle

HANG_GUARD_S = 30
# Small bounds, so that a test spends milliseconds in them; nothing asserts how long.
FAST = {"build_timeout_ms": 50, "dispose_timeout_ms": 50}


class Stubborn:
    """User code that swallows every cancellation until the test releases it."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self.cancels = 0

    async def hold(self) -> None:
        self.started.set()
        try:
            while not self.release.is_set():
                try:
                    await self.release.wait()
                except asyncio.CancelledError:
                    self.cancels += 1
        finally:
            self.ended.set()


@pytest.fixture
async def stubborn(make_manager: MakeManager) -> AsyncIterator[Callable[[], Stubborn]]:
    """``stubborn()``: a new Stubborn; each one started is released and awaited at teardown
    (before the managers close), so no coroutine is left pending."""
    made: list[Stubborn] = []

    def factory() -> Stubborn:
        made.append(Stubborn())
        return made[-1]

    yield factory
    for s in made:
        s.release.set()
    async with asyncio.timeout(HANG_GUARD_S):
        for s in made:
            if s.started.is_set():
                await s.ended.wait()
    await settle()


def stubborn_build(s: Stubborn, result: Seed | BaseException | None) -> Any:
    async def build(agent_id: str) -> Seed | None:
        await s.hold()
        if isinstance(result, BaseException):
            raise result
        return result

    return build


def stubborn_rebuild(s: Stubborn, result: Seed | BaseException | None) -> Any:
    async def rebuild() -> Seed | None:
        await s.hold()
        if isinstance(result, BaseException):
            raise result
        return result

    return rebuild


async def lease_outcome(m: Manager, agent_id: str, build: Any) -> BaseException | str:
    try:
        async with m.lease(agent_id, build=build) as lease:
            return str(lease.runtime)
    except BaseException as exc:
        return exc


async def still_usable(m: Manager, make_seed: MakeSeed, agent_id: str = "a") -> None:
    """The id serves again: a new build, a write, an invalidation and an evict complete."""
    fresh = make_seed(agent_id, 50)

    async def build(aid: str) -> Seed:
        return fresh

    async with m.lease(agent_id, build=build) as lease:
        assert lease.runtime == fresh.runtime
    await m.shadow_seed(make_seed(agent_id, 100))
    await m.on_invalidate(agent_id, 100)
    assert await m.evict(agent_id) is True


# ---------------------------------------------------------------- builds


async def test_build_ignoring_cancellation_fails_every_waiter_with_timeout(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    m = make_manager(**FAST)
    s = stubborn()
    late = make_seed("a", 1)
    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(
            *(lease_outcome(m, "a", stubborn_build(s, late)) for _ in range(3))
        )
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert s.cancels >= 1 and not s.ended.is_set()
        assert internals(m).calls.abandoned == 1
        assert_stats(m, loads=1, load_failures=1, misses=3, size=0, pinned=0)
        # departure: the abandoned build still runs while the id serves again
        await still_usable(m, make_seed)
        # it returns at last: its seed is not installed, its agent is disposed
        s.release.set()
        await s.ended.wait()
        await settle()
        await m.wait_for_disposals()
    assert internals(m).calls.abandoned == 0
    assert late.agent in disposer.disposed
    assert "a" not in m


async def test_abandoned_build_that_raises_later_is_logged_once(
    make_manager: MakeManager,
    stubborn: Callable[[], Stubborn],
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_manager(**FAST)
    s = stubborn()
    async with asyncio.timeout(HANG_GUARD_S):
        result = await lease_outcome(m, "a", stubborn_build(s, ValueError("late failure")))
        assert isinstance(result, TimeoutError)
        with caplog.at_level(logging.WARNING, logger="snak_runtime"):
            s.release.set()
            await s.ended.wait()
            await settle()
    late = [r for r in caplog.records if "late failure" in r.getMessage()]
    assert len(late) == 1 and late[0].levelno == logging.WARNING
    assert "abandoned build of agent 'a'" in late[0].getMessage()


async def test_build_raising_cancelled_error_is_a_load_failure_not_a_cancellation(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()

    async def build(agent_id: str) -> Seed | None:
        await asyncio.sleep(0)
        raise asyncio.CancelledError

    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(*(lease_outcome(m, "a", build) for _ in range(2)))
    for r in results:
        assert type(r) is not asyncio.CancelledError and isinstance(r, RuntimeError), r
        assert "raised CancelledError" in str(r)
    assert_stats(m, loads=1, load_failures=1, size=0, pinned=0)
    await still_usable(m, make_seed)


async def test_waiters_leaving_a_stubborn_build_are_not_held_by_it(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    """Every waiter cancelled: the load cancels the build, which ignores it; the load ends
    within its grace anyway and the id is free."""
    m = make_manager(**FAST)
    s = stubborn()
    waiter = asyncio.create_task(lease_outcome(m, "a", stubborn_build(s, make_seed("a"))))
    async with asyncio.timeout(HANG_GUARD_S):
        await s.started.wait()
        waiter.cancel()
        assert isinstance(await waiter, asyncio.CancelledError)
        await still_usable(m, make_seed)
    assert_stats(m, load_failures=1)


# ---------------------------------------------------------------- rebuilds


async def test_rebuild_ignoring_cancellation_times_out_and_evicts(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    m = make_manager(**FAST)
    s = stubborn()
    late = make_seed("a", 2)
    v1 = make_seed("a", 1, rebuild=stubborn_rebuild(s, late))
    await m.shadow_seed(v1)
    async with asyncio.timeout(HANG_GUARD_S):
        reader = asyncio.create_task(m.acquire("a"))
        with pytest.raises(TimeoutError):
            await m.on_invalidate("a", 2)
        assert await reader is None
        assert_stats(m, rebuilds=1, rebuild_failures=1, size=0, pinned=0)
        await still_usable(m, make_seed)
        s.release.set()
        await s.ended.wait()
        await settle()
        await m.wait_for_disposals()
    assert v1.agent in disposer.disposed and late.agent in disposer.disposed
    assert "a" not in m


async def test_rebuild_raising_cancelled_error_is_a_rebuild_failure(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()

    async def rebuild() -> Seed | None:
        raise asyncio.CancelledError

    await m.shadow_seed(make_seed("a", 1, rebuild=rebuild))
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(RuntimeError, match="raised CancelledError"):
            await m.on_invalidate("a", 2)
    assert_stats(m, rebuilds=1, rebuild_failures=1, size=0)
    await still_usable(m, make_seed)


async def test_cancelled_invalidation_returns_although_its_rebuild_ignores_it(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    m = make_manager(build_timeout_ms=60_000, dispose_timeout_ms=50)
    s = stubborn()
    await m.shadow_seed(make_seed("a", 1, rebuild=stubborn_rebuild(s, make_seed("a", 2))))
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    async with asyncio.timeout(HANG_GUARD_S):
        await s.started.wait()
        invalidation.cancel()
        with pytest.raises(asyncio.CancelledError):
            await invalidation
        assert "a" not in m  # known stale: evicted, as for any failed rebuild
        await still_usable(m, make_seed)
    assert_stats(m, rebuild_failures=1)


async def test_refresh_ignoring_cancellation_keeps_the_entry(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    m = make_manager(refresh_ahead_ms=400, **FAST)
    s = stubborn()
    await m.shadow_seed(make_seed("a", 1, rebuild=stubborn_rebuild(s, make_seed("a", 1))))
    fake_clock.advance(700)  # in the refresh window
    async with asyncio.timeout(HANG_GUARD_S):
        assert await m.acquire("a") is not None
        m.release("a")
        await s.started.wait()
        (refresh,) = internals(m).refreshes.tasks()
        assert refresh is not None
        await refresh  # it ends at its timeout although the rebuild ignores cancellation
    assert_stats(m, refreshes=1, refresh_failures=1, size=1)


# ---------------------------------------------------------------- evict, evict_all, aclose


async def test_evict_and_evict_all_finish_while_user_code_ignores_cancellation(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    stubborn: Callable[[], Stubborn],
) -> None:
    m = make_manager(**FAST)
    builds = [stubborn() for _ in range(3)]
    rebuild = stubborn()
    await m.shadow_seed(make_seed("r", 1, rebuild=stubborn_rebuild(rebuild, make_seed("r", 2))))
    invalidation = asyncio.create_task(m.on_invalidate("r", 2))
    leases = [
        asyncio.create_task(lease_outcome(m, k, stubborn_build(b, make_seed(k))))
        for k, b in zip("abc", builds, strict=True)
    ]
    async with asyncio.timeout(HANG_GUARD_S):
        for s in (*builds, rebuild):
            await s.started.wait()
        assert await m.evict("a") is False  # nothing was built
        assert await m.evict_all() == 0  # the failed rebuild evicted "r" first
        outcomes = [await t for t in leases]
        assert all(isinstance(r, TimeoutError) for r in outcomes), outcomes
        with pytest.raises(TimeoutError):
            await invalidation
    assert not internals(m).turns.queues and len(m) == 0


async def test_aclose_finishes_while_builds_rebuilds_and_disposers_ignore_cancellation(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    stubborn: Callable[[], Stubborn],
    assert_stats: AssertStats,
) -> None:
    hold_disposal = stubborn()

    class StubbornDisposer:
        async def dispose(self, agent: object) -> None:
            await hold_disposal.hold()

    m = make_manager(build_timeout_ms=60_000, disposer=StubbornDisposer(), dispose_timeout_ms=50)
    build, rebuild = stubborn(), stubborn()
    late_build, late_rebuild = make_seed("b"), make_seed("r", 2)
    await m.shadow_seed(make_seed("r", 1, rebuild=stubborn_rebuild(rebuild, late_rebuild)))
    await m.shadow_seed(make_seed("p", 1))
    assert await m.acquire("p") is not None  # pinned through the grace period
    invalidation = asyncio.create_task(m.on_invalidate("r", 2))
    lease = asyncio.create_task(lease_outcome(m, "b", stubborn_build(build, late_build)))
    async with asyncio.timeout(HANG_GUARD_S):
        await build.started.wait()
        await rebuild.started.wait()
        await m.aclose(grace_ms=50)
        assert isinstance(await lease, RuntimeManagerClosed)
        with pytest.raises(RuntimeManagerClosed):
            await invalidation
    assert internals(m).calls.abandoned == 2
    assert_stats(m, size=0, disposals=2, dispose_failures=2, load_failures=1, rebuild_failures=1)
    # the abandoned calls end after close: their seeds' agents are still disposed
    build.release.set()
    rebuild.release.set()
    async with asyncio.timeout(HANG_GUARD_S):
        await build.ended.wait()
        await rebuild.ended.wait()
        await settle()
    assert internals(m).calls.abandoned == 0
    assert m.stats().disposals == 4


# ---------------------------------------------------------------- disposers


async def test_disposer_raising_cancelled_error_is_a_dispose_failure(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    class Raises:
        def __init__(self, sync: bool) -> None:
            self.sync = sync

        def dispose(self, agent: object) -> Any:
            if self.sync:
                raise asyncio.CancelledError

            async def go() -> None:
                raise asyncio.CancelledError

            return go()

    for sync in (True, False):
        m = make_manager(disposer=Raises(sync))
        await m.shadow_seed(make_seed("a", 1))
        assert await m.acquire("a") is not None
        await m.shadow_seed(make_seed("a", 2))
        m.release("a")  # the last pin of v1: its disposal raises CancelledError
        await m.evict("a")
        await settle()
        await m.wait_for_disposals()
        assert_stats(m, disposals=2, dispose_failures=2, size=0, pinned=0)
