"""The ``simulate`` workload: virtual time, deterministic, consistent counts."""

from __future__ import annotations

import dataclasses

import pytest

from snak_runtime._simulate import SimulationConfig, SimulationResult, simulate

SMALL = SimulationConfig(agents=50, requests=2_000, rate_per_s=100.0, build_ms=50.0,
                         hold_ms=20.0, invalidations_per_s=2.0, max_entries=16, ttl_ms=5_000)


def test_small_run_counts_add_up() -> None:
    progress: list[tuple[int, int]] = []
    result = simulate(SMALL, lambda done, total: progress.append((done, total)))
    assert isinstance(result, SimulationResult)
    assert result.requests == 2_000
    assert result.hits + result.misses == 2_000
    assert 0 < result.hit_rate < 1
    assert 0 < result.builds <= result.misses
    assert result.evictions > 0
    assert result.expirations > 0
    assert result.invalidations > 0
    assert result.max_entries == 16
    assert result.ttl_ms == 5_000
    assert result.peak_size <= 16
    assert progress[-1] == (2_000, 2_000)
    assert [done for done, _ in progress] == sorted(done for done, _ in progress)
    # Virtual time: 2,000 requests at 100/s take about 20 s of it, and a miss waits one build.
    assert 10 < result.virtual_s < 40
    assert result.p50_ms == 0.0
    assert result.p99_ms == pytest.approx(50.0, abs=1.0)
    # Every agent that was built is disposed by the end (aclose).
    assert result.disposals == result.builds + result.rebuilds


def test_deterministic_for_a_seed() -> None:
    first = simulate(SMALL)
    second = simulate(SMALL)
    fields = ("hits", "misses", "builds", "evictions", "expirations", "invalidations", "p99_ms")
    assert [getattr(first, f) for f in fields] == [getattr(second, f) for f in fields]


def test_bigger_cache_hits_more() -> None:
    small = simulate(SMALL)
    big = simulate(dataclasses.replace(SMALL, max_entries=64))
    assert big.hit_rate > small.hit_rate
    assert big.evictions < small.evictions


def test_default_limits_come_from_the_manager(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "8")
    result = simulate(SimulationConfig(agents=20, requests=200, rate_per_s=50.0))
    assert result.max_entries == 8
    assert result.requests == 200


@pytest.mark.parametrize(
    "bad",
    [{"agents": 0}, {"requests": -1}, {"rate_per_s": 0.0}, {"build_ms": -1.0},
     {"max_entries": 0}, {"ttl_ms": True}],
)
def test_invalid_config(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SimulationConfig(**bad)  # type: ignore[arg-type]


def test_refresh_ahead_keeps_hot_agents_from_waiting() -> None:
    """Issue 15: with builds shorter than the window, no request for an agent requested at
    least once per window waits (after its cold start); without it, some do at expiry."""
    steady = SimulationConfig(agents=20, requests=6_000, rate_per_s=40.0, build_ms=100.0,
                              hold_ms=10.0, invalidations_per_s=0.0, max_entries=32,
                              ttl_ms=10_000, hot_window_ms=3_000)
    without = simulate(steady)
    with_refresh = simulate(dataclasses.replace(steady, refresh_ahead_ms=3_000))
    assert without.hot_agents == with_refresh.hot_agents > 0
    assert without.hot_waited > 0 and without.refreshes == 0
    assert with_refresh.hot_waited == 0
    assert with_refresh.refreshes > 0 and with_refresh.refresh_failures == 0
    assert with_refresh.removals["refreshed"] > 0
    assert with_refresh.waited < without.waited
    assert with_refresh.p99_ms == 0.0 < without.max_ms


def test_refresh_options_are_validated() -> None:
    with pytest.raises(ValueError, match="refresh_ahead_ms"):
        SimulationConfig(refresh_ahead_ms=-1)
    with pytest.raises(ValueError, match="hot_window_ms"):
        SimulationConfig(hot_window_ms=True)
