"""Reads: acquire, acquire_with_agent, release, size, ``in`` (CONTRACT §4)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from snak_runtime import AcquiredRuntime
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, settle

Read = Callable[[Manager, str], Awaitable[Any]]


async def read_acquire(m: Manager, agent_id: str) -> Any:
    return await m.acquire(agent_id)


async def read_with_agent(m: Manager, agent_id: str) -> Any:
    return await m.acquire_with_agent(agent_id)


READS: dict[str, Read] = {"acquire": read_acquire, "acquire_with_agent": read_with_agent}


async def test_acquire_hit_pins_and_returns_runtime(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    assert await m.acquire("a") == seed.runtime
    assert_stats(m, hits=1, misses=0, denied=0, pinned=1, size=1)
    assert await m.acquire("a") == seed.runtime
    assert_stats(m, hits=2, pinned=2)


async def test_acquire_with_agent_returns_runtime_and_agent(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    got = await m.acquire_with_agent("a")
    assert isinstance(got, AcquiredRuntime)
    assert (got.runtime, got.agent) == (seed.runtime, seed.agent)
    assert_stats(m, hits=1, pinned=1)


async def test_acquire_with_agent_of_agentless_seed(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", agent=None, runtime="rt"))
    assert await m.acquire_with_agent("a") == AcquiredRuntime("rt", None)


@pytest.mark.parametrize("read", READS)
async def test_miss_returns_none_and_pins_nothing(
    make_manager: MakeManager, assert_stats: AssertStats, read: str
) -> None:
    m = make_manager()
    assert await READS[read](m, "nobody") is None
    assert_stats(m, hits=0, misses=1, pinned=0, size=0)


@pytest.mark.parametrize("read", READS)
async def test_expired_entry_is_a_miss_and_is_removed(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    read: str,
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    fake_clock.advance(m.default_ttl_ms)
    assert await READS[read](m, "a") is None
    await settle()
    assert_stats(m, hits=0, misses=1, expirations=1, size=0, pinned=0, disposals=1)
    assert disposer.disposed == [seed.agent]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize(
    ("user_id", "allowed"), [("u1", True), ("u2", False), (None, True), ("", False)]
)
async def test_owner_check(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    assert_stats: AssertStats,
    read: str,
    user_id: str | None,
    allowed: bool,
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", user_id="u1", runtime="rt"))
    got: Any
    if read == "acquire":
        got = await m.acquire("a", user_id=user_id)
    else:
        acquired = await m.acquire_with_agent("a", user_id=user_id)
        got = None if acquired is None else acquired.runtime
    if allowed:
        assert got == "rt"
        assert_stats(m, hits=1, misses=0, denied=0, pinned=1)
    else:
        assert got is None
        assert_stats(m, hits=0, misses=0, denied=1, pinned=0)


async def test_release_unpins(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    await m.acquire("a")
    await m.acquire_with_agent("a")
    m.release("a")
    assert_stats(m, pinned=1)
    m.release("a")
    assert_stats(m, pinned=0, size=1)


@pytest.mark.parametrize("seeded", [False, True], ids=["unknown-id", "unpinned-entry"])
async def test_release_without_pin_is_a_logged_noop(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
    seeded: bool,
) -> None:
    m = make_manager()
    if seeded:
        await m.shadow_seed(make_seed("a"))
    caplog.set_level(logging.DEBUG, logger="snak_runtime")
    m.release("a")
    m.release("a")
    assert_stats(m, pinned=0, size=int(seeded))
    assert any(
        r.levelno == logging.DEBUG and "'a'" in r.getMessage() for r in caplog.records
    )
    await m.shadow_seed(make_seed("a", 5))
    await m.acquire("a")
    m.release("a")
    m.release("a")
    assert_stats(m, pinned=0)


async def test_release_is_synchronous(make_manager: MakeManager) -> None:
    m = make_manager()
    assert m.release("a") is None  # type: ignore[func-returns-value]


async def test_release_gives_back_oldest_generation_first(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    v1, v2 = make_seed("a", 1), make_seed("a", 2)
    await m.shadow_seed(v1)
    assert await m.acquire("a") == v1.runtime
    await m.shadow_seed(v2)
    assert await m.acquire("a") == v2.runtime
    assert_stats(m, pinned=2, size=1)
    m.release("a")  # v1's pin: v1 leaves and its agent is disposed
    await settle()
    assert disposer.disposed == [v1.agent]
    assert_stats(m, pinned=1)
    m.release("a")
    await settle()
    assert disposer.disposed == [v1.agent]
    assert await m.acquire("a") == v2.runtime


async def test_release_does_not_touch_lease_pins(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    async with m.lease("a"):
        m.release("a")
        assert_stats(m, pinned=1)
        await m.acquire("a")
        m.release("a")
        m.release("a")
        assert_stats(m, pinned=1)
    assert_stats(m, pinned=0)


async def test_pinned_counts_across_generations(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 1))
    await m.acquire("a")
    await m.shadow_seed(make_seed("a", 2))
    await m.acquire("a")
    await m.acquire("a")
    await m.evict("a")
    assert_stats(m, pinned=3, size=0)
    for _ in range(5):
        m.release("a")
    assert_stats(m, pinned=0, size=0)


READ_KINDS = ["acquire", "acquire_with_agent", "lease"]


async def _hit(m: Manager, agent_id: str, kind: str, user_id: str | None = None) -> bool:
    if kind == "lease":
        try:
            async with m.lease(agent_id, user_id=user_id):
                return True
        except LookupError:
            return False
    got: Any
    if kind == "acquire":
        got = await m.acquire(agent_id, user_id=user_id)
    else:
        got = await m.acquire_with_agent(agent_id, user_id=user_id)
    if got is None:
        return False
    m.release(agent_id)
    return True


@pytest.mark.parametrize("kind", READ_KINDS)
async def test_hit_marks_most_recently_used(
    make_manager: MakeManager, make_seed: MakeSeed, kind: str
) -> None:
    m = make_manager()  # max_entries=3
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))
    assert await _hit(m, "a", kind)
    await m.shadow_seed(make_seed("d"))
    assert ("a" in m, "b" in m, "c" in m, "d" in m) == (True, False, True, True)


@pytest.mark.parametrize("kind", READ_KINDS)
async def test_denied_read_does_not_mark_used(
    make_manager: MakeManager, make_seed: MakeSeed, kind: str
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id, user_id="owner"))
    assert not await _hit(m, "a", kind, user_id="intruder")
    await m.shadow_seed(make_seed("d"))
    assert ("a" in m, "b" in m) == (False, True)


async def test_size_and_len_count_current_generations(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    assert (m.size, len(m)) == (0, 0)
    await m.shadow_seed(make_seed("a", 1))
    await m.shadow_seed(make_seed("b", 1))
    await m.acquire("a")
    await m.shadow_seed(make_seed("a", 2))  # old generation pinned, detached
    assert (m.size, len(m)) == (2, 2)
    await m.evict("b")
    assert (m.size, len(m)) == (1, 1)


async def test_contains_is_live_only_and_does_not_pin_or_bump(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))
    assert "a" in m
    assert "zzz" not in m
    assert 42 not in m
    assert_stats(m, hits=0, misses=0, pinned=0)
    await m.shadow_seed(make_seed("d"))  # "a" stayed least recently used
    assert "a" not in m
    fake_clock.advance(m.default_ttl_ms)
    assert "d" not in m


async def test_version_of_peeks(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    assert m.version_of("a") is None
    await m.shadow_seed(make_seed("a", 7))
    assert m.version_of("a") == 7
    assert_stats(m, hits=0, misses=0, pinned=0)
    fake_clock.advance(m.default_ttl_ms)
    assert m.version_of("a") is None
