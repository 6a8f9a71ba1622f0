"""The operator surface (issue 18): peek, snapshot, evict_user, evict_where."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable

import pytest

from snak_runtime import (
    EntryInfo,
    GuardConfig,
    RuntimeManagerClosed,
    RuntimeNotCached,
)
from snak_runtime._info import _fast_entry_info
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, listen, settle


def user_index(m: Manager) -> dict[str, set[str]] | None:
    """The store's user index (None until the first evict_user builds it)."""
    return internals(m).store.by_user


def gated(seed: Seed | None, gate: asyncio.Event) -> Callable[[], Awaitable[Seed | None]]:
    """A rebuild that returns ``seed`` once ``gate`` is set."""

    async def rebuild() -> Seed | None:
        await gate.wait()
        return seed

    return rebuild


# ---------------------------------------------------------------- peek


def test_the_fast_record_constructor_equals_the_dataclass_one() -> None:
    values = ("a", "u", 3, 10, 20, 1, 2, 7, 1.5)
    fast = _fast_entry_info(*values)
    assert type(fast) is EntryInfo
    assert fast == EntryInfo(*values)
    assert dataclasses.astuple(fast) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        fast.hits = 8  # type: ignore[misc]


async def test_peek_reports_the_entry(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 3, user_id="alice", ttl_ms=800))
    fake_clock.advance(300)
    assert await m.acquire("a") is not None
    assert m.peek("a") == EntryInfo(
        agent_id="a",
        user_id="alice",
        cfg_version=3,
        age_ms=300,
        expires_in_ms=500,
        pins=1,
        detached_pins=0,
        hits=1,
        last_build_ms=None,
    )


async def test_hits_count_this_generations_hits(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()

    async def build(agent_id: str) -> Seed | None:
        return make_seed(agent_id, 1)

    async with m.lease("a", build=build):  # built: a miss, not a hit
        pass
    assert await m.acquire("a") is not None
    m.release("a")
    assert await m.acquire_with_agent("a") is not None
    m.release("a")
    async with m.lease("a", build=build):
        pass
    assert await m.acquire("a", user_id="someone else") is None  # denied: not a hit
    info = m.peek("a")
    assert info is not None and info.hits == 3
    await m.shadow_seed(make_seed("a", 1))  # a refresh is a new generation
    info = m.peek("a")
    assert info is not None and info.hits == 0
    gate = asyncio.Event()
    await m.shadow_seed(make_seed("a", 2, rebuild=gated(make_seed("a", 3), gate)))
    invalidating = asyncio.ensure_future(m.on_invalidate("a", 3))
    await settle()
    reading = asyncio.ensure_future(m.acquire("a"))  # waits: a hit on the rebuilt entry
    await settle()
    gate.set()
    await invalidating
    assert await reading is not None
    m.release("a")
    info = m.peek("a")
    assert info is not None and (info.cfg_version, info.hits) == (3, 1)


async def test_peek_and_snapshot_pin_reorder_and_count_nothing(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(eviction="lru")  # max_entries=3; the order under test is LRU's
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))
    before = m.stats()
    for _ in range(3):
        assert m.peek("a") is not None
        assert len(m.snapshot()) == 3
    assert m.stats() == before
    assert_stats(m, pinned=0, hits=0, misses=0)
    removed = listen(m)
    await m.shadow_seed(make_seed("d"))
    assert removed == [("a", "capacity")]  # peeking did not make "a" recent


async def test_peek_misses_quietly(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    assert m.peek("nobody") is None
    await m.shadow_seed(make_seed("a", ttl_ms=100))
    fake_clock.advance(100)
    assert m.peek("a") is None  # expired: not a live entry
    assert m.snapshot() == []
    assert_stats(m, size=1, misses=0, expirations=0)  # left for the sweeper


@pytest.mark.parametrize(("bad", "error"), [("", ValueError), (None, TypeError), (7, TypeError)])
async def test_peek_rejects_bad_ids(
    make_manager: MakeManager, bad: object, error: type[Exception]
) -> None:
    m = make_manager()
    with pytest.raises(error):
        m.peek(bad)  # type: ignore[arg-type]


async def test_peek_counts_pins_on_detached_generations(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 1))
    assert await m.acquire("a") is not None
    assert await m.acquire("a") is not None
    await m.shadow_seed(make_seed("a", 2))
    async with m.lease("a"):
        info = m.peek("a")
        assert info is not None
        assert (info.cfg_version, info.pins, info.detached_pins) == (2, 1, 2)
    m.release("a")
    info = m.peek("a")
    assert info is not None and (info.pins, info.detached_pins) == (0, 1)


async def test_last_build_ms_comes_from_builds_and_rebuilds(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()
    rebuilt = make_seed("a", 2)

    async def slow_rebuild() -> Seed | None:
        fake_clock.advance(7)
        return rebuilt

    async def build(agent_id: str) -> Seed | None:
        fake_clock.advance(40)
        return make_seed(agent_id, 1, rebuild=slow_rebuild)

    async with m.lease("a", build=build):
        pass
    info = m.peek("a")
    assert info is not None and info.last_build_ms == 40.0 and info.age_ms == 0
    # a refresh from outside keeps what is known
    await m.shadow_seed(make_seed("a", 1, rebuild=slow_rebuild))
    info = m.peek("a")
    assert info is not None and info.last_build_ms == 40.0
    await m.on_invalidate("a", 2)
    info = m.peek("a")
    assert info is not None and info.last_build_ms == 7.0
    await m.shadow_seed(make_seed("b"))
    info = m.peek("b")
    assert info is not None and info.last_build_ms is None


# ---------------------------------------------------------------- snapshot


async def test_snapshot_lists_the_next_victim_first(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(guards=GuardConfig(max_entries=4, max_ttl_ms=1_000), eviction="lru")
    for agent_id in "abcd":
        await m.shadow_seed(make_seed(agent_id))
    assert await m.acquire("b") is not None
    m.release("b")  # b becomes the most recent
    assert await m.acquire("a") is not None  # a is in use: it cannot be evicted now
    order = [info.agent_id for info in m.snapshot()]
    assert order == ["c", "d", "b", "a"]
    removed = listen(m)
    await m.shadow_seed(make_seed("e"))
    await m.shadow_seed(make_seed("f"))
    assert removed == [("c", "capacity"), ("d", "capacity")]
    assert [info.agent_id for info in m.snapshot()] == ["b", "e", "f", "a"]


async def test_snapshot_of_an_empty_or_closed_manager(make_manager: MakeManager) -> None:
    m = make_manager()
    assert m.snapshot() == []
    await m.aclose(grace_ms=1)
    assert m.snapshot() == []
    assert m.peek("a") is None


# ---------------------------------------------------------------- evict_user


async def test_evict_user_removes_exactly_that_users_entries(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    alice_a, alice_b = make_seed("a", user_id="alice"), make_seed("b", user_id="alice")
    bob_c = make_seed("c", user_id="bob")
    for seed in (alice_a, alice_b, bob_c):
        await m.shadow_seed(seed)
    removed = listen(m)
    assert await m.evict_user("alice") == 2
    assert sorted(removed) == [("a", "explicit"), ("b", "explicit")]
    assert "a" not in m and "b" not in m and "c" in m
    await m.wait_for_disposals()
    assert set(map(id, disposer.disposed)) == {id(alice_a.agent), id(alice_b.agent)}
    assert await m.evict_user("alice") == 0
    assert await m.evict_user("nobody") == 0
    assert_stats(m, size=1, removals={"explicit": 2})
    assert user_index(m) == {"bob": {"c"}}


async def test_the_user_index_is_built_once_then_kept_exact(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()  # max_entries=3
    for i in range(3):
        await m.shadow_seed(make_seed(f"agent-{i}", user_id=f"user-{i % 2}"))
    assert user_index(m) is None  # nothing pays for it before the first evict_user
    assert await m.evict_user("user-9") == 0
    assert user_index(m) == {"user-0": {"agent-0", "agent-2"}, "user-1": {"agent-1"}}
    for i in range(3, 200):  # churn: capacity evictions, replacements, owner changes
        await m.shadow_seed(make_seed(f"agent-{i % 5}", i, user_id=f"user-{i % 3}"))
        expected: dict[str, set[str]] = {}
        for agent_id, gen in internals(m).cache.current.items():
            expected.setdefault(gen.user_id, set()).add(agent_id)
        assert user_index(m) == expected
    assert await m.evict_user("user-1") == len(expected.get("user-1", ()))
    assert all(gen.user_id != "user-1" for gen in internals(m).cache.current.values())


async def test_evict_user_follows_a_change_of_owner(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 1, user_id="alice"))
    await m.shadow_seed(make_seed("a", 2, user_id="bob"))
    assert await m.evict_user("alice") == 0
    assert m.version_of("a") == 2
    assert await m.evict_user("bob") == 1
    assert user_index(m) == {}


async def test_evict_user_lets_pinned_entries_leave_at_their_last_release(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
) -> None:
    m = make_manager()
    seed = make_seed("a", user_id="alice")
    await m.shadow_seed(seed)
    assert await m.acquire("a") is not None
    assert await m.evict_user("alice") == 1
    assert await m.acquire("a") is None  # nothing of hers is handed out any more
    await settle()
    assert disposer.disposed == []  # still in use
    info = m.peek("a")
    assert info is None
    m.release("a")
    await m.wait_for_disposals()
    assert disposer.disposed == [seed.agent]


async def test_evict_user_discards_a_build_in_flight(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    gate = asyncio.Event()
    built: list[Seed] = []

    async def build(agent_id: str) -> Seed | None:
        await gate.wait()
        built.append(make_seed(agent_id, user_id="alice"))
        return built[-1]

    async def enter() -> object:
        async with m.lease("a", build=build) as lease:
            return lease

    waiters = [asyncio.ensure_future(enter()) for _ in range(2)]
    await settle()
    assert await m.evict_user("alice") == 0  # nothing cached yet
    gate.set()
    for waiter in waiters:
        with pytest.raises(RuntimeNotCached):
            await waiter
    assert "a" not in m
    await m.wait_for_disposals()
    assert disposer.disposed == [built[0].agent]
    assert_stats(m, size=0, loads=1, load_failures=0, misses=2, pinned=0)
    # a build that starts after the call is hers again
    async with m.lease("a", build=build) as lease:
        assert lease.agent is built[1].agent


async def test_evict_user_leaves_other_users_builds_alone(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    gate = asyncio.Event()

    async def build(agent_id: str) -> Seed | None:
        await gate.wait()
        return make_seed(agent_id, user_id="bob")

    async def enter() -> str:
        async with m.lease("a", build=build) as lease:
            return lease.user_id

    waiter = asyncio.ensure_future(enter())
    await settle()
    assert await m.evict_user("alice") == 0
    gate.set()
    assert await waiter == "bob"
    assert "a" in m


async def test_evict_user_does_not_concern_a_build_that_starts_later(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    """A lease's build queued behind a rebuild starts after evict_user: it is kept."""
    m = make_manager()
    gate = asyncio.Event()
    await m.shadow_seed(make_seed("a", 1, user_id="alice", rebuild=gated(None, gate)))
    invalidating = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()

    async def build(agent_id: str) -> Seed | None:
        return make_seed(agent_id, 5, user_id="alice")

    async def enter() -> int:
        async with m.lease("a", build=build) as lease:
            return lease.cfg_version

    leasing = asyncio.ensure_future(enter())
    await settle()
    assert await m.evict_user("alice") == 1  # the entry being rebuilt
    gate.set()
    await invalidating
    assert await leasing == 5


async def test_evict_user_does_not_concern_a_load_queued_before_its_build_started(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    """A load waiting for its turn has built nothing yet when evict_user runs: what it
    builds later is kept (its mark is cleared when its build starts)."""
    m = make_manager()
    first_gate, cancelled_gate = asyncio.Event(), asyncio.Event()
    calls: list[str] = []

    async def build(agent_id: str) -> Seed | None:
        calls.append(agent_id)
        if len(calls) == 1:
            try:
                await first_gate.wait()
            except asyncio.CancelledError:
                await cancelled_gate.wait()  # a slow build that winds down when cancelled
                raise
        return make_seed(agent_id, len(calls), user_id="alice")

    async def enter() -> int:
        async with m.lease("a", build=build) as lease:
            return lease.cfg_version

    first = asyncio.ensure_future(enter())
    await settle()
    first.cancel()  # its only waiter leaves: the first load is cancelled, still winding down
    await settle()
    second = asyncio.ensure_future(enter())  # a fresh load, queued behind the first
    await settle()
    assert calls == ["a"]
    assert await m.evict_user("alice") == 0
    cancelled_gate.set()
    assert await second == 2  # built after the call: installed and leased
    assert first.cancelled()
    assert m.version_of("a") == 2


async def test_evict_user_discards_a_rebuild_in_flight(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    gate = asyncio.Event()
    rebuilt = make_seed("a", 2, user_id="alice")
    old = make_seed("a", 1, user_id="alice", rebuild=gated(rebuilt, gate))
    await m.shadow_seed(old)
    removed = listen(m)
    invalidating = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    assert await m.evict_user("alice") == 1
    reading = asyncio.ensure_future(m.acquire("a"))  # waits for the rebuild, sees nothing
    gate.set()
    await invalidating  # returns normally: the runtime it would install is discarded
    assert await reading is None
    assert "a" not in m
    assert removed == [("a", "explicit")]
    await m.wait_for_disposals()
    assert set(map(id, disposer.disposed)) == {id(old.agent), id(rebuilt.agent)}
    assert_stats(m, size=0, rebuilds=1, rebuild_failures=0, pinned=0)


async def test_evict_user_discards_a_rebuild_that_changes_owner(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
) -> None:
    """Bob's stale entry rebuilds into one of alice's, just as alice is evicted: the stale
    entry goes (invalidated) and alice's runtime is not installed."""
    m = make_manager()
    gate = asyncio.Event()
    rebuilt = make_seed("a", 2, user_id="alice")
    await m.shadow_seed(make_seed("a", 1, user_id="bob", rebuild=gated(rebuilt, gate)))
    removed = listen(m)
    invalidating = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    assert await m.evict_user("alice") == 0
    gate.set()
    await invalidating
    assert "a" not in m
    assert removed == [("a", "invalidated")]
    await m.wait_for_disposals()
    assert rebuilt.agent in disposer.disposed


async def test_evict_user_discards_a_shadow_seed_waiting_in_line(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
) -> None:
    m = make_manager()
    gate = asyncio.Event()
    await m.shadow_seed(make_seed("a", 1, user_id="bob", rebuild=gated(None, gate)))
    invalidating = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    waiting = make_seed("a", 3, user_id="alice")
    seeding = asyncio.ensure_future(m.shadow_seed(waiting))
    await settle()
    assert await m.evict_user("alice") == 0
    gate.set()
    await invalidating
    await seeding
    assert "a" not in m
    await m.wait_for_disposals()
    assert waiting.agent in disposer.disposed
    # one made after the call is installed
    await m.shadow_seed(make_seed("a", 3, user_id="alice"))
    assert m.version_of("a") == 3


@pytest.mark.parametrize(("bad", "error"), [("", ValueError), (None, TypeError), (1, TypeError)])
async def test_evict_user_rejects_bad_ids(
    make_manager: MakeManager, bad: object, error: type[Exception]
) -> None:
    m = make_manager()
    with pytest.raises(error):
        await m.evict_user(bad)  # type: ignore[arg-type]


async def test_bulk_evictions_refuse_after_close(make_manager: MakeManager) -> None:
    m = make_manager()
    await m.aclose(grace_ms=1)
    with pytest.raises(RuntimeManagerClosed):
        await m.evict_user("alice")
    with pytest.raises(RuntimeManagerClosed):
        await m.evict_where(lambda info: True)


# ---------------------------------------------------------------- evict_where


async def test_evict_where_removes_what_the_predicate_selects(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 1))
    fake_clock.advance(10)
    await m.shadow_seed(make_seed("b", 2))
    await m.shadow_seed(make_seed("c", 1))
    seen: list[str] = []

    def old_config(info: EntryInfo) -> bool:
        seen.append(info.agent_id)
        return info.cfg_version < 2

    removed = listen(m)
    assert await m.evict_where(old_config) == 2
    assert seen == ["a", "b", "c"]  # over a snapshot, in its order
    assert sorted(removed) == [("a", "explicit"), ("c", "explicit")]
    assert await m.evict_where(lambda info: info.age_ms >= 10) == 0
    assert_stats(m, size=1, removals={"explicit": 2})


async def test_evict_where_removes_nothing_when_the_predicate_raises(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))

    def picky(info: EntryInfo) -> bool:
        if info.agent_id == "c":
            raise KeyError("c")
        return True

    with pytest.raises(KeyError):
        await m.evict_where(picky)
    assert_stats(m, size=3, removals={})


async def test_evict_where_defers_disposal_of_pinned_entries(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    async with m.lease("a"):
        assert await m.evict_where(lambda info: info.pins > 0) == 1
        assert "a" not in m
        await settle()
        assert disposer.disposed == []
    await m.wait_for_disposals()
    assert disposer.disposed == [seed.agent]


async def test_evict_where_rejects_a_non_callable(make_manager: MakeManager) -> None:
    m = make_manager()
    with pytest.raises(TypeError):
        await m.evict_where("cfg_version < 2")  # type: ignore[arg-type]
