"""Refresh-ahead (``refresh_ahead_ms``) and ``stale_while_rebuilding`` (issue 15)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

import pytest

from snak_runtime import (
    AgentRuntimeManager,
    GuardConfig,
    RemovalCause,
    RuntimeCacheSettings,
    RuntimeNotCached,
)
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Seed, listen, settle

TTL = 1_000  # the small guard's max_ttl_ms: the default TTL of these managers
WINDOW = 200


def completes_at_once(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run ``coro`` one step: it must finish without suspending (nothing waited for)."""
    try:
        coro.send(None)
    except StopIteration as done:
        return done.value
    coro.close()
    raise AssertionError("the read suspended: it waited for something")


class Gate:
    """A rebuild that returns the seeds queued in ``results`` in order, waiting for ``open``
    when ``held``; it records each call."""

    def __init__(self, *results: Seed | BaseException | None, held: bool = False) -> None:
        self.results = list(results)
        self.calls = 0
        self.open = asyncio.Event()
        if not held:
            self.open.set()

    async def __call__(self) -> Seed | None:
        self.calls += 1
        result = self.results.pop(0)
        await self.open.wait()
        if isinstance(result, BaseException):
            raise result
        return result


def refreshing(make_manager: MakeManager, **kw: Any) -> Manager:
    kw.setdefault("refresh_ahead_ms", WINDOW)
    return make_manager(**kw)


# ---------------------------------------------------------------- settings


def test_refresh_ahead_keyword_must_be_below_the_default_ttl(make_manager: MakeManager) -> None:
    for bad in (TTL, TTL + 1, -1, True, 1.5, "100"):
        with pytest.raises(ValueError, match="refresh_ahead_ms"):
            make_manager(refresh_ahead_ms=bad)
    assert make_manager(refresh_ahead_ms=TTL - 1).refresh_ahead_ms == TTL - 1
    assert make_manager().refresh_ahead_ms == 0


def test_refresh_ahead_from_the_environment_and_the_keyword_wins(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS", "250")
    assert make_manager(settings=RuntimeCacheSettings()).refresh_ahead_ms == 250
    assert make_manager(settings=RuntimeCacheSettings(), refresh_ahead_ms=10).refresh_ahead_ms == 10
    assert RuntimeCacheSettings(refresh_ahead_ms="30").refresh_ahead_ms == 30  # typed (issue 24)


@pytest.mark.parametrize("raw", ["abc", "1e3", "-5", str(TTL), "99999"])
def test_a_bad_refresh_ahead_variable_warns_and_is_off(
    make_manager: MakeManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raw: str,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS", raw)
    with caplog.at_level(logging.WARNING):
        m = make_manager(settings=RuntimeCacheSettings())
    assert m.refresh_ahead_ms == 0
    assert any(
        "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS" in r.getMessage() and repr(raw) in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize(
    ("raw", "expected", "warns"),
    [("true", True, False), ("1", True, False), (" Yes ", True, False), ("off", False, False),
     ("false", False, False), ("maybe", False, True), ("2", False, True)],
)
def test_stale_while_rebuilding_from_the_environment(
    make_manager: MakeManager,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    raw: str,
    expected: bool,
    warns: bool,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING", raw)
    with caplog.at_level(logging.WARNING):
        m = make_manager(settings=RuntimeCacheSettings())
    assert m.stale_while_rebuilding is expected
    warned = [r for r in caplog.records if "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING" in
              r.getMessage()]
    assert bool(warned) is warns
    # the keyword beats the variable
    assert make_manager(
        settings=RuntimeCacheSettings(), stale_while_rebuilding=not expected
    ).stale_while_rebuilding is (not expected)


def test_stale_while_rebuilding_keyword_must_be_a_bool(make_manager: MakeManager) -> None:
    with pytest.raises(ValueError, match="stale_while_rebuilding"):
        make_manager(stale_while_rebuilding="yes")
    assert make_manager().stale_while_rebuilding is False


# ---------------------------------------------------------------- refresh-ahead


async def test_a_hit_before_the_window_does_not_refresh(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = refreshing(make_manager)
    gate = Gate(make_seed("a", 1))
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW - 1)
    assert await m.acquire("a") is not None
    m.release("a")
    await settle()
    assert gate.calls == 0


async def test_with_the_option_off_nothing_is_refreshed(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    gate = Gate(make_seed("a", 1))
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - 1)
    assert await m.acquire("a") is not None
    m.release("a")
    await settle()
    assert gate.calls == 0
    assert_stats(m, refreshes=0, hits=1)


async def test_a_hit_in_the_window_installs_a_new_generation_with_a_fresh_ttl(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    removed = listen(m)
    refreshed = make_seed("a", 1)  # same version: still a new generation
    gate = Gate(refreshed)
    old = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(old)
    fake_clock.advance(TTL - WINDOW)
    assert await m.acquire("a") == old.runtime  # served at once, refresh in the background
    await settle()
    assert gate.calls == 1
    assert removed == [("a", "refreshed")]
    assert await m.acquire("a") == refreshed.runtime
    assert disposer.disposed == []  # the old generation is still pinned
    m.release("a")  # the old generation's pin (oldest first)
    await m.wait_for_disposals()
    assert disposer.disposed == [old.agent]
    m.release("a")
    fake_clock.advance(WINDOW + 1)  # past the old deadline: the new one lives a full TTL
    assert await m.acquire("a") == refreshed.runtime
    m.release("a")
    assert_stats(m, refreshes=1, refresh_failures=0, hits=3, misses=0, pinned=0,
                 removals={"refreshed": 1})


async def test_at_most_one_refresh_per_generation_and_a_failure_keeps_it_until_it_expires(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    gate = Gate(RuntimeError("config store down"))
    seed = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert await m.acquire("a") == seed.runtime
            m.release("a")
            await settle()
    assert gate.calls == 1
    assert any(
        "refresh of agent 'a' failed" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )
    fake_clock.advance(WINDOW - 1)
    assert await m.acquire("a") == seed.runtime  # kept until it expires
    m.release("a")
    fake_clock.advance(1)
    assert await m.acquire("a") is None
    assert_stats(m, refreshes=1, refresh_failures=1, hits=4, misses=1,
                 removals={"expired": 1})


async def test_reads_never_wait_for_the_refresh(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = refreshing(make_manager)
    gate = Gate(make_seed("a", 1), held=True)
    seed = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    assert await m.acquire("a") == seed.runtime
    await settle()
    assert gate.calls == 1
    # while the rebuild runs, every read completes without suspending
    assert completes_at_once(m.acquire("a")) == seed.runtime
    got = completes_at_once(m.acquire_with_agent("a"))
    assert got is not None and got.runtime == seed.runtime
    context = m.lease("a")
    lease = completes_at_once(context.__aenter__())
    assert lease.runtime == seed.runtime
    await context.__aexit__(None, None, None)
    for _ in range(3):
        m.release("a")
    gate.open.set()
    await settle()
    assert m.stats().refreshes == 1


async def test_a_refresh_keeps_the_entrys_eviction_policy_state(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = refreshing(make_manager)
    policy = internals(m).policy
    seen: list[tuple[object, object]] = []
    inserted = policy.inserted

    def spy(gen: Any, previous: Any) -> None:
        seen.append((gen.runtime, None if previous is None else previous.runtime))
        inserted(gen, previous)

    policy.inserted = spy  # type: ignore[method-assign]
    refreshed = make_seed("a", 2)
    old = make_seed("a", 1, rebuild=Gate(refreshed))
    await m.shadow_seed(old)
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    assert seen == [(old.runtime, None), (refreshed.runtime, old.runtime)]


async def test_an_invalidation_meanwhile_supersedes_the_refresh(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    from_refresh = make_seed("a", 1)
    from_invalidation = make_seed("a", 2)
    gate = Gate(from_refresh, from_invalidation, held=True)
    old = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(old)
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()  # the refresh's rebuild is waiting
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    gate.open.set()
    await invalidation
    await settle()
    await m.wait_for_disposals()
    assert await m.acquire("a") == from_invalidation.runtime
    m.release("a")
    # the refresh's result was discarded and its agent disposed; never installed
    assert disposer.count(from_refresh.agent) == 1
    assert disposer.count(old.agent) == 1
    assert_stats(m, refreshes=1, refresh_failures=0, rebuilds=1,
                 removals={"invalidated": 1})


@pytest.mark.parametrize("write", ["evict", "shadow_seed"])
async def test_an_evict_or_shadow_seed_meanwhile_supersedes_the_refresh(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    write: str,
) -> None:
    m = refreshing(make_manager)
    from_refresh = make_seed("a", 3)
    gate = Gate(from_refresh, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    written = make_seed("a", 1)
    if write == "evict":
        assert await m.evict("a")
    else:
        await m.shadow_seed(written)
    gate.open.set()
    await settle()
    await m.wait_for_disposals()
    got = await m.acquire("a")
    assert got == (None if write == "evict" else written.runtime)
    assert disposer.count(from_refresh.agent) == 1


async def test_a_refresh_never_installs_a_version_older_than_cached(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = refreshing(make_manager)
    older = make_seed("a", 1)
    seed = make_seed("a", 2, rebuild=Gate(older))
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    with caplog.at_level(logging.WARNING):
        await m.acquire("a")
        m.release("a")
        await settle()
        await m.wait_for_disposals()
    assert await m.acquire("a") == seed.runtime
    m.release("a")
    assert disposer.disposed == [older.agent]
    assert any("older than the cached" in r.getMessage() for r in caplog.records)
    assert_stats(m, refreshes=1, refresh_failures=1, removals={})


async def test_a_refresh_returning_none_evicts(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    removed = listen(m)
    seed = make_seed("a", 1, rebuild=Gate(None))
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    await settle()
    assert removed == [("a", "refreshed")]
    assert disposer.disposed == []  # pinned
    m.release("a")
    await m.wait_for_disposals()
    assert disposer.disposed == [seed.agent]
    assert await m.acquire("a") is None
    assert_stats(m, refreshes=1, refresh_failures=0, size=0, pinned=0)


async def test_reads_of_an_expired_entry_join_the_running_refresh(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    refreshed = make_seed("a", 2)
    gate = Gate(refreshed, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    fake_clock.advance(WINDOW)  # expired while the refresh runs
    builds: list[str] = []

    async def build(agent_id: str) -> Seed:
        builds.append(agent_id)
        return make_seed(agent_id, 9)

    plain = asyncio.ensure_future(m.acquire("a"))
    with_agent = asyncio.ensure_future(m.acquire_with_agent("a"))
    leasing = asyncio.ensure_future(m.lease("a", build=build).__aenter__())
    other_user = asyncio.ensure_future(m.acquire("a", user_id="someone else"))
    waiting: list[asyncio.Future[Any]] = [plain, with_agent, leasing, other_user]
    await settle()
    assert not any(t.done() for t in waiting)
    gate.open.set()
    await asyncio.gather(*waiting)
    assert plain.result() == refreshed.runtime
    got = with_agent.result()
    assert got is not None and got.runtime == refreshed.runtime
    assert leasing.result().runtime == refreshed.runtime
    assert other_user.result() is None
    assert builds == []
    assert_stats(m, refreshes=1, hits=1, misses=3, denied=1, pinned=3, loads=0,
                 removals={"expired": 1})


async def test_joined_reads_after_a_failed_refresh_miss_or_build(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    gate = Gate(RuntimeError("down"), held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    fake_clock.advance(WINDOW)
    built = make_seed("a", 5)

    async def build(agent_id: str) -> Seed:
        return built

    acquiring = asyncio.ensure_future(m.acquire("a"))
    leasing = asyncio.ensure_future(m.lease("a", build=build).__aenter__())
    await settle()
    gate.open.set()
    assert await acquiring is None
    lease = await leasing
    assert lease.runtime == built.runtime
    assert_stats(m, refreshes=1, refresh_failures=1, loads=1, hits=1, misses=2)


async def test_a_joined_read_can_be_cancelled(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager)
    refreshed = make_seed("a", 1)
    gate = Gate(refreshed, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    fake_clock.advance(WINDOW)
    waiting = asyncio.ensure_future(m.acquire("a"))
    await settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    gate.open.set()
    await settle()
    # the expired entry was still in the map: the refresh replaces it all the same
    assert await m.acquire("a") == refreshed.runtime
    m.release("a")
    assert_stats(m, refreshes=1, pinned=0, removals={"expired": 1})


async def test_a_refresh_is_bounded_by_the_build_timeout(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = refreshing(make_manager, build_timeout_ms=1)
    gate = Gate(make_seed("a", 1), held=True)  # never opened
    timed_out = asyncio.Event()

    async def rebuild() -> Seed | None:
        try:
            return await gate()
        except asyncio.CancelledError:  # the build timeout (the loop's timer) ends the wait
            timed_out.set()
            raise

    seed = make_seed("a", 1, rebuild=rebuild)
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    async with asyncio.timeout(60):
        await timed_out.wait()
    await settle()  # the refresh counts its failure
    assert await m.acquire("a") == seed.runtime
    m.release("a")
    assert_stats(m, refreshes=1, refresh_failures=1)


async def test_a_short_ttl_of_its_own_opens_the_window_halfway(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = refreshing(make_manager, refresh_ahead_ms=800)
    gate = Gate(make_seed("a", 1))
    await m.shadow_seed(make_seed("a", 1, rebuild=gate, ttl_ms=100))
    fake_clock.advance(49)
    await m.acquire("a")
    m.release("a")
    await settle()
    assert gate.calls == 0
    fake_clock.advance(1)
    await m.acquire("a")
    m.release("a")
    await settle()
    assert gate.calls == 1


async def test_close_cancels_a_refresh_and_disposes_everything_once(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
) -> None:
    m = refreshing(make_manager)
    gate = Gate(make_seed("a", 1), held=True)
    seed = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(seed)
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    await m.aclose(grace_ms=1)
    assert disposer.disposed == [seed.agent]
    assert m.stats().refresh_failures == 1


async def test_a_refresh_installing_over_capacity_never_evicts_itself(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = refreshing(make_manager, guards=GuardConfig(max_entries=2, max_ttl_ms=TTL))
    refreshed = make_seed("a", 1)
    await m.shadow_seed(make_seed("a", 1, rebuild=Gate(refreshed)))
    await m.shadow_seed(make_seed("b", 1))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    assert m.size == 2
    assert await m.acquire("a") == refreshed.runtime
    m.release("a")


# ---------------------------------------------------------------- stale_while_rebuilding


async def test_reads_get_the_cached_generation_while_an_invalidation_rebuilds(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats,
) -> None:
    m = make_manager(stale_while_rebuilding=True)
    rebuilt = make_seed("a", 2)
    gate = Gate(rebuilt, held=True)
    old = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(old)
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    assert gate.calls == 1
    assert completes_at_once(m.acquire("a")) == old.runtime
    context = m.lease("a")
    assert completes_at_once(context.__aenter__()).runtime == old.runtime
    gate.open.set()
    await invalidation
    # after on_invalidate returned, only its outcome is served
    assert await m.acquire("a") == rebuilt.runtime
    await context.__aexit__(None, None, None)
    m.release("a")
    m.release("a")
    assert_stats(m, hits=3, misses=0, pinned=0, rebuilds=1)


async def test_without_the_option_reads_wait_for_the_rebuild(
    make_manager: MakeManager, make_seed: MakeSeed,
) -> None:
    m = make_manager()
    rebuilt = make_seed("a", 2)
    gate = Gate(rebuilt, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    reading = asyncio.ensure_future(m.acquire("a"))
    await settle()
    assert not reading.done()
    gate.open.set()
    await invalidation
    assert await reading == rebuilt.runtime


async def test_after_a_failed_rebuild_nothing_stale_is_served(
    make_manager: MakeManager, make_seed: MakeSeed,
) -> None:
    m = make_manager(stale_while_rebuilding=True)
    gate = Gate(RuntimeError("down"), held=True)
    old = make_seed("a", 1, rebuild=gate)
    await m.shadow_seed(old)
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    assert await m.acquire("a") == old.runtime
    m.release("a")
    gate.open.set()
    with pytest.raises(RuntimeError):
        await invalidation
    assert await m.acquire("a") is None
    with pytest.raises(RuntimeNotCached):
        async with m.lease("a"):
            pass


async def test_other_writes_in_flight_are_still_waited_for(
    make_manager: MakeManager, make_seed: MakeSeed,
) -> None:
    m = make_manager(stale_while_rebuilding=True)
    gate = Gate(make_seed("a", 2), held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    newer = make_seed("a", 3)
    seeding = asyncio.ensure_future(m.shadow_seed(newer))  # queued behind the invalidation
    await settle()
    reading = asyncio.ensure_future(m.acquire("a"))
    await settle()
    assert not reading.done()  # it waits for the shadow_seed, as before
    gate.open.set()
    await invalidation
    await seeding
    assert await reading == newer.runtime


async def test_an_expired_entry_is_not_served_while_rebuilding(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(stale_while_rebuilding=True)
    rebuilt = make_seed("a", 2)
    gate = Gate(rebuilt, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    fake_clock.advance(TTL)
    reading = asyncio.ensure_future(m.acquire("a"))
    await settle()
    assert not reading.done()
    gate.open.set()
    await invalidation
    assert await reading == rebuilt.runtime


async def test_both_options_a_stale_hit_does_not_start_a_refresh(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = refreshing(make_manager, stale_while_rebuilding=True)
    rebuilt = make_seed("a", 2)
    gate = Gate(rebuilt, make_seed("a", 2), held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    invalidation = asyncio.ensure_future(m.on_invalidate("a", 2))
    await settle()
    assert await m.acquire("a") is not None  # stale hit in the window
    m.release("a")
    await settle()
    assert gate.calls == 1  # only the invalidation's rebuild
    gate.open.set()
    await invalidation
    assert await m.acquire("a") == rebuilt.runtime
    m.release("a")
    assert m.stats().refreshes == 0
    assert m.stats().removals[RemovalCause.REFRESHED.value] == 0


def test_without_settings_the_options_are_read_from_os_environ(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The settings rule's start-up line says where each came from."""
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS", "1500")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING", "on")
    with caplog.at_level(logging.INFO, logger="snak_runtime._config"):
        m: Manager = AgentRuntimeManager()
    assert (m.refresh_ahead_ms, m.stale_while_rebuilding) == (1500, True)
    assert m.limits.refresh_ahead_source == "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS=1500"
    assert m.limits.stale_while_rebuilding_source == "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING=on"
    line = next(r.getMessage() for r in caplog.records if "snak_runtime limits" in r.getMessage())
    assert "refresh_ahead_ms=1500 (AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS=1500)" in line
    assert "stale_while_rebuilding=True" in line
    keyword: Manager = AgentRuntimeManager(refresh_ahead_ms=0, stale_while_rebuilding=False)
    assert keyword.limits.refresh_ahead_source == "keyword refresh_ahead_ms=0"
    assert (keyword.refresh_ahead_ms, keyword.stale_while_rebuilding) == (0, False)


async def test_operators_see_an_entry_in_its_refresh_window_as_live(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = refreshing(make_manager)
    await m.shadow_seed(make_seed("a", 1, rebuild=Gate(make_seed("a", 1), held=True)))
    fake_clock.advance(TTL - WINDOW + 10)
    info = m.peek("a")
    assert info is not None and info.expires_in_ms == WINDOW - 10
    assert [i.agent_id for i in m.snapshot()] == ["a"]
    assert m.version_of("a") == 1 and "a" in m


@pytest.mark.parametrize("operator", ["evict_user", "evict_where"])
async def test_an_operator_eviction_meanwhile_supersedes_the_refresh(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    operator: str,
) -> None:
    """Even a read that then finds nothing and waits for the refresh does not bring back
    what an operator removed (nor a runtime of an evicted user built before the call)."""
    m = refreshing(make_manager)
    from_refresh = make_seed("a", 2)
    gate = Gate(from_refresh, held=True)
    await m.shadow_seed(make_seed("a", 1, rebuild=gate))
    fake_clock.advance(TTL - WINDOW)
    await m.acquire("a")
    m.release("a")
    await settle()
    if operator == "evict_user":
        assert await m.evict_user("u1") == 1
    else:
        assert await m.evict_where(lambda info: info.agent_id == "a") == 1
    reading = asyncio.ensure_future(m.acquire("a"))
    await settle()
    gate.open.set()
    assert await reading is None
    await settle()
    await m.wait_for_disposals()
    assert await m.acquire("a") is None
    assert disposer.count(from_refresh.agent) == 1
