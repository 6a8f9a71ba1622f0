"""Expiry: TTL resolution on the manager side, expire-after-write, removal of expired entries,
the sweeper and the cost bound (CONTRACT §2 manager side, §7)."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime._policies import POLICY_NAMES
from snak_runtime.testing import FakeClock, RecordingDisposer, replace_maps
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, removal_event, settle

Probe = Callable[[Manager, str], Awaitable[bool]]

GUARD_TTL = 1_000  # the conftest guards' max_ttl_ms


async def probe_acquire(m: Manager, agent_id: str) -> bool:
    got = await m.acquire(agent_id)
    if got is not None:
        m.release(agent_id)
    return got is not None


async def probe_with_agent(m: Manager, agent_id: str) -> bool:
    got = await m.acquire_with_agent(agent_id)
    if got is not None:
        m.release(agent_id)
    return got is not None


async def probe_lease(m: Manager, agent_id: str) -> bool:
    try:
        async with m.lease(agent_id):
            return True
    except LookupError:
        return False


async def probe_contains(m: Manager, agent_id: str) -> bool:
    return agent_id in m


async def probe_version(m: Manager, agent_id: str) -> bool:
    return m.version_of(agent_id) is not None


PROBES: dict[str, Probe] = {
    "acquire": probe_acquire,
    "acquire_with_agent": probe_with_agent,
    "lease": probe_lease,
    "contains": probe_contains,
    "version_of": probe_version,
}


# ---------------------------------------------------------------- resolution (§2, manager side)


def test_limits_default_to_the_guard(make_manager: MakeManager) -> None:
    m = make_manager(guards=GuardConfig(max_entries=7, max_ttl_ms=4_000))
    assert (m.max_entries, m.default_ttl_ms) == (7, 4_000)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AGENT_RUNTIME_CACHE_MAX_ENTRIES": "5"}, (5, 4_000)),
        ({"AGENT_RUNTIME_CACHE_MAX_ENTRIES": "50"}, (7, 4_000)),
        ({"AGENT_RUNTIME_CACHE_TTL_MS": "1500"}, (7, 1_500)),
        ({"AGENT_RUNTIME_CACHE_TTL_SECONDS": "2"}, (7, 2_000)),
        ({"AGENT_RUNTIME_CACHE_TTL_MS": "700", "AGENT_RUNTIME_CACHE_TTL_SECONDS": "2"},
         (7, 700)),
        ({"AGENT_RUNTIME_CACHE_TTL_MS": "9000"}, (7, 4_000)),
        ({"AGENT_RUNTIME_CACHE_TTL_MS": "0"}, (7, 4_000)),
        ({"AGENT_RUNTIME_CACHE_TTL_SECONDS": "0"}, (7, 4_000)),
        ({"AGENT_RUNTIME_CACHE_TTL_MS": "abc"}, (7, 4_000)),
    ],
)
def test_manager_reads_the_environment_when_settings_is_none(
    make_manager: MakeManager,
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str],
    expected: tuple[int, int],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    m = make_manager(guards=GuardConfig(max_entries=7, max_ttl_ms=4_000), settings=None)
    assert (m.max_entries, m.default_ttl_ms) == expected


def test_explicit_settings_win_over_the_environment(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_MS", "100")
    m = make_manager(settings=RuntimeCacheSettings(ttl_ms="300"))
    assert m.default_ttl_ms == 300


async def test_ttl_zero_resolves_to_the_guard_ceiling(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        m = make_manager(settings=RuntimeCacheSettings(ttl_ms="0"))
    assert m.default_ttl_ms == GUARD_TTL
    assert any("AGENT_RUNTIME_CACHE_TTL_MS" in r.getMessage() for r in caplog.records)
    await m.shadow_seed(make_seed("a"))
    fake_clock.advance(GUARD_TTL)
    assert "a" not in m  # 0 does not mean "never expire"


@pytest.mark.parametrize(
    ("seed_ttl", "effective", "warns"),
    [
        (None, 500, False),
        (1, 1, False),
        (200, 200, False),
        (GUARD_TTL, GUARD_TTL, False),
        (GUARD_TTL + 1, GUARD_TTL, True),
        (10**9, GUARD_TTL, True),
        (0, GUARD_TTL, True),
        (-5, GUARD_TTL, True),
    ],
)
async def test_per_seed_ttl_is_capped_by_the_guard(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    seed_ttl: int | None,
    effective: int,
    warns: bool,
) -> None:
    m = make_manager(settings=RuntimeCacheSettings(ttl_ms="500"))
    assert m.default_ttl_ms == 500
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        await m.shadow_seed(make_seed("a", ttl_ms=seed_ttl))
    assert any("'a'" in r.getMessage() for r in caplog.records) is warns
    fake_clock.advance(effective - 1)
    assert "a" in m
    fake_clock.advance(1)
    assert "a" not in m


# ---------------------------------------------------------------- expire-after-write (§7)


@pytest.mark.parametrize("probe", PROBES)
async def test_expires_exactly_ttl_after_install(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock, probe: str
) -> None:
    fake_clock.set(12_345)
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    fake_clock.advance(GUARD_TTL - 1)
    assert await PROBES[probe](m, "a") is True
    fake_clock.advance(1)
    assert await PROBES[probe](m, "a") is False


async def test_reads_do_not_extend_expiry(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    for _ in range(9):
        fake_clock.advance(GUARD_TTL // 10)
        for probe in PROBES.values():
            assert await probe(m, "a")
    fake_clock.advance(GUARD_TTL // 10)
    assert not await probe_acquire(m, "a")


@pytest.mark.parametrize("how", ["refresh", "newer", "rebuild"])
async def test_install_or_refresh_restarts_expiry(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock, how: str
) -> None:
    m = make_manager()
    v2 = make_seed("a", 2)

    async def rebuild() -> RuntimeSeed[str, object] | None:
        return v2

    await m.shadow_seed(make_seed("a", 1, rebuild=rebuild))
    fake_clock.advance(GUARD_TTL - 1)
    if how == "refresh":
        await m.shadow_seed(make_seed("a", 1))
    elif how == "newer":
        await m.shadow_seed(v2)
    else:
        await m.on_invalidate("a", 2)
    fake_clock.advance(GUARD_TTL - 1)
    assert await probe_acquire(m, "a")
    fake_clock.advance(1)
    assert not await probe_acquire(m, "a")


async def test_lease_build_ttl_starts_at_install(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        fake_clock.advance(300)  # a slow build: the entry's life starts when installed
        return make_seed(agent_id, ttl_ms=500)

    async with m.lease("a", build=build):
        pass
    fake_clock.advance(499)
    assert "a" in m
    fake_clock.advance(1)
    assert "a" not in m


@pytest.mark.parametrize("touch", ["acquire", "acquire_with_agent", "lease", "on_invalidate",
                                   "shadow_seed-same-id"])
async def test_expired_idle_entry_is_removed_and_disposed_when_touched(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    touch: str,
) -> None:
    m = make_manager()
    seed = make_seed("a")
    await m.shadow_seed(seed)
    fake_clock.advance(GUARD_TTL)
    if touch == "on_invalidate":
        await m.on_invalidate("a", 2)
    elif touch == "shadow_seed-same-id":
        await m.shadow_seed(make_seed("a"))
    else:
        assert not await PROBES[touch](m, "a")
    await settle()
    assert disposer.disposed == [seed.agent]
    assert_stats(m, expirations=1, disposals=1, pinned=0)


@pytest.mark.parametrize("holder", ["acquire", "lease"])
async def test_pinned_expired_entry_is_never_returned_and_leaves_at_last_release(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
    holder: str,
) -> None:
    m = make_manager()
    removed: list[tuple[str, str]] = []
    m.on_removal(lambda agent_id, cause: removed.append((agent_id, str(cause))))
    seed = make_seed("a")
    await m.shadow_seed(seed)
    release = asyncio.Event()
    inside = asyncio.Event()

    async def hold() -> None:
        if holder == "acquire":
            await m.acquire("a")
            await m.acquire("a")
            inside.set()
            await release.wait()
            m.release("a")
            m.release("a")
        else:
            async with m.lease("a"), m.lease("a"):
                inside.set()
                await release.wait()

    task = asyncio.create_task(hold())
    await inside.wait()
    fake_clock.advance(GUARD_TTL)
    for probe in PROBES.values():
        assert not await probe(m, "a")
    await settle()
    assert (removed, disposer.disposed) == ([], [])
    assert_stats(m, size=1, pinned=2, expirations=0)
    release.set()
    await task
    await settle()
    assert removed == [("a", "expired")]
    assert disposer.disposed == [seed.agent]
    assert_stats(m, size=0, pinned=0, expirations=1)


# ---------------------------------------------------------------- sweeper


async def test_sweeper_disposes_expired_idle_entries_without_traffic(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager(sweep_interval_ms=10, guards=GuardConfig(max_entries=10, max_ttl_ms=1_000))
    short, pinned, long = (make_seed("short", ttl_ms=100), make_seed("pinned", ttl_ms=100),
                           make_seed("long"))
    for seed in (short, pinned, long):
        await m.shadow_seed(seed)
    await m.acquire("pinned")
    await m.start()
    swept = removal_event(m, 1)
    fake_clock.advance(100)
    async with asyncio.timeout(60):
        await swept.wait()  # m.size == 2
    await settle()
    assert disposer.disposed == [short.agent]
    assert ("pinned" in m, "long" in m) == (False, True)
    assert_stats(m, expirations=1, size=2, disposals=1)
    m.release("pinned")
    await settle()
    assert disposer.disposed == [short.agent, pinned.agent]


async def test_no_sweeping_before_start(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager(sweep_interval_ms=5)
    await m.shadow_seed(make_seed("a"))
    # A started twin on the same clock: once its sweeper has run, this one's would have too.
    twin = make_manager(sweep_interval_ms=5)
    await twin.shadow_seed(make_seed("a"))
    await twin.start()
    swept = removal_event(twin, 1)
    fake_clock.advance(GUARD_TTL)
    async with asyncio.timeout(60):
        await swept.wait()
    assert m.size == 1


async def test_sweeper_handles_a_burst_of_expiries(
    make_manager: MakeManager,
    make_seed: MakeSeed,
    fake_clock: FakeClock,
    assert_stats: AssertStats,
) -> None:
    n = 3_000
    m = make_manager(sweep_interval_ms=10, guards=GuardConfig(max_entries=n, max_ttl_ms=1_000))
    for i in range(n):
        await m.shadow_seed(make_seed(f"k{i}", agent=None))
    await m.start()
    swept = removal_event(m, n)
    fake_clock.advance(GUARD_TTL)
    async with asyncio.timeout(60):
        await swept.wait()  # m.size == 0
    assert_stats(m, size=0, expirations=n)


def _sweepers() -> set[asyncio.Task[Any]]:
    return {t for t in asyncio.all_tasks() if "_sweep_forever" in repr(t.get_coro())}


async def test_start_twice_is_a_noop_and_aclose_stops_the_sweeper(
    make_manager: MakeManager,
) -> None:
    m = make_manager(sweep_interval_ms=10)
    await m.start()
    first = _sweepers()
    await m.start()
    assert len(first) == 1 and _sweepers() == first
    await m.aclose()
    assert _sweepers() == set()
    assert all(t.done() for t in first)


# ---------------------------------------------------------------- cost (§7)


class _CountingDict(dict[str, Any]):
    """A dict that counts every element any iteration over it visits."""

    visited = 0

    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            _CountingDict.visited += 1
            yield key

    def values(self) -> Any:
        return [self[k] for k in self]

    def items(self) -> Any:
        return [(k, self[k]) for k in self]


class _CountingOrderedDict(OrderedDict[str, None]):
    def __iter__(self) -> Iterator[str]:
        for key in super().__iter__():
            _CountingDict.visited += 1
            yield key


@pytest.mark.parametrize("eviction", POLICY_NAMES)
async def test_operations_do_not_scan_the_cache(make_seed: MakeSeed, eviction: str) -> None:
    """Structural, not timed: a mix of every operation on 20 000 entries visits O(1)
    elements of the entry map (and of LRU's recency order) per operation."""
    n = 20_000
    m: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=n, max_ttl_ms=10**9),
        settings=RuntimeCacheSettings(),
        clock=FakeClock(),
        disposer=RecordingDisposer(),
        eviction=eviction,
    )
    replace_maps(m, _CountingDict(), _CountingOrderedDict() if eviction == "lru" else None)
    for i in range(n):
        await m.shadow_seed(make_seed(f"k{i}", agent=None, ttl_ms=10**9 - i))

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        return make_seed(agent_id, agent=None)

    _CountingDict.visited = 0
    rounds = 300
    for i in range(rounds):
        key = f"k{i}"
        if await m.acquire(key) is not None:
            m.release(key)
        async with m.lease(key, build=build):  # rebuilt when capacity evicted it
            pass
        await m.on_invalidate(key, 1)  # not newer: no-op
        await m.shadow_seed(make_seed(f"new{i}", agent=None))  # evicts the LRU entry
        await m.evict(f"new{i}")
        _ = key in m, m.size, m.stats()
    # a scan would visit ~20 000 elements per operation; O(1) visits a handful
    assert _CountingDict.visited <= rounds * 8, _CountingDict.visited
    await m.aclose(grace_ms=1)
