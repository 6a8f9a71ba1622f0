"""Concurrency on one event loop (CONTRACT §6): per-id FIFO mutual exclusion, reads that see
the operation in flight, no waiting across ids, single flight, cancellation at every await
point, build timeouts, re-entry and loop binding."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import pytest

from snak_runtime import (
    AcquiredRuntime,
    AgentRuntimeManager,
    GuardConfig,
    RuntimeNotCached,
    RuntimeSeed,
)
from snak_runtime._binding import _ThreadOf
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, listen, settle

Op = Callable[[Manager, str], Coroutine[Any, Any, Any]]

SAFETY_S = 5  # nothing here should take long; a hang fails the test instead of timing it out


class Tracker:
    """Records when gated calls start and end, and fails if two overlap."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.running = 0

    def enter(self, name: str) -> None:
        self.running += 1
        self.log.append(f"{name} start")
        assert self.running == 1, "two operations on one id ran at once"

    def leave(self, name: str) -> None:
        self.log.append(f"{name} end")
        self.running -= 1


class Gate:
    """A build or rebuild that starts, waits to be opened, then returns its seed."""

    def __init__(
        self, result: Seed | BaseException | None, tracker: Tracker | None = None, name: str = ""
    ) -> None:
        self.result = result
        self.opened = asyncio.Event()
        self.started = asyncio.Event()
        self.calls = 0
        self.cancelled = False
        self.tracker = tracker
        self.name = name

    async def __call__(self, *args: object) -> Seed | None:
        self.calls += 1
        self.started.set()
        if self.tracker is not None:
            self.tracker.enter(self.name)
        try:
            await self.opened.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        finally:
            if self.tracker is not None:
                self.tracker.leave(self.name)
        if isinstance(self.result, BaseException):
            raise self.result
        return self.result

    def open(self) -> None:
        self.opened.set()


async def seeded_with_gated_rebuild(
    m: Manager, make_seed: MakeSeed, agent_id: str = "a"
) -> tuple[Gate, Seed, Seed]:
    """``agent_id`` at v1 whose rebuild (gated) returns v2; returns (gate, v1, v2)."""
    v2 = make_seed(agent_id, 2)
    gate = Gate(v2)
    v1 = make_seed(agent_id, 1, rebuild=gate)
    await m.shadow_seed(v1)
    return gate, v1, v2


async def cleanly_usable(m: Manager, make_seed: MakeSeed, agent_id: str = "a") -> None:
    """Later operations on ``agent_id`` complete: nothing is left blocking that id."""
    async with asyncio.timeout(SAFETY_S):
        await m.shadow_seed(make_seed(agent_id, 100))
        assert m.version_of(agent_id) == 100
        got = await m.acquire(agent_id)
        assert got is not None
        m.release(agent_id)
        await m.on_invalidate(agent_id, 100)
        assert await m.evict(agent_id) is True
    assert not internals(m).turns.queues, "a turn was left in a queue"


# ---------------------------------------------------------------- operations used in matrices


async def op_acquire(m: Manager, agent_id: str) -> Any:
    got = await m.acquire(agent_id)
    if got is not None:
        m.release(agent_id)
    return got


async def op_acquire_with_agent(m: Manager, agent_id: str) -> Any:
    got = await m.acquire_with_agent(agent_id)
    if got is not None:
        m.release(agent_id)
        return got.runtime
    return None


async def op_lease(m: Manager, agent_id: str) -> Any:
    async with m.lease(agent_id) as lease:
        return lease.runtime


def op_lease_build(seed_for: Callable[[str], Seed]) -> Op:
    async def op(m: Manager, agent_id: str) -> Any:
        async def build(a: str) -> Seed | None:
            return seed_for(a)

        async with m.lease(agent_id, build=build) as lease:
            return lease.runtime

    return op


READ_OPS = ["acquire", "acquire_with_agent", "lease", "lease_build"]
ALL_OPS = [*READ_OPS, "shadow_seed", "on_invalidate", "evict"]


def make_op(name: str, make_seed: MakeSeed) -> Op:
    if name == "acquire":
        return op_acquire
    if name == "acquire_with_agent":
        return op_acquire_with_agent
    if name == "lease":
        return op_lease
    if name == "lease_build":
        return op_lease_build(lambda a: make_seed(a, 50))
    if name == "shadow_seed":
        return lambda m, a: m.shadow_seed(make_seed(a, 60))
    if name == "on_invalidate":
        return lambda m, a: m.on_invalidate(a, 70)
    assert name == "evict"
    return lambda m, a: m.evict(a)


# ---------------------------------------------------------------- FIFO mutual exclusion


async def test_writes_on_one_id_run_one_at_a_time_in_arrival_order(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    removed = listen(m)
    tracker = Tracker()
    log = tracker.log
    g3 = Gate(make_seed("a", 4), tracker, "rebuild3")
    v3 = make_seed("a", 3, rebuild=g3)
    g1 = Gate(make_seed("a", 2), tracker, "rebuild1")
    await m.shadow_seed(make_seed("a", 1, rebuild=g1))
    v5 = make_seed("a", 5)

    tasks = [
        asyncio.create_task(m.on_invalidate("a", 2)),
        asyncio.create_task(m.shadow_seed(v3)),
        asyncio.create_task(m.on_invalidate("a", 4)),
        asyncio.create_task(m.evict("a")),
        asyncio.create_task(m.shadow_seed(v5)),
    ]
    await g1.started.wait()
    await settle()
    assert (log, removed, [t.done() for t in tasks]) == (
        ["rebuild1 start"], [], [False] * 5
    )
    g1.open()
    await g3.started.wait()
    await settle()
    assert removed == [("a", "invalidated"), ("a", "replaced")]
    assert [t.done() for t in tasks] == [True, True, False, False, False]
    g3.open()
    async with asyncio.timeout(SAFETY_S):
        results = await asyncio.gather(*tasks)
    assert results == [None, None, None, True, None]
    assert log == ["rebuild1 start", "rebuild1 end", "rebuild3 start", "rebuild3 end"]
    assert removed == [
        ("a", "invalidated"), ("a", "replaced"), ("a", "invalidated"), ("a", "explicit"),
    ]
    assert m.version_of("a") == 5


async def test_queued_rebuilds_never_overlap(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    """Departure: the original's promise chain let two waiters run at once."""
    m = make_manager()
    running = 0
    peak = 0
    order: list[int] = []

    def seed_at(version: int) -> Seed:
        async def rebuild() -> Seed | None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            order.append(version)
            for _ in range(5):
                await asyncio.sleep(0)
            running -= 1
            return seed_at(version + 1)

        return make_seed("a", version, rebuild=rebuild)

    await m.shadow_seed(seed_at(1))
    async with asyncio.timeout(SAFETY_S):
        await asyncio.gather(*(m.on_invalidate("a", v) for v in range(2, 8)))
    assert (peak, order, m.version_of("a")) == (1, [1, 2, 3, 4, 5, 6], 7)
    assert_stats(m, invalidations=6, rebuilds=6, rebuild_failures=0, size=1)


@pytest.mark.parametrize("op", ALL_OPS)
async def test_operations_on_other_ids_do_not_wait(
    make_manager: MakeManager, make_seed: MakeSeed, op: str
) -> None:
    m = make_manager()
    gate, _, _ = await seeded_with_gated_rebuild(m, make_seed, "a")
    gate_b = Gate(make_seed("b", 80))
    gate_b.open()
    await m.shadow_seed(make_seed("b", 1, rebuild=gate_b))
    slow = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    async with asyncio.timeout(SAFETY_S):
        await make_op(op, make_seed)(m, "b")
    assert not slow.done()
    gate.open()
    await slow


# ---------------------------------------------------------------- reads see what is in flight


@pytest.mark.parametrize("read", READ_OPS)
async def test_read_during_invalidation_sees_the_rebuilt_runtime(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, read: str
) -> None:
    m = make_manager()
    gate, _, v2 = await seeded_with_gated_rebuild(m, make_seed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    reader = asyncio.create_task(make_op(read, make_seed)(m, "a"))
    await settle()
    assert not reader.done()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        assert await reader == v2.runtime
        await invalidation
    assert_stats(m, hits=1, misses=0, loads=0, pinned=0)


@pytest.mark.parametrize("read", READ_OPS)
async def test_read_during_failing_invalidation_never_sees_the_stale_runtime(
    make_manager: MakeManager, make_seed: MakeSeed, read: str
) -> None:
    m = make_manager()
    gate = Gate(ConnectionError("down"))
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    reader = asyncio.create_task(make_op(read, make_seed)(m, "a"))
    await settle()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        with pytest.raises(ConnectionError):
            await invalidation
        if read == "lease":
            with pytest.raises(RuntimeNotCached):
                await reader
        elif read == "lease_build":
            assert str(await reader).startswith("a@v50#")  # built afresh, not the stale v1
        else:
            assert await reader is None


@pytest.mark.parametrize("read", READ_OPS)
async def test_read_waiting_behind_a_load_gets_the_built_runtime(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, read: str
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    gate = Gate(built)

    async def gated_lease() -> Any:
        async with m.lease("a", build=gate) as lease:
            return lease.runtime

    loader = asyncio.create_task(gated_lease())
    await gate.started.wait()
    reader = asyncio.create_task(make_op(read, make_seed)(m, "a"))
    await settle()
    assert not reader.done()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        assert await reader == built.runtime
        assert await loader == built.runtime
    assert gate.calls == 1
    assert_stats(m, pinned=0, size=1, load_failures=0)


async def lease_enter(m: Manager, agent_id: str) -> Any:
    ctx = m.lease(agent_id)
    return await ctx.__aenter__()


@pytest.mark.parametrize(
    ("read", "seeded", "expected"),
    [
        ("acquire", True, "rt"),
        ("acquire", False, None),
        ("acquire_denied", True, None),
        ("acquire_with_agent", True, AcquiredRuntime("rt", None)),
        ("acquire_with_agent", False, None),
        ("lease", True, "rt"),
    ],
)
async def test_reads_with_nothing_in_flight_do_not_suspend(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    read: str,
    seeded: bool,
    expected: Any,
) -> None:
    m = make_manager()
    if seeded:
        await m.shadow_seed(make_seed("a", runtime="rt", agent=None, user_id="u1"))
    coro: Coroutine[Any, Any, Any]
    if read == "acquire":
        coro = m.acquire("a")
    elif read == "acquire_denied":
        coro = m.acquire("a", user_id="u2")
    elif read == "acquire_with_agent":
        coro = m.acquire_with_agent("a")
    else:
        coro = lease_enter(m, "a")
    with pytest.raises(StopIteration) as done:
        coro.send(None)  # a read that suspended would yield here instead of finishing
    value = done.value.value
    if read == "lease":
        assert value.runtime == expected
    else:
        assert value == expected


async def test_lease_miss_without_build_does_not_suspend(make_manager: MakeManager) -> None:
    m = make_manager()
    coro = lease_enter(m, "a")
    with pytest.raises(RuntimeNotCached):
        coro.send(None)


# ---------------------------------------------------------------- single flight


async def test_fifty_concurrent_misses_build_once_and_share_a_generation(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    seed = make_seed("a", 3)
    gate = Gate(seed)
    inside = 0
    all_inside = asyncio.Event()
    leave = asyncio.Event()

    async def user() -> Any:
        nonlocal inside
        async with m.lease("a", build=gate) as lease:
            inside += 1
            if inside == 50:
                all_inside.set()
            await leave.wait()
            return lease

    tasks = [asyncio.create_task(user()) for _ in range(50)]
    await gate.started.wait()
    await settle()
    assert_stats(m, size=0, pinned=0, loads=1)
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        await all_inside.wait()
        assert_stats(m, pinned=50, size=1)
        leave.set()
        leases = await asyncio.gather(*tasks)
    assert gate.calls == 1
    assert all(lease is leases[0] for lease in leases)
    assert (leases[0].runtime, leases[0].cfg_version) == (seed.runtime, 3)
    assert_stats(m, loads=1, load_failures=0, misses=50, hits=0, pinned=0, size=1)


async def test_late_joiners_and_owner_checks_share_the_build(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    gate = Gate(make_seed("a", 1, user_id="owner"))

    async def user(user_id: str | None) -> str:
        try:
            async with m.lease("a", user_id=user_id, build=gate) as lease:
                return lease.user_id
        except RuntimeNotCached:
            return "denied"

    first = [asyncio.create_task(user(u)) for u in ("owner", "intruder", None)]
    await gate.started.wait()
    late = [asyncio.create_task(user(u)) for u in ("intruder", "owner")]
    await settle()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        results = await asyncio.gather(*first, *late)
    assert results == ["owner", "denied", "owner", "denied", "owner"]
    assert gate.calls == 1
    assert_stats(m, loads=1, misses=3, denied=2, hits=0, pinned=0, size=1)


@pytest.mark.parametrize("failure", ["raise", "none"])
async def test_failed_build_is_seen_by_all_and_caches_nothing(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    assert_stats: AssertStats,
    failure: str,
) -> None:
    m = make_manager()
    error = ConnectionError("llm down")
    gate = Gate(error if failure == "raise" else None)

    async def user() -> BaseException | None:
        try:
            async with m.lease("a", build=gate):
                return None
        except Exception as exc:
            return exc

    tasks = [asyncio.create_task(user()) for _ in range(50)]
    await gate.started.wait()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        results = await asyncio.gather(*tasks)
    if failure == "raise":
        assert all(r is error for r in results)
    else:
        assert all(isinstance(r, RuntimeNotCached) for r in results)
    assert gate.calls == 1
    assert_stats(m, loads=1, load_failures=1, misses=50, size=0, pinned=0)
    async with m.lease("a", build=op_builder(make_seed("a", 2))) as lease:
        assert lease.cfg_version == 2
    assert_stats(m, loads=2, load_failures=1)


def op_builder(seed: Seed) -> Callable[[str], Awaitable[Seed | None]]:
    async def build(agent_id: str) -> Seed | None:
        return seed

    return build


# ---------------------------------------------------------------- cancellation


async def _cancel(task: asyncio.Task[Any]) -> None:
    task.cancel()
    async with asyncio.timeout(SAFETY_S):
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("waiter", ALL_OPS)
async def test_cancel_while_waiting_behind_a_rebuild(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    waiter: str,
) -> None:
    m = make_manager()
    gate, v1, v2 = await seeded_with_gated_rebuild(m, make_seed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    task = asyncio.create_task(make_op(waiter, make_seed)(m, "a"))
    await settle()
    assert not task.done()
    await _cancel(task)
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        await invalidation
    assert m.version_of("a") == 2  # the cancelled write did not happen
    assert_stats(m, pinned=0, loads=0, size=1)
    await cleanly_usable(m, make_seed)
    await settle()
    assert disposer.count(v1.agent) == 1 and disposer.count(v2.agent) == 1


@pytest.mark.parametrize("waiter", ALL_OPS)
async def test_cancel_while_waiting_behind_a_load(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, waiter: str
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    gate = Gate(built)

    async def loader() -> Any:
        async with m.lease("a", build=gate) as lease:
            return lease.runtime

    load = asyncio.create_task(loader())
    await gate.started.wait()
    task = asyncio.create_task(make_op(waiter, make_seed)(m, "a"))
    await settle()
    assert not task.done()
    await _cancel(task)
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        assert await load == built.runtime
    assert (gate.calls, m.version_of("a")) == (1, 1)
    assert_stats(m, pinned=0, loads=1, load_failures=0, size=1)
    await cleanly_usable(m, make_seed)


async def test_cancel_one_build_waiter_of_many(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    gate = Gate(built)

    async def user() -> Any:
        async with m.lease("a", build=gate) as lease:
            return lease.runtime

    tasks = [asyncio.create_task(user()) for _ in range(5)]
    await gate.started.wait()
    await _cancel(tasks[2])
    assert not gate.cancelled
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        results = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 2))
    assert results == [built.runtime] * 4
    assert_stats(m, loads=1, load_failures=0, misses=5, pinned=0, size=1)
    await cleanly_usable(m, make_seed)


async def test_cancel_all_build_waiters_cancels_the_build(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    gate = Gate(built)

    async def user() -> Any:
        async with m.lease("a", build=gate) as lease:
            return lease.runtime

    tasks = [asyncio.create_task(user()) for _ in range(3)]
    await gate.started.wait()
    for t in tasks:
        await _cancel(t)
    await settle()
    assert gate.cancelled
    assert_stats(m, loads=1, load_failures=1, misses=3, pinned=0, size=0)
    await cleanly_usable(m, make_seed)


async def test_lease_joining_a_load_its_last_waiter_just_cancelled_gets_a_fresh_build(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    """Issue 9: A's cancellation cancels the hung build it alone waited for; B leases the
    same id in that same loop iteration. B was not cancelled, so it must not end in
    CancelledError: it gets a build of its own."""
    m = make_manager()
    hung = Gate(make_seed("a", 1))
    built = make_seed("a", 2)
    fresh = Gate(built)

    async def user(build: Gate) -> Any:
        async with m.lease("a", build=build) as lease:
            return lease.runtime

    a = asyncio.create_task(user(hung))
    await hung.started.wait()
    a.cancel()  # A's step runs next and cancels the build; B's first step runs before it
    b = asyncio.create_task(user(fresh))
    fresh.open()
    async with asyncio.timeout(SAFETY_S):
        with pytest.raises(asyncio.CancelledError):
            await a
        assert await b == built.runtime
    assert not b.cancelled()
    assert hung.cancelled and (hung.calls, fresh.calls) == (1, 1)
    assert_stats(m, loads=2, load_failures=1, misses=2, pinned=0, size=1)
    await cleanly_usable(m, make_seed)


async def test_cancel_waiter_just_as_its_result_arrives_leaks_no_pin(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    victim: asyncio.Task[Any] | None = None

    async def build(agent_id: str) -> Seed | None:
        await asyncio.sleep(0)
        assert victim is not None
        # runs after the waiters are resolved, before the victim resumes
        asyncio.get_running_loop().call_soon(victim.cancel)
        return built

    async def user() -> Any:
        async with m.lease("a", build=build) as lease:
            return lease.runtime

    other = asyncio.create_task(user())
    victim = asyncio.create_task(user())
    async with asyncio.timeout(SAFETY_S):
        with pytest.raises(asyncio.CancelledError):
            await victim
        assert await other == built.runtime
    assert_stats(m, loads=1, pinned=0, size=1)
    await cleanly_usable(m, make_seed)


async def test_cancel_write_just_as_its_turn_arrives_passes_the_turn_on(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    gate, _, _ = await seeded_with_gated_rebuild(m, make_seed)
    victim: asyncio.Task[Any] | None = None

    def on_removed(agent_id: str, cause: str) -> None:
        # called inside the invalidation's turn, just before it hands the turn on
        if victim is not None and cause == "invalidated":
            asyncio.get_running_loop().call_soon(victim.cancel)

    m.on_removal(on_removed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    victim = asyncio.create_task(m.evict("a"))
    after = asyncio.create_task(m.shadow_seed(make_seed("a", 9)))
    await settle()
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        await invalidation
        with pytest.raises(asyncio.CancelledError):
            await victim
        await after
    assert m.version_of("a") == 9
    await cleanly_usable(m, make_seed)


async def test_cancel_during_rebuild_evicts_and_reraises(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed = listen(m)
    gate, v1, _ = await seeded_with_gated_rebuild(m, make_seed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    reader = asyncio.create_task(m.acquire("a"))
    await settle()
    await _cancel(invalidation)
    async with asyncio.timeout(SAFETY_S):
        assert await reader is None  # the stale v1 is not handed out
    await settle()
    assert gate.cancelled
    assert removed == [("a", "invalidated")]
    assert disposer.disposed == [v1.agent]
    assert_stats(m, rebuilds=1, rebuild_failures=1, pinned=0, size=0)
    await cleanly_usable(m, make_seed)


async def test_cancelled_reader_of_a_rebuild_leaves_no_pin(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    gate, _, v2 = await seeded_with_gated_rebuild(m, make_seed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    readers = [asyncio.create_task(op_acquire(m, "a")) for _ in range(3)]
    await settle()
    await _cancel(readers[1])
    gate.open()
    async with asyncio.timeout(SAFETY_S):
        await invalidation
        assert [await readers[0], await readers[2]] == [v2.runtime, v2.runtime]
    assert_stats(m, pinned=0, hits=2)


# ---------------------------------------------------------------- build timeout


async def test_hung_build_times_out_for_every_waiter(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(build_timeout_ms=50)
    gate = Gate(make_seed("a"))  # never opened

    async def user() -> BaseException | None:
        try:
            async with m.lease("a", build=gate):
                return None
        except BaseException as exc:
            return exc

    tasks = [asyncio.create_task(user()) for _ in range(3)]
    async with asyncio.timeout(SAFETY_S):
        results = await asyncio.gather(*tasks)
    assert all(isinstance(r, TimeoutError) for r in results), results
    assert gate.cancelled
    assert_stats(m, loads=1, load_failures=1, misses=3, size=0, pinned=0)
    await cleanly_usable(m, make_seed)


async def test_hung_rebuild_times_out_evicts_and_counts(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager(build_timeout_ms=50)
    gate, v1, _ = await seeded_with_gated_rebuild(m, make_seed)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await gate.started.wait()
    reader = asyncio.create_task(m.acquire("a"))
    async with asyncio.timeout(SAFETY_S):
        with pytest.raises(TimeoutError):
            await invalidation
        assert await reader is None
    await settle()
    assert gate.cancelled
    assert disposer.disposed == [v1.agent]
    assert_stats(m, rebuilds=1, rebuild_failures=1, size=0, pinned=0)
    await cleanly_usable(m, make_seed)


# ---------------------------------------------------------------- re-entry


def reentry_call(name: str, m: Manager, make_seed: MakeSeed) -> Callable[[], Awaitable[Any]]:
    op = make_op(name, make_seed)
    return lambda: op(m, "a")


@pytest.mark.parametrize("call", ALL_OPS)
async def test_build_calling_back_for_its_own_id_raises_at_once(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, call: str
) -> None:
    m = make_manager()
    seen: list[BaseException] = []

    async def build(agent_id: str) -> Seed | None:
        try:
            async with asyncio.timeout(1):
                await reentry_call(call, m, make_seed)()
        except BaseException as exc:
            seen.append(exc)
        return make_seed(agent_id, 1)

    async with asyncio.timeout(SAFETY_S), m.lease("a", build=build) as lease:
        assert lease.cfg_version == 1
    assert len(seen) == 1 and type(seen[0]) is RuntimeError, seen
    assert "'a'" in str(seen[0])
    assert_stats(m, loads=1, load_failures=0, pinned=0, size=1)
    await cleanly_usable(m, make_seed)


@pytest.mark.parametrize("call", ALL_OPS)
async def test_rebuild_calling_back_for_its_own_id_raises_at_once(
    make_manager: MakeManager, make_seed: MakeSeed, call: str
) -> None:
    m = make_manager()
    seen: list[BaseException] = []
    v2 = make_seed("a", 2)

    async def rebuild() -> Seed | None:
        try:
            async with asyncio.timeout(1):
                await reentry_call(call, m, make_seed)()
        except BaseException as exc:
            seen.append(exc)
        return v2

    await m.shadow_seed(make_seed("a", 1, rebuild=rebuild))
    async with asyncio.timeout(SAFETY_S):
        await m.on_invalidate("a", 2)
    assert len(seen) == 1 and type(seen[0]) is RuntimeError, seen
    assert m.version_of("a") == 2
    await cleanly_usable(m, make_seed)


async def test_build_may_use_other_ids_and_other_managers(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    other = make_manager()
    await m.shadow_seed(make_seed("b", 1, runtime="b-rt"))
    await other.shadow_seed(make_seed("a", 1, runtime="other-a"))
    got: list[Any] = []

    async def build(agent_id: str) -> Seed | None:
        async with asyncio.timeout(1):
            got.append(await op_acquire(m, "b"))
            await m.shadow_seed(make_seed("c", 1))
            got.append(await op_acquire(other, "a"))
            async with other.lease("a") as lease:
                got.append(lease.runtime)
        return make_seed(agent_id, 1)

    async with asyncio.timeout(SAFETY_S), m.lease("a", build=build):
        pass
    assert got == ["b-rt", "other-a", "other-a"]
    assert "c" in m


async def test_task_spawned_by_a_build_waits_for_it_instead_of_failing(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    built = make_seed("a", 1)
    spawned: list[asyncio.Task[Any]] = []

    async def build(agent_id: str) -> Seed | None:
        spawned.append(asyncio.create_task(op_acquire(m, agent_id)))
        await settle()
        assert not spawned[0].done()
        return built

    async with asyncio.timeout(SAFETY_S):
        async with m.lease("a", build=build):
            pass
        assert await spawned[0] == built.runtime


# ---------------------------------------------------------------- event loop binding


def _run_in_new_loop(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize("call", [*ALL_OPS, "start"])
async def test_use_from_another_loop_raises(
    make_manager: MakeManager, make_seed: MakeSeed, call: str
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))  # binds the manager to this test's loop
    coro = m.start() if call == "start" else make_op(call, make_seed)(m, "a")
    with pytest.raises(RuntimeError, match="loop"):
        await asyncio.to_thread(_run_in_new_loop, coro)
    assert_usable = await op_acquire(m, "a")
    assert assert_usable is not None


async def test_manager_first_used_elsewhere_refuses_this_loop(make_seed: MakeSeed) -> None:
    m: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=3, max_ttl_ms=1_000), clock=FakeClock(),
        disposer=RecordingDisposer(),
    )
    await asyncio.to_thread(_run_in_new_loop, m.shadow_seed(make_seed("a", agent=None)))
    with pytest.raises(RuntimeError, match="loop"):
        await m.acquire("a")
    with pytest.raises(RuntimeError, match="loop"):
        await m.evict("a")


def _run_on_a_loop_of_its_own(coro: Coroutine[Any, Any, Any]) -> Any:
    """``asyncio.run`` without touching the thread's current event loop.

    ``asyncio.run`` sets the current loop to None on its way out, dropping without closing the
    loop pytest-asyncio 1.0 leaves current after an async test: the garbage collector then finds
    an unclosed loop (and its two self-pipe sockets) during some later test, which fails it.
    """
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.mark.parametrize("call", ["acquire", "acquire_with_agent", "lease", "shadow_seed"])
def test_a_second_loop_in_the_same_thread_is_refused(make_seed: MakeSeed, call: str) -> None:
    """Sequential loops run in one thread: the hit path's one-comparison check (is the bound
    loop running in this thread?) still tells the loops apart."""
    m: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=3, max_ttl_ms=1_000), clock=FakeClock(),
        disposer=RecordingDisposer(),
    )
    _run_on_a_loop_of_its_own(m.shadow_seed(make_seed("a", agent=None)))
    with pytest.raises(RuntimeError, match="loop"):
        _run_on_a_loop_of_its_own(make_op(call, make_seed)(m, "a"))


async def test_loops_without_a_thread_record_are_checked_the_slow_way() -> None:
    loop = asyncio.get_running_loop()
    probe = _ThreadOf(loop)
    assert probe._thread_id == threading.get_ident()
    idle = asyncio.new_event_loop()
    try:
        assert _ThreadOf(idle)._thread_id is None  # not running: never "this" loop
    finally:
        idle.close()


# ---------------------------------------------------------------- cancelled as the result arrives


async def test_waiter_cancelled_just_as_its_pin_arrived_gives_the_pin_back(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    """The load pins the generation for each waiter before waking it; a waiter cancelled
    in between must give that pin back."""
    m = make_manager()
    built = asyncio.Event()

    async def build(agent_id: str) -> RuntimeSeed[str, object]:
        built.set()  # wakes this test before the load wakes its waiters
        return make_seed(agent_id, 1)

    async def hold() -> None:
        async with m.lease("a", build=build):
            await asyncio.sleep(0)

    first, second = asyncio.create_task(hold()), asyncio.create_task(hold())
    await built.wait()
    # The build runs in a task of its own (issue 23): look each loop round until the load
    # has pinned for both waiters, which is before either of them wakes.
    for _ in range(50):
        if m.stats().pinned:
            break
        await asyncio.sleep(0)
    assert m.stats().pinned == 2  # both waiters already hold their pin
    first.cancel()
    results = await asyncio.gather(first, second, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError) and results[1] is None
    assert m.stats().pinned == 0
    assert "a" in m


async def test_rebuild_result_arriving_as_invalidation_is_cancelled_is_disposed(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    """A rebuild that finished just as its on_invalidate was cancelled: the stale entry is
    evicted, and the agent the rebuild made for the manager is disposed, not leaked."""
    m = make_manager()
    rebuilt = asyncio.Event()
    made: list[RuntimeSeed[str, object]] = []

    async def rebuild() -> RuntimeSeed[str, object]:
        made.append(make_seed("a", 2))
        rebuilt.set()  # wakes this test before on_invalidate resumes
        return made[0]

    old = make_seed("a", 1, rebuild=rebuild)
    await m.shadow_seed(old)
    invalidation = asyncio.create_task(m.on_invalidate("a", 2))
    await rebuilt.wait()
    invalidation.cancel()
    with pytest.raises(asyncio.CancelledError):
        await invalidation
    await m.wait_for_disposals()
    assert "a" not in m
    assert disposer.count(old.agent) == 1 and disposer.count(made[0].agent) == 1
    assert m.stats().rebuild_failures == 1
