"""lease(): pin exactly one generation, build on a miss (CONTRACT §4, §6 single flight basics)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from snak_runtime import RuntimeLease, RuntimeNotCached
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Seed, settle


class Builder:
    """A ``build`` loader that records its calls and returns what it was given."""

    def __init__(self, result: Callable[[str], Seed | None]) -> None:
        self.calls: list[str] = []
        self.result = result

    async def __call__(self, agent_id: str) -> Seed | None:
        self.calls.append(agent_id)
        await asyncio.sleep(0)
        return self.result(agent_id)


async def test_lease_hit_yields_the_generation_and_releases_on_exit(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    seed = make_seed("a", 3, user_id="u7")
    await m.shadow_seed(seed)
    async with m.lease("a") as lease:
        assert isinstance(lease, RuntimeLease)
        assert lease == RuntimeLease("a", "u7", 3, seed.runtime, seed.agent)
        assert (lease.agent_id, lease.user_id, lease.cfg_version) == ("a", "u7", 3)
        assert lease.runtime is seed.runtime and lease.agent is seed.agent
        assert (lease.agent_id, lease.user_id, lease.cfg_version) == ("a", "u7", 3)
        assert (lease.runtime, lease.agent) == (seed.runtime, seed.agent)
        assert_stats(m, hits=1, misses=0, pinned=1)
    assert_stats(m, hits=1, pinned=0, size=1)


async def test_lease_releases_on_exception(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    with pytest.raises(KeyError):
        async with m.lease("a"):
            raise KeyError("boom")
    assert_stats(m, pinned=0, size=1)


async def test_lease_releases_on_cancellation(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    inside = asyncio.Event()

    async def use() -> None:
        async with m.lease("a"):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(use())
    await inside.wait()
    assert_stats(m, pinned=1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert_stats(m, pinned=0, size=1)


async def test_miss_without_build_raises(
    make_manager: MakeManager, assert_stats: AssertStats
) -> None:
    m = make_manager()
    with pytest.raises(RuntimeNotCached) as info:
        async with m.lease("a"):
            pytest.fail("entered a lease on a miss")
    assert info.value.agent_id == "a"
    assert isinstance(info.value, LookupError)
    assert_stats(m, misses=1, hits=0, loads=0, pinned=0)


async def test_miss_with_build_builds_installs_and_leases(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    seed = make_seed("a", 2)
    build = Builder(lambda _: seed)
    async with m.lease("a", build=build) as lease:
        assert (lease.runtime, lease.cfg_version) == (seed.runtime, 2)
        assert_stats(m, misses=1, hits=0, loads=1, load_failures=0, pinned=1, size=1)
    assert build.calls == ["a"]
    async with m.lease("a", build=build) as again:
        assert again.runtime == seed.runtime
    assert build.calls == ["a"]
    assert_stats(m, misses=1, hits=1, loads=1, pinned=0, size=1)
    assert m.stats().load_time_ms > 0


async def test_build_returning_none_raises_and_counts_a_failure(
    make_manager: MakeManager, assert_stats: AssertStats
) -> None:
    m = make_manager()
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a", build=Builder(lambda _: None)):
            pytest.fail("entered")
    assert_stats(m, misses=1, loads=1, load_failures=1, size=0, pinned=0)


async def test_build_raising_propagates_and_caches_nothing(
    make_manager: MakeManager, assert_stats: AssertStats
) -> None:
    m = make_manager()

    async def build(agent_id: str) -> Seed | None:
        raise ConnectionError("llm down")

    with pytest.raises(ConnectionError, match="llm down"):
        async with m.lease("a", build=build):
            pytest.fail("entered")
    assert_stats(m, misses=1, loads=1, load_failures=1, size=0, pinned=0)


@pytest.mark.parametrize(
    ("result", "error"),
    [("not a seed", TypeError), ("other-id", ValueError)],
)
async def test_build_returning_a_wrong_seed_is_a_failure(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    result: str,
    error: type[Exception],
) -> None:
    m = make_manager()
    wrong: object = result if result == "not a seed" else make_seed("b")

    async def build(agent_id: str) -> Seed | None:
        return wrong  # type: ignore[return-value]

    with pytest.raises(error):
        async with m.lease("a", build=build):
            pytest.fail("entered")
    await m.wait_for_disposals()
    assert_stats(m, loads=1, load_failures=1, size=0, pinned=0)
    assert "b" not in m
    # the builder handed its agent over and nothing else owns it: disposed, not leaked
    assert disposer.disposed == ([] if result == "not a seed" else [wrong.agent])  # type: ignore[attr-defined]


async def test_owner_mismatch_raises_without_building_or_revealing(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", user_id="owner"))
    build = Builder(lambda agent_id: make_seed(agent_id, user_id="intruder"))
    with pytest.raises(RuntimeNotCached) as denied:
        async with m.lease("a", user_id="intruder", build=build):
            pytest.fail("entered")
    with pytest.raises(RuntimeNotCached) as missing:
        async with m.lease("zzz", user_id="intruder"):
            pytest.fail("entered")
    assert build.calls == []
    assert str(denied.value) == str(missing.value).replace("zzz", "a")
    assert_stats(m, denied=1, hits=0, misses=1, loads=0, pinned=0)


async def test_owner_match_leases(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", user_id="owner"))
    async with m.lease("a", user_id="owner") as lease:
        assert lease.user_id == "owner"
    assert_stats(m, hits=1, denied=0)


async def test_built_entry_of_another_user_is_denied_to_the_builder(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    build = Builder(lambda agent_id: make_seed(agent_id, user_id="owner"))
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a", user_id="intruder", build=build):
            pytest.fail("entered")
    # the build succeeded: the entry is cached for its owner
    assert_stats(m, denied=1, misses=0, hits=0, loads=1, load_failures=0, size=1, pinned=0)
    async with m.lease("a", user_id="owner") as lease:
        assert lease.user_id == "owner"


async def test_lease_exit_releases_exactly_its_generation(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    v1, v2 = make_seed("a", 1), make_seed("a", 2)
    await m.shadow_seed(v1)
    async with m.lease("a") as old:
        await m.shadow_seed(v2)
        assert await m.acquire("a") == v2.runtime
        assert old.runtime == v1.runtime
        await settle()
        assert disposer.disposed == []
        assert_stats(m, pinned=2)
    await settle()
    assert disposer.disposed == [v1.agent]
    assert_stats(m, pinned=1)
    m.release("a")
    assert_stats(m, pinned=0, size=1)


async def test_lease_and_acquire_pins_are_separate(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    await m.acquire("a")
    async with m.lease("a"):
        assert_stats(m, pinned=2)
    assert_stats(m, pinned=1)
    m.release("a")
    assert_stats(m, pinned=0)


async def test_lease_context_cannot_be_entered_twice_at_once(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    ctx = m.lease("a")
    async with ctx:
        with pytest.raises(RuntimeError):
            await ctx.__aenter__()
    assert_stats(m, pinned=0)
    async with ctx:  # reusable once exited
        assert_stats(m, pinned=1)


async def test_lease_on_expired_entry_builds_a_new_one(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    old = make_seed("a", 1)
    await m.shadow_seed(old)
    fake_clock.advance(m.default_ttl_ms)
    new = make_seed("a", 1)
    async with m.lease("a", build=Builder(lambda _: new)) as lease:
        assert lease.runtime == new.runtime
    await settle()
    assert disposer.disposed == [old.agent]
    assert_stats(m, misses=1, loads=1, expirations=1, size=1, pinned=0)


async def test_lease_on_expired_pinned_entry_builds_and_reports_expired(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    old = make_seed("a", 1)
    await m.shadow_seed(old)
    await m.acquire("a")
    fake_clock.advance(m.default_ttl_ms)
    new = make_seed("a", 1)
    async with m.lease("a", build=Builder(lambda _: new)) as lease:
        assert lease.runtime == new.runtime
    await settle()
    assert disposer.disposed == []
    assert_stats(m, expirations=1, pinned=1, size=1)
    m.release("a")
    await settle()
    assert disposer.disposed == [old.agent]
