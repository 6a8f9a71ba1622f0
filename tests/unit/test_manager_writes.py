"""Writes: shadow_seed, on_invalidate, evict, capacity, removal listener (CONTRACT §3, §5, §9)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import pytest

from snak_runtime import GuardConfig, RemovalCause, RuntimeSeed
from snak_runtime._policies import POLICY_NAMES
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Seed, listen, settle


def rebuild_to(
    seed: Seed | None, calls: list[str] | None = None
) -> Callable[[], Awaitable[Seed | None]]:
    async def rebuild() -> Seed | None:
        if calls is not None:
            calls.append("rebuild")
        await asyncio.sleep(0)
        return seed

    return rebuild


# ---------------------------------------------------------------- seeds (§3)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"agent_id": ""}, ValueError),
        ({"cfg_version": "1"}, TypeError),
        ({"cfg_version": 1.0}, TypeError),
        ({"cfg_version": True}, TypeError),
        ({"rebuild": "not callable"}, TypeError),
        ({"rebuild": None}, TypeError),
    ],
)
def test_invalid_seed_is_rejected_at_construction(
    kwargs: dict[str, object], error: type[Exception]
) -> None:
    async def rebuild() -> Seed | None:
        return None

    fields: dict[str, object] = {
        "agent_id": "a", "user_id": "u", "cfg_version": 1, "runtime": "rt", "rebuild": rebuild,
    }
    fields.update(kwargs)
    with pytest.raises(error):
        RuntimeSeed(**fields)  # type: ignore[arg-type]


async def test_shadow_seed_rejects_a_non_seed(
    make_manager: MakeManager, assert_stats: AssertStats
) -> None:
    m = make_manager()
    with pytest.raises(TypeError):
        await m.shadow_seed("a")  # type: ignore[arg-type]
    assert_stats(m, size=0)


# ---------------------------------------------------------------- shadow_seed


async def test_shadow_seed_installs_when_absent(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    removed = listen(m)
    seed = make_seed("a", 1)
    await m.shadow_seed(seed)
    assert (m.version_of("a"), removed) == (1, [])
    assert_stats(m, size=1, pinned=0, hits=0, misses=0)
    assert await m.acquire("a") == seed.runtime


async def test_same_version_refreshes_in_place(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed = listen(m)
    calls: list[str] = []
    old = make_seed("a", 4, user_id="u1")
    new = make_seed("a", 4, user_id="u2", rebuild=rebuild_to(make_seed("a", 5), calls))
    await m.shadow_seed(old)
    fake_clock.advance(m.default_ttl_ms - 1)
    await m.shadow_seed(new)
    fake_clock.advance(m.default_ttl_ms - 1)  # expiry restarted at the refresh
    await settle()
    assert removed == []
    assert disposer.disposed == [old.agent]  # departure: the replaced agent is disposed
    got = await m.acquire_with_agent("a", user_id="u2")
    assert got is not None and (got.runtime, got.agent) == (new.runtime, new.agent)
    m.release("a")
    await m.on_invalidate("a", 5)  # the refreshed rebuild is the one called
    assert calls == ["rebuild"]
    assert_stats(m, size=1, pinned=0, removals={"invalidated": 1})


async def test_same_version_refresh_with_same_agent_does_not_dispose(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    removed = listen(m)
    seed = make_seed("a", 1)
    await m.shadow_seed(seed)
    await m.shadow_seed(make_seed("a", 1, agent=seed.agent, runtime="rt2"))
    await settle()
    assert (disposer.disposed, removed) == ([], [])
    assert await m.acquire("a") == "rt2"


async def test_same_version_refresh_of_pinned_entry_defers_disposal_and_keeps_pins_exact(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    old = make_seed("a", 1)
    await m.shadow_seed(old)
    assert await m.acquire("a") == old.runtime
    new = make_seed("a", 1)
    await m.shadow_seed(new)
    await settle()
    assert disposer.disposed == []
    assert_stats(m, pinned=1, size=1)
    m.release("a")
    await settle()
    assert disposer.disposed == [old.agent]
    assert_stats(m, pinned=0, size=1)
    assert await m.acquire("a") == new.runtime


async def test_refresh_marks_most_recently_used(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's  # max_entries=3
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))
    await m.shadow_seed(make_seed("a"))
    await m.shadow_seed(make_seed("d"))
    assert sorted(k for k in "abcd" if k in m) == ["a", "c", "d"]


@pytest.mark.parametrize("pinned", [False, True])
async def test_install_over_expired_entry_reports_expired(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    pinned: bool,
) -> None:
    m = make_manager()
    removed = listen(m)
    old = make_seed("a", 1)
    await m.shadow_seed(old)
    if pinned:
        await m.acquire("a")
    fake_clock.advance(m.default_ttl_ms)
    new = make_seed("a", 1)
    await m.shadow_seed(new)
    await settle()
    assert removed == [("a", "expired")]
    assert disposer.disposed == ([] if pinned else [old.agent])
    assert_stats(m, expirations=1, size=1, pinned=int(pinned))
    assert await m.acquire("a") == new.runtime


@pytest.mark.parametrize("stale_version", [4, 3, 0, -1])
async def test_lower_version_is_ignored_and_its_agent_stays_the_callers(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    caplog: pytest.LogCaptureFixture,
    assert_stats: AssertStats,
    stale_version: int,
) -> None:
    m = make_manager()
    removed = listen(m)
    current = make_seed("a", 5)
    await m.shadow_seed(current)
    caplog.set_level(logging.DEBUG, logger="snak_runtime")
    stale = make_seed("a", stale_version)
    await m.shadow_seed(stale)
    await settle()
    assert (removed, disposer.disposed) == ([], [])
    assert m.version_of("a") == 5
    assert await m.acquire("a") == current.runtime
    assert any(r.levelno == logging.DEBUG and "older" in r.getMessage() for r in caplog.records)
    await m.aclose(grace_ms=1)
    assert stale.agent not in disposer.disposed
    assert disposer.count(current.agent) == 1
    assert_stats(m, size=0)


@pytest.mark.parametrize("pinned", [False, True])
async def test_newer_version_installs_a_new_generation(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    pinned: bool,
) -> None:
    m = make_manager()
    removed = listen(m)
    old, new = make_seed("a", 1), make_seed("a", 2)
    await m.shadow_seed(old)
    if pinned:
        assert await m.acquire("a") == old.runtime
    await m.shadow_seed(new)
    await settle()
    assert removed == [("a", "replaced")]
    assert disposer.disposed == ([] if pinned else [old.agent])
    assert_stats(m, size=1, pinned=int(pinned), removals={"replaced": 1})
    if pinned:
        m.release("a")
        await settle()
        assert disposer.disposed == [old.agent]
    assert await m.acquire("a") == new.runtime


# ---------------------------------------------------------------- on_invalidate


async def test_invalidate_without_entry_does_nothing(
    make_manager: MakeManager, assert_stats: AssertStats, caplog: pytest.LogCaptureFixture
) -> None:
    m = make_manager()
    caplog.set_level(logging.DEBUG, logger="snak_runtime")
    await m.on_invalidate("a", 3)
    assert_stats(m, invalidations=1, rebuilds=0, size=0)
    assert any(r.levelno == logging.DEBUG and "'a'" in r.getMessage() for r in caplog.records)


async def test_invalidate_expired_entry_removes_it_without_rebuild(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed = listen(m)
    calls: list[str] = []
    seed = make_seed("a", 1, rebuild=rebuild_to(make_seed("a", 2), calls))
    await m.shadow_seed(seed)
    fake_clock.advance(m.default_ttl_ms)
    await m.on_invalidate("a", 2)
    await settle()
    assert (calls, removed, disposer.disposed) == ([], [("a", "expired")], [seed.agent])
    assert_stats(m, invalidations=1, rebuilds=0, expirations=1, size=0)


@pytest.mark.parametrize("event_version", [3, 2, 1, -5])
async def test_invalidate_not_newer_than_entry_is_a_noop(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    event_version: int,
) -> None:
    m = make_manager()
    removed = listen(m)
    calls: list[str] = []
    seed = make_seed("a", 3, rebuild=rebuild_to(make_seed("a", 4), calls))
    await m.shadow_seed(seed)
    await m.on_invalidate("a", event_version)
    await settle()
    assert (calls, removed, disposer.disposed) == ([], [], [])
    assert await m.acquire("a") == seed.runtime
    assert_stats(m, invalidations=1, rebuilds=0)


@pytest.mark.parametrize("pinned", [False, True])
async def test_invalidate_rebuilds_into_a_new_generation(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    pinned: bool,
) -> None:
    m = make_manager()
    removed = listen(m)
    new = make_seed("a", 2)
    old = make_seed("a", 1, rebuild=rebuild_to(new))
    await m.shadow_seed(old)
    if pinned:
        await m.acquire("a")
    await m.on_invalidate("a", 2)
    await settle()
    assert removed == [("a", "invalidated")]
    assert disposer.disposed == ([] if pinned else [old.agent])
    assert await m.acquire("a") == new.runtime
    assert_stats(m, invalidations=1, rebuilds=1, rebuild_failures=0, size=1)
    assert m.stats().rebuild_time_ms > 0


async def test_rebuild_still_below_event_version_installs_with_warning(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_manager()
    new = make_seed("a", 2)
    await m.shadow_seed(make_seed("a", 1, rebuild=rebuild_to(new)))
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        await m.on_invalidate("a", 5)
    assert m.version_of("a") == 2
    assert any(
        r.levelno == logging.WARNING and "'a'" in r.getMessage() and "5" in r.getMessage()
        for r in caplog.records
    )


async def test_rebuild_returning_same_agent_keeps_it(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer
) -> None:
    m = make_manager()
    agent = object()
    new = make_seed("a", 2, agent=agent)
    await m.shadow_seed(make_seed("a", 1, agent=agent, rebuild=rebuild_to(new)))
    await m.on_invalidate("a", 2)
    await settle()
    assert disposer.disposed == []
    await m.evict("a")
    await settle()
    assert disposer.disposed == [agent]


@pytest.mark.parametrize("pinned", [False, True])
async def test_rebuild_returning_none_evicts_and_disposes(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    pinned: bool,
) -> None:
    m = make_manager()
    removed = listen(m)
    old = make_seed("a", 1, rebuild=rebuild_to(None))
    await m.shadow_seed(old)
    if pinned:
        await m.acquire("a")
    await m.on_invalidate("a", 2)
    await settle()
    assert removed == [("a", "invalidated")]
    assert disposer.disposed == ([] if pinned else [old.agent])
    assert await m.acquire("a") is None
    assert_stats(m, rebuilds=1, rebuild_failures=0, size=0, pinned=int(pinned))
    if pinned:
        m.release("a")
        await settle()
        assert disposer.disposed == [old.agent]


@pytest.mark.parametrize("failure", ["raise", "wrong-id", "not-a-seed"])
async def test_rebuild_failure_evicts_counts_and_reraises(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    failure: str,
) -> None:
    m = make_manager()
    removed = listen(m)
    other = make_seed("b", 2)

    async def rebuild() -> Seed | None:
        if failure == "raise":
            raise ConnectionError("tool server gone")
        if failure == "wrong-id":
            return other
        return "junk"  # type: ignore[return-value]

    old = make_seed("a", 1, rebuild=rebuild)
    await m.shadow_seed(old)
    errors = {"raise": ConnectionError, "wrong-id": ValueError, "not-a-seed": TypeError}
    with pytest.raises(errors[failure]):
        await m.on_invalidate("a", 2)
    await m.wait_for_disposals()
    assert removed == [("a", "invalidated")]
    # a wrong seed's agent was made for the manager and has no other owner: disposed too
    handed_over = [other.agent] if failure == "wrong-id" else []
    assert sorted(map(id, disposer.disposed)) == sorted(map(id, [old.agent, *handed_over]))
    assert await m.acquire("a") is None
    assert "b" not in m
    assert_stats(m, invalidations=1, rebuilds=1, rebuild_failures=1, size=0)


async def test_after_failed_invalidation_stale_runtime_is_never_served(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()

    async def rebuild() -> Seed | None:
        raise RuntimeError("nope")

    await m.shadow_seed(make_seed("a", 1, rebuild=rebuild))
    with pytest.raises(RuntimeError):
        await m.on_invalidate("a", 2)
    assert await m.acquire("a") is None
    assert await m.acquire_with_agent("a") is None
    assert "a" not in m


async def test_invalidate_rejects_non_integer_version(make_manager: MakeManager) -> None:
    m = make_manager()
    with pytest.raises(TypeError):
        await m.on_invalidate("a", "2")  # type: ignore[arg-type]


# ---------------------------------------------------------------- evict


async def test_evict_removes_whatever_the_version(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed = listen(m)
    seed = make_seed("a", 9)
    await m.shadow_seed(seed)
    assert await m.evict("a") is True
    assert await m.evict("a") is False
    assert await m.evict("never") is False
    await settle()
    assert (removed, disposer.disposed) == ([("a", "explicit")], [seed.agent])
    assert_stats(m, size=0, evictions=0, removals={"explicit": 1})


async def test_evict_expired_entry_counts_as_explicit(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    removed = listen(m)
    await m.shadow_seed(make_seed("a"))
    fake_clock.advance(m.default_ttl_ms + 5)
    assert await m.evict("a") is True
    assert removed == [("a", "explicit")]
    assert_stats(m, expirations=0, size=0)


async def test_evict_pinned_defers_disposal(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    async with m.lease("a"):
        assert await m.evict("a") is True
        assert await m.acquire("a") is None
        await settle()
        assert disposer.disposed == []
        assert_stats(m, size=0, pinned=1)
    await settle()
    assert disposer.disposed == [seed.agent]


async def test_evict_all(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    for agent_id in "abc":
        await m.shadow_seed(make_seed(agent_id))
    assert await m.evict_all() == 3
    assert await m.evict_all() == 0
    assert_stats(m, size=0, removals={"explicit": 3})


# ---------------------------------------------------------------- capacity


async def test_capacity_evicts_least_recently_used_idle_entry(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's  # max_entries=3
    removed = listen(m)
    seeds = {k: make_seed(k) for k in "abcde"}
    for k in "abcd":
        await m.shadow_seed(seeds[k])
    await m.shadow_seed(seeds["e"])
    await settle()
    assert removed == [("a", "capacity"), ("b", "capacity")]
    assert disposer.disposed == [seeds["a"].agent, seeds["b"].agent]
    assert_stats(m, size=3, evictions=2)


async def test_capacity_skips_pinned_entries(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's
    for k in "abc":
        await m.shadow_seed(make_seed(k))
    await m.acquire("a")
    await m.shadow_seed(make_seed("d"))
    assert sorted(k for k in "abcd" if k in m) == ["a", "c", "d"]
    assert_stats(m, evictions=1, size=3)


@pytest.mark.parametrize("eviction", POLICY_NAMES)
@pytest.mark.parametrize("by_lease", [False, True])
async def test_every_policy_passes_over_pinned_entries_and_takes_them_after_release(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats,
    eviction: str, by_lease: bool,
) -> None:
    """Whatever the policy: a pinned entry is never the victim; once released it is a
    candidate again, and the cache holds max_entries entries throughout."""
    m = make_manager(eviction=eviction)
    for k in "abc":
        await m.shadow_seed(make_seed(k))
    lease = m.lease("a")
    if by_lease:
        await lease.__aenter__()
    else:
        await m.acquire("a")
    for k in "defg":
        await m.shadow_seed(make_seed(k))
        assert "a" in m and k in m and m.size == 3
    if by_lease:
        await lease.__aexit__(None, None, None)
    else:
        m.release("a")
    removed = listen(m)
    for i in range(10):  # "a" is not requested again, others are: sooner or later it goes
        await m.shadow_seed(make_seed(f"x{i}"))
        assert m.size == 3
        for _ in range(2):
            await m.acquire(f"x{i}")
            m.release(f"x{i}")
    assert ("a", "capacity") in removed
    assert_stats(m, evictions=14, size=3, pinned=0)


@pytest.mark.parametrize("by_lease", [False, True])
async def test_entry_skipped_by_eviction_while_pinned_is_most_recent_after_release(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, by_lease: bool
) -> None:
    """A pinned entry at the head of the recency order is passed over by eviction; its
    release makes it the most recently used, so the next eviction takes another."""
    m = make_manager(eviction="lru")  # the order under test is LRU's
    for k in "abc":
        await m.shadow_seed(make_seed(k))
    lease = m.lease("a")
    if by_lease:
        await lease.__aenter__()
    else:
        await m.acquire("a")
    await m.shadow_seed(make_seed("d"))  # "a" is least recent but pinned: "b" goes
    if by_lease:
        await lease.__aexit__(None, None, None)
    else:
        m.release("a")
    await m.shadow_seed(make_seed("e"))  # "c" is least recent now, not "a"
    assert sorted(k for k in "abcde" if k in m) == ["a", "d", "e"]
    assert_stats(m, evictions=2, size=3, pinned=0)


@pytest.mark.parametrize("eviction", POLICY_NAMES)
async def test_capacity_never_evicts_the_entry_just_installed(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
    assert_stats: AssertStats,
    eviction: str,
) -> None:
    m = make_manager(eviction=eviction)
    for k in "abc":
        await m.shadow_seed(make_seed(k))
        await m.acquire(k)
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        await m.shadow_seed(make_seed("d"))
    assert "d" in m
    assert_stats(m, size=4, evictions=0, pinned=3)
    assert any(
        r.levelno == logging.WARNING and "capacity" in r.getMessage() for r in caplog.records
    )
    m.release("b")  # shrinks back as pins are released: "b" is now the most recently used
    assert_stats(m, size=3, evictions=1, pinned=2)
    assert ("b" in m, "d" in m) == (True, False)


@pytest.mark.parametrize("eviction", POLICY_NAMES)
async def test_capacity_with_max_entries_one_keeps_the_new_entry(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats, eviction: str
) -> None:
    m = make_manager(guards=GuardConfig(max_entries=1, max_ttl_ms=1_000), eviction=eviction)
    await m.shadow_seed(make_seed("a"))
    await m.shadow_seed(make_seed("b"))
    assert ("a" in m, "b" in m) == (False, True)
    assert_stats(m, size=1, evictions=1)


async def test_capacity_applies_to_builds_and_rebuilds(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(eviction="lru")  # the order under test is LRU's
    for k in "abc":
        await m.shadow_seed(make_seed(k, rebuild=rebuild_to(make_seed(k, 2))))

    async def build(agent_id: str) -> Seed | None:
        return make_seed(agent_id)

    async with m.lease("d", build=build):
        pass
    assert ("a" in m, "d" in m) == (False, True)
    await m.on_invalidate("b", 2)  # replaces b, no growth
    assert_stats(m, size=3, evictions=1)


# ---------------------------------------------------------------- removal listener (§9)


async def test_listener_unsubscribe_and_failing_listener(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
    assert_stats: AssertStats,
) -> None:
    m = make_manager()
    seen: list[tuple[str, RemovalCause]] = []

    def broken(agent_id: str, cause: RemovalCause) -> None:
        raise ValueError("listener bug")

    unsubscribe = m.on_removal(lambda agent_id, cause: seen.append((agent_id, cause)))
    m.on_removal(broken)
    await m.shadow_seed(make_seed("a"))
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        assert await m.evict("a") is True
    assert seen == [("a", RemovalCause.EXPLICIT)]
    assert any(r.levelno == logging.WARNING and "'a'" in r.getMessage() for r in caplog.records)
    unsubscribe()
    unsubscribe()  # twice is harmless
    await m.shadow_seed(make_seed("b"))
    await m.evict("b")
    assert seen == [("a", RemovalCause.EXPLICIT)]
    assert_stats(m, size=0, removals={"explicit": 2})
