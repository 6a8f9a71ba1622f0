"""Idle expiry (``idle_ttl_ms``) and TTL jitter (``ttl_jitter``): issue 16."""

from __future__ import annotations

import asyncio
import logging
import random

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime._stats import RemovalCause
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, removal_event, settle

IDLE = 100
GUARDS = GuardConfig(max_entries=10, max_ttl_ms=1_000)


@pytest.fixture
def idle_manager(make_manager: MakeManager) -> Manager:
    return make_manager(guards=GUARDS, idle_ttl_ms=IDLE)


def removals(m: Manager) -> list[tuple[str, RemovalCause]]:
    seen: list[tuple[str, RemovalCause]] = []
    m.on_removal(lambda agent_id, cause: seen.append((agent_id, cause)))
    return seen


# ---------------------------------------------------------------- idle expiry


async def test_an_unused_entry_expires_idle_after_its_install(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
    disposer: RecordingDisposer, assert_stats: AssertStats,
) -> None:
    m = idle_manager
    seen = removals(m)
    seed = make_seed("a")
    await m.shadow_seed(seed)
    fake_clock.advance(IDLE - 1)
    assert "a" in m and m.version_of("a") == 1
    fake_clock.advance(1)
    assert "a" not in m and m.version_of("a") is None  # not live, not removed by looking
    assert m.size == 1
    assert await m.acquire("a") is None  # touched: removed as idle
    await settle()
    assert seen == [("a", RemovalCause.IDLE)]
    assert disposer.disposed == [seed.agent]
    assert_stats(m, hits=0, misses=1, size=0, expirations=0, idle_expirations=1,
                 removals={"idle": 1})


async def test_idle_time_counts_from_the_release_of_the_last_pin(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    await m.shadow_seed(make_seed("a"))
    fake_clock.advance(50)
    assert await m.acquire("a") is not None  # a hit at 50 ...
    assert await m.acquire("a") is not None
    fake_clock.advance(500)  # ... pinned far beyond the idle time: in use, never idle
    assert "a" in m
    assert await m.acquire("a") is not None  # a third pin past the idle lower bound
    m.release("a")
    m.release("a")
    fake_clock.advance(10)
    m.release("a")  # the last pin goes at 560: idle time restarts here
    fake_clock.advance(IDLE - 1)
    assert "a" in m
    fake_clock.advance(1)
    assert "a" not in m


async def test_a_lease_exit_restarts_the_idle_time(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    await m.shadow_seed(make_seed("a"))
    for _ in range(5):  # each use ends 60 ms after the last: never idle for 100
        fake_clock.advance(60)
        async with m.lease("a") as lease:
            assert lease.agent_id == "a"
    fake_clock.advance(IDLE - 1)
    async with m.lease("a"):
        fake_clock.advance(IDLE + 1)
    assert "a" in m  # released just now
    fake_clock.advance(IDLE)
    assert "a" not in m


async def test_a_pinned_entry_past_its_ttl_leaves_as_expired_at_release(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    seen = removals(m)
    await m.shadow_seed(make_seed("a"))
    assert await m.acquire("a") is not None
    fake_clock.advance(GUARDS.max_ttl_ms)
    assert "a" not in m
    m.release("a")
    assert seen == [("a", RemovalCause.EXPIRED)]


async def test_the_earlier_deadline_names_the_cause(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GUARDS, idle_ttl_ms=300)
    seen = removals(m)
    await m.shadow_seed(make_seed("idle"))  # idle at 300, TTL at 1000
    await m.shadow_seed(make_seed("ttl", ttl_ms=200))  # TTL first
    await m.shadow_seed(make_seed("tie", ttl_ms=300))  # a tie goes to the TTL
    fake_clock.advance(5_000)  # both deadlines long passed for all three
    for agent_id in ("idle", "ttl", "tie"):
        assert await m.acquire(agent_id) is None
    assert seen == [
        ("idle", RemovalCause.IDLE), ("ttl", RemovalCause.EXPIRED), ("tie", RemovalCause.EXPIRED),
    ]


async def test_writes_over_an_idle_entry_report_it_as_idle(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    seen = removals(m)
    await m.shadow_seed(make_seed("a", 1))
    await m.shadow_seed(make_seed("b", 1))
    fake_clock.advance(IDLE)
    await m.shadow_seed(make_seed("a", 1))  # same version, but the old one is gone: installed
    await m.on_invalidate("b", 2)  # idle: nothing to rebuild (the rebuild would fail the test)
    assert seen == [("a", RemovalCause.IDLE), ("b", RemovalCause.IDLE)]
    assert "a" in m and "b" not in m


async def test_a_refresh_restarts_the_idle_time(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    await m.shadow_seed(make_seed("a", 1))
    fake_clock.advance(IDLE - 1)
    await m.shadow_seed(make_seed("a", 1))  # same version, live: refreshed in place
    fake_clock.advance(IDLE - 1)
    assert "a" in m
    fake_clock.advance(1)
    assert "a" not in m


async def test_the_sweeper_removes_idle_entries_without_traffic(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    disposer: RecordingDisposer, assert_stats: AssertStats,
) -> None:
    m = make_manager(guards=GUARDS, idle_ttl_ms=IDLE, sweep_interval_ms=5)
    used, unused, pinned = make_seed("used"), make_seed("unused"), make_seed("pinned")
    for seed in (used, unused, pinned):
        await m.shadow_seed(seed)
    await m.acquire("pinned")
    fake_clock.advance(60)
    await m.acquire("used")
    m.release("used")
    await m.start()
    swept = removal_event(m, 1)
    fake_clock.advance(40)  # "unused" is idle; "used" was released 40 ms ago
    async with asyncio.timeout(60):
        await swept.wait()  # m.size == 2
    await settle()
    assert disposer.disposed == [unused.agent]
    swept = removal_event(m, 1)
    fake_clock.advance(60)  # "used" idle now; "pinned" is in use
    async with asyncio.timeout(60):
        await swept.wait()  # m.size == 1
    assert "pinned" in m
    m.release("pinned")
    assert_stats(m, idle_expirations=2, expirations=0, size=1)


async def test_idle_queue_stays_bounded_under_traffic(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    """Reuse pushes nothing: an entry's idle item is re-queued only when popped, so the
    queues hold about one item per entry however many reads there are."""
    n = 50
    m = make_manager(guards=GuardConfig(max_entries=n, max_ttl_ms=10**9), idle_ttl_ms=IDLE)
    for i in range(n):
        await m.shadow_seed(make_seed(f"k{i}"))
    for _ in range(200):
        fake_clock.advance(IDLE // 2)
        for i in range(n):
            assert await m.acquire(f"k{i}") is not None
            m.release(f"k{i}")
        internals(m).store.pop_expired(fake_clock.now_ms(), 10**6)
    assert m.size == n
    assert internals(m).queued_expiries() <= 2 * n + 64


async def test_idle_time_at_or_beyond_the_ttl_queues_nothing(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GUARDS, idle_ttl_ms=GUARDS.max_ttl_ms)
    seen = removals(m)
    await m.shadow_seed(make_seed("a"))
    assert internals(m).queued_expiries() == 1  # its TTL's FIFO item only
    fake_clock.advance(GUARDS.max_ttl_ms)
    assert await m.acquire("a") is None
    assert seen == [("a", RemovalCause.EXPIRED)]


# ---------------------------------------------------------------- idle_ttl_ms setting


def test_idle_ttl_is_off_by_default(make_manager: MakeManager) -> None:
    m = make_manager()
    assert (m.idle_ttl_ms, m.limits.idle_ttl_ms, m.limits.idle_ttl_source) == (
        0, 0, "default (off)"
    )


@pytest.mark.parametrize("bad", [-1, True, 1.5, "100"])
def test_a_bad_idle_ttl_keyword_is_a_value_error(make_manager: MakeManager, bad: object) -> None:
    with pytest.raises(ValueError, match="idle_ttl_ms"):
        make_manager(idle_ttl_ms=bad)


@pytest.mark.parametrize("raw", ["abc", "-5", "1.5", "1e3"])
def test_a_bad_idle_ttl_variable_warns_and_stays_off(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, raw: str,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_IDLE_TTL_MS", raw)
    with caplog.at_level(logging.WARNING):
        m = make_manager(settings=None)
    assert m.idle_ttl_ms == 0
    assert any(
        "AGENT_RUNTIME_CACHE_IDLE_TTL_MS" in r.getMessage() and repr(raw) in r.getMessage()
        for r in caplog.records if r.levelno == logging.WARNING
    )


def test_idle_ttl_keyword_beats_variable_and_the_guard_caps_both(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_IDLE_TTL_MS", "250")
    assert make_manager(settings=None).idle_ttl_ms == 250
    assert make_manager(settings=None, idle_ttl_ms=40).idle_ttl_ms == 40
    assert make_manager(settings=None, idle_ttl_ms=0).idle_ttl_ms == 0  # off, explicitly
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_IDLE_TTL_MS", "5000")
    with caplog.at_level(logging.WARNING):
        assert make_manager(settings=None).idle_ttl_ms == 1_000  # SMALL_MAX_TTL_MS guard
        assert make_manager(idle_ttl_ms=7_000).idle_ttl_ms == 1_000
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("AGENT_RUNTIME_CACHE_IDLE_TTL_MS=5000" in w and "capped" in w for w in warned)
    assert any("idle_ttl_ms=7000" in w and "capped" in w for w in warned)


def test_settings_model_reads_the_two_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_IDLE_TTL_MS", "1500")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_JITTER", "0.2")
    m: Manager = AgentRuntimeManager(settings=RuntimeCacheSettings(), clock=FakeClock())
    assert (m.idle_ttl_ms, m.ttl_jitter) == (1500, 0.2)
    assert m.limits.ttl_jitter_source == "AGENT_RUNTIME_CACHE_TTL_JITTER=0.2"


# ---------------------------------------------------------------- TTL jitter


@pytest.mark.parametrize("bad", [-0.01, 0.51, 1, True, "0.1", float("nan")])
def test_a_bad_jitter_keyword_is_a_value_error(make_manager: MakeManager, bad: object) -> None:
    with pytest.raises(ValueError, match="ttl_jitter"):
        make_manager(ttl_jitter=bad)


@pytest.mark.parametrize("raw", ["0.7", "-0.1", "abc", "nan", "inf"])
def test_a_bad_jitter_variable_warns_and_stays_off(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture, raw: str,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_JITTER", raw)
    with caplog.at_level(logging.WARNING):
        m = make_manager(settings=None)
    assert m.ttl_jitter == 0.0
    assert any(
        "AGENT_RUNTIME_CACHE_TTL_JITTER" in r.getMessage() and repr(raw) in r.getMessage()
        for r in caplog.records if r.levelno == logging.WARNING
    )


def test_jitter_keyword_beats_the_variable(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_JITTER", "0.3")
    assert make_manager(settings=None).ttl_jitter == 0.3
    assert make_manager(settings=None, ttl_jitter=0).ttl_jitter == 0.0
    assert make_manager(settings=None, ttl_jitter=0.5).ttl_jitter == 0.5


async def test_jitter_spreads_a_batch_deterministically_and_never_above_the_guard(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    """500 entries installed at once: their expiries spread over the last half of the TTL,
    exactly as the seeded random source says, and each leaves at its own deadline."""
    ttl, n, jitter = 1_000, 500, 0.5
    m = make_manager(
        guards=GuardConfig(max_entries=n, max_ttl_ms=ttl),
        ttl_jitter=jitter, ttl_jitter_random=random.Random(7),
    )
    seen = removals(m)
    for i in range(n):
        await m.shadow_seed(make_seed(f"k{i}"))
    replay = random.Random(7)
    expected = {f"k{i}": ttl - int(ttl * jitter * replay.random()) for i in range(n)}
    assert all(ttl // 2 < at <= ttl for at in expected.values())
    assert len(set(expected.values())) > 300  # spread, not one instant
    by_time: dict[int, set[str]] = {}
    for agent_id, at in expected.items():
        by_time.setdefault(at, set()).add(agent_id)
    removed: set[str] = set()
    for at in sorted(by_time):
        fake_clock.set(at - 1)
        assert internals(m).store.pop_expired(fake_clock.now_ms(), 10**6) >= 0
        assert {a for a, _ in seen} == removed  # nothing leaves early
        fake_clock.set(at)
        internals(m).store.pop_expired(fake_clock.now_ms(), 10**6)
        removed |= by_time[at]
        assert {a for a, _ in seen} == removed  # exactly these leave now
    assert all(cause is RemovalCause.EXPIRED for _, cause in seen)


async def test_without_jitter_a_batch_expires_together(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GuardConfig(max_entries=20, max_ttl_ms=1_000))
    for i in range(20):
        await m.shadow_seed(make_seed(f"k{i}"))
    fake_clock.advance(999)
    assert m.size == 20 and all(f"k{i}" in m for i in range(20))
    fake_clock.advance(1)
    assert not any(f"k{i}" in m for i in range(20))


async def test_jitter_shortens_a_seed_of_its_own_ttl_too(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GUARDS, ttl_jitter=0.5, ttl_jitter_random=random.Random(3))
    await m.shadow_seed(make_seed("a", ttl_ms=400))
    await m.shadow_seed(make_seed("guard", ttl_ms=5_000))  # resolved to the guard, then cut
    replay = random.Random(3)
    a_at = 400 - int(400 * 0.5 * replay.random())
    guard_at = 1_000 - int(1_000 * 0.5 * replay.random())
    fake_clock.set(a_at - 1)
    assert "a" in m
    fake_clock.set(a_at)
    assert "a" not in m
    fake_clock.set(guard_at - 1)
    assert "guard" in m
    fake_clock.set(guard_at)
    assert "guard" not in m


async def test_jitter_and_idle_expiry_together(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GUARDS, idle_ttl_ms=IDLE, ttl_jitter=0.5,
                     ttl_jitter_random=random.Random(1))
    seen = removals(m)
    await m.shadow_seed(make_seed("a"))
    deadline = 1_000 - int(1_000 * 0.5 * random.Random(1).random())
    while fake_clock.now_ms() + IDLE // 2 < deadline:  # kept busy: never idle
        fake_clock.advance(IDLE // 2)
        assert await m.acquire("a") is not None
        m.release("a")
    fake_clock.set(deadline)
    assert await m.acquire("a") is None
    assert seen == [("a", RemovalCause.EXPIRED)]


async def test_a_seed_installed_by_a_load_gets_both_options(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(guards=GUARDS, idle_ttl_ms=IDLE)

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        return make_seed(agent_id)

    async with m.lease("a", build=build):
        fake_clock.advance(IDLE * 3)
    fake_clock.advance(IDLE - 1)
    assert "a" in m
    fake_clock.advance(1)
    assert "a" not in m


async def test_peek_says_when_an_entry_really_expires(
    idle_manager: Manager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = idle_manager
    await m.shadow_seed(make_seed("a"))
    fake_clock.advance(30)
    info = m.peek("a")
    assert info is not None and info.expires_in_ms == IDLE - 30
    assert await m.acquire("a") is not None
    in_use = m.peek("a")
    assert in_use is not None and in_use.expires_in_ms == GUARDS.max_ttl_ms - 30  # TTL only
    fake_clock.advance(IDLE)  # past the hot path's early bound, still in use
    still = m.peek("a")
    assert still is not None and still.expires_in_ms == GUARDS.max_ttl_ms - 130
    m.release("a")
    released = m.peek("a")
    assert released is not None and released.expires_in_ms == IDLE
    fake_clock.advance(IDLE)
    assert m.peek("a") is None and [i.agent_id for i in m.snapshot()] == []
