"""Lazy invalidation (issue 26): ``invalidation_mode="lazy"`` marks an invalidated entry
superseded and rebuilds it at its next read, once for every concurrent reader; an entry
never read again is never rebuilt (``rebuilds_saved``)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest

from snak_runtime import RuntimeManagerClosed, RuntimeNotCached
from snak_runtime.testing import FakeClock
from tests.conftest import SMALL_MAX_TTL_MS
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, listen, settle


class Rebuilds:
    """A rebuild() that counts its calls, may wait at a gate, and returns (or raises) what
    it is given; ``cancelled`` counts the calls that were cancelled while waiting."""

    def __init__(self, result: Callable[[], Seed | None], *, gated: bool = False) -> None:
        self.result = result
        self.calls = 0
        self.cancelled = 0
        self.gate = asyncio.Event()
        if not gated:
            self.gate.set()

    async def __call__(self) -> Seed | None:
        self.calls += 1
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        return self.result()


def seeded(
    make_seed: MakeSeed, new_version: int = 2, *, gated: bool = False, user_id: str = "u1"
) -> tuple[Seed, Rebuilds]:
    """A v1 seed of agent "a" whose rebuild returns a v``new_version`` seed."""
    rebuilds = Rebuilds(lambda: make_seed("a", new_version, user_id=user_id), gated=gated)
    return make_seed("a", 1, rebuild=rebuilds, user_id=user_id), rebuilds


async def lazy(make_manager: MakeManager, make_seed: MakeSeed, **kw: object) -> tuple[
    Manager, Rebuilds
]:
    m = make_manager(invalidation_mode="lazy", **kw)
    seed, rebuilds = seeded(make_seed)
    await m.shadow_seed(seed)
    return m, rebuilds


def not_cancelled(tasks: list[asyncio.Task[object]]) -> None:
    assert not any(t.cancelled() for t in tasks), "a task nobody cancelled ended cancelled"


# ---------------------------------------------------------------- the option


def test_the_mode_comes_from_the_keyword_and_defaults_to_eager(
    make_manager: MakeManager,
) -> None:
    assert make_manager().invalidation_mode == "eager"
    assert make_manager(invalidation_mode="lazy").invalidation_mode == "lazy"
    with pytest.raises(ValueError, match="invalidation_mode"):
        make_manager(invalidation_mode="later")


def test_the_variable_sets_the_mode_and_a_bad_one_warns(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_INVALIDATION_MODE", " Lazy ")
    assert make_manager().invalidation_mode == "lazy"
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_INVALIDATION_MODE", "sometimes")
    with caplog.at_level(logging.WARNING):
        assert make_manager().invalidation_mode == "eager"
    assert "AGENT_RUNTIME_CACHE_INVALIDATION_MODE='sometimes' ignored" in caplog.text


# ---------------------------------------------------------------- nothing older


async def test_nothing_older_is_served_once_on_invalidate_returns(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 2)
    assert rebuilds.calls == 0  # nothing rebuilt by the invalidation itself
    # not a live entry for the views; the resync view says what it waits for
    assert "a" not in m
    assert m.version_of("a") is None
    assert m.peek("a") is None
    assert m.snapshot() == []
    assert m.resync_view() == {"a": 2}
    assert_stats(m, invalidations=1, rebuilds=0, size=1)
    runtime = await m.acquire("a")
    assert runtime is not None and runtime.startswith("a@v2")
    m.release("a")
    async with m.lease("a") as lease:  # a plain hit now
        assert lease.cfg_version == 2
    assert rebuilds.calls == 1
    assert_stats(m, rebuilds=1, rebuilds_saved=0, loads=0, removals={"invalidated": 1})
    assert m.version_of("a") == 2


async def test_a_pinned_superseded_generation_is_not_served_after_its_release(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    # idle expiry on: the last release must not move the superseded entry's hot-path bound
    m, rebuilds = await lazy(make_manager, make_seed, idle_ttl_ms=500)
    old = await m.acquire("a")
    assert old is not None and old.startswith("a@v1")
    await m.on_invalidate("a", 2)
    m.release("a")
    assert "a" not in m
    async with m.lease("a") as lease:
        assert lease.cfg_version == 2
    assert rebuilds.calls == 1


async def test_stale_while_rebuilding_does_not_apply_to_a_lazy_rebuild(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed, stale_while_rebuilding=True)
    await m.on_invalidate("a", 2)
    runtime = await m.acquire("a")
    assert runtime is not None and runtime.startswith("a@v2")
    m.release("a")
    assert rebuilds.calls == 1


# ---------------------------------------------------------------- one rebuild, on next use


async def test_concurrent_readers_share_one_rebuild(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(invalidation_mode="lazy")
    seed, rebuilds = seeded(make_seed, gated=True)
    await m.shadow_seed(seed)
    await m.on_invalidate("a", 2)
    builds: list[str] = []

    async def build(agent_id: str) -> Seed:
        builds.append(agent_id)
        return make_seed(agent_id, 9)

    async def lease(with_build: bool) -> int:
        async with m.lease("a", build=build if with_build else None) as got:
            return got.cfg_version

    async def acquire() -> int:
        got = await m.acquire_with_agent("a")
        assert got is not None
        m.release("a")
        return 2 if got.runtime.startswith("a@v2") else 0

    tasks: list[asyncio.Task[object]] = [
        asyncio.create_task(lease(False)), asyncio.create_task(acquire()),
        asyncio.create_task(lease(True)), asyncio.create_task(acquire()),
        asyncio.create_task(lease(False)),
    ]
    await settle()
    assert rebuilds.calls == 1
    rebuilds.gate.set()
    assert await asyncio.gather(*tasks) == [2, 2, 2, 2, 2]
    not_cancelled(tasks)
    assert builds == []  # a lease's build= is not used for a superseded entry
    assert_stats(m, rebuilds=1, loads=0, pinned=0)


async def test_an_entry_never_read_again_is_not_rebuilt(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    removed = listen(m)
    await m.on_invalidate("a", 2)
    fake_clock.advance(SMALL_MAX_TTL_MS)
    await m.shadow_seed(make_seed("b"))  # an install removes expired entries on the way
    assert removed == [("a", "expired")]
    assert rebuilds.calls == 0
    assert_stats(m, rebuilds=0, rebuilds_saved=1)
    assert m.resync_view() == {"b": 1}


async def test_an_expired_superseded_entry_is_not_rebuilt_by_a_read(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 2)
    fake_clock.advance(SMALL_MAX_TTL_MS)
    assert await m.acquire("a") is None
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a"):
            pass
    assert rebuilds.calls == 0
    assert_stats(m, rebuilds=0, rebuilds_saved=1, removals={"expired": 1})


async def test_an_evicted_superseded_entry_counts_as_saved(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 2)
    assert await m.evict("a")
    assert rebuilds.calls == 0
    assert_stats(m, rebuilds=0, rebuilds_saved=1)


# ---------------------------------------------------------------- failures


@pytest.mark.parametrize("read", ["lease", "acquire"])
async def test_a_failed_lazy_rebuild_raises_to_the_reader_and_removes_the_entry(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, read: str
) -> None:
    def boom() -> Seed:
        raise ValueError("config store down")

    m = make_manager(invalidation_mode="lazy")
    await m.shadow_seed(make_seed("a", 1, rebuild=Rebuilds(boom)))
    removed = listen(m)
    await m.on_invalidate("a", 2)
    with pytest.raises(ValueError, match="config store down"):
        if read == "lease":
            async with m.lease("a"):
                pass
        else:
            await m.acquire("a")
    assert removed == [("a", "invalidated")]
    assert "a" not in m and m.size == 0
    assert_stats(m, rebuilds=1, rebuild_failures=1, rebuilds_saved=0, pinned=0)


async def test_a_lazy_rebuild_returning_none_removes_the_entry(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(invalidation_mode="lazy")
    await m.shadow_seed(make_seed("a", 1, rebuild=Rebuilds(lambda: None)))
    removed = listen(m)
    await m.on_invalidate("a", 2)
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a"):
            pass
    assert removed == [("a", "invalidated")]
    assert await m.acquire("a") is None
    assert_stats(m, rebuilds=1, rebuilds_saved=0, size=0)


async def test_acquire_gets_none_when_the_lazy_rebuild_returns_none(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(invalidation_mode="lazy")
    await m.shadow_seed(make_seed("a", 1, rebuild=Rebuilds(lambda: None)))
    await m.on_invalidate("a", 2)
    assert await m.acquire("a") is None
    assert m.size == 0


# ---------------------------------------------------------------- versions


async def test_the_ceiling_still_applies(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_manager(invalidation_mode="lazy")
    rebuilds = Rebuilds(lambda: make_seed("a", 1, rebuild=rebuilds))  # never reaches 2
    await m.shadow_seed(make_seed("a", 1, rebuild=rebuilds))
    await m.on_invalidate("a", 1)  # at the cached version: nothing
    assert "a" in m
    await m.on_invalidate("a", 2)
    with caplog.at_level(logging.WARNING):
        async with m.lease("a") as lease:
            assert lease.cfg_version == 1  # what the rebuild gave, warned about
    assert "older than invalidation version 2" in caplog.text
    await m.on_invalidate("a", 2)  # at the ceiling: a no-op, no second rebuild
    assert "a" in m
    async with m.lease("a"):
        pass
    assert rebuilds.calls == 1
    assert_stats(m, invalidations=3, rebuilds=1)


async def test_a_higher_second_invalidation_raises_the_version_to_reach(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)  # its rebuild gives v2
    await m.on_invalidate("a", 2)
    await m.on_invalidate("a", 3)
    await m.on_invalidate("a", 3)  # a repeat: nothing
    assert m.resync_view() == {"a": 3}
    with caplog.at_level(logging.WARNING):
        async with m.lease("a") as lease:
            assert lease.cfg_version == 2
    assert "older than invalidation version 3" in caplog.text
    assert rebuilds.calls == 1
    await m.on_invalidate("a", 3)  # what was asked for stays asked for
    assert "a" in m
    assert_stats(m, invalidations=4, rebuilds=1)


async def test_a_shadow_seed_older_than_asked_for_is_ignored(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 3)
    await m.shadow_seed(make_seed("a", 2))
    assert "a" not in m  # still superseded
    await m.shadow_seed(make_seed("a", 3))
    assert m.version_of("a") == 3
    assert rebuilds.calls == 0


async def test_another_users_read_does_not_rebuild(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 2)
    assert await m.acquire("a", user_id="u2") is None
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a", user_id="u2"):
            pass
    assert rebuilds.calls == 0
    assert_stats(m, denied=2)


# ---------------------------------------------------------------- close and cancellation


async def test_closing_removes_a_superseded_entry_without_rebuilding_it(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m, rebuilds = await lazy(make_manager, make_seed)
    await m.on_invalidate("a", 2)
    await m.aclose()
    assert rebuilds.calls == 0
    assert_stats(m, rebuilds_saved=1, removals={"shutdown": 1})
    with pytest.raises(RuntimeManagerClosed):
        await m.acquire("a")


async def test_closing_during_a_lazy_rebuild_fails_its_reader(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(invalidation_mode="lazy")
    seed, rebuilds = seeded(make_seed, gated=True)
    await m.shadow_seed(seed)
    await m.on_invalidate("a", 2)

    async def read() -> None:
        async with m.lease("a"):
            pass

    reader = asyncio.create_task(read())
    await settle()
    assert rebuilds.calls == 1
    await m.aclose(grace_ms=0)
    with pytest.raises(RuntimeManagerClosed):
        await reader
    assert rebuilds.cancelled == 1


async def test_the_only_readers_cancellation_cancels_the_rebuild_as_a_loads(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(invalidation_mode="lazy")
    seed, rebuilds = seeded(make_seed, gated=True)
    await m.shadow_seed(seed)
    removed = listen(m)
    await m.on_invalidate("a", 2)
    reader = asyncio.create_task(m.acquire("a"))
    await settle()
    assert rebuilds.calls == 1
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    await settle()
    # the load's rule: nobody waits for it any more, so it is cancelled; like a cancelled
    # eager rebuild, its entry leaves (cause invalidated) and the next read misses
    assert rebuilds.cancelled == 1
    assert removed == [("a", "invalidated")]
    assert await m.acquire("a") is None
    assert_stats(m, rebuilds=1, rebuild_failures=1, pinned=0)


async def test_a_cancelled_reader_leaves_the_others_their_rebuild(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(invalidation_mode="lazy")
    seed, rebuilds = seeded(make_seed, gated=True)
    await m.shadow_seed(seed)
    await m.on_invalidate("a", 2)

    async def read() -> int:
        async with m.lease("a") as got:
            return got.cfg_version

    first = asyncio.create_task(read())
    await settle()
    second = asyncio.create_task(read())
    await settle()
    first.cancel()
    await settle()
    rebuilds.gate.set()
    assert await second == 2
    assert first.cancelled()
    assert rebuilds.calls == 1 and rebuilds.cancelled == 0
    assert_stats(m, rebuilds=1, rebuild_failures=0, pinned=0)

