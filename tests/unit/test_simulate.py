"""The ``simulate`` workload: virtual time, deterministic, consistent counts."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest

from snak_runtime import GuardConfig
from snak_runtime.tools._simulate import SimulationConfig, SimulationResult, simulate
from snak_runtime.tools._simulate_params import (
    MAX_SPAN_S,
    PARAMETERS,
    SimulationConfigError,
    expected_span_s,
)
from snak_runtime.tools._trace import TraceError, TraceRequest, read_trace

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


# ------------------------------------------------------------------ build timeout, guards, bounds


def test_a_build_slower_than_the_timeout_is_a_counted_failure_not_a_crash() -> None:
    config = SimulationConfig(agents=5, requests=40, rate_per_s=10.0, build_ms=31_000.0,
                              invalidations_per_s=0.0)
    result = simulate(config)
    assert result.build_timeout_ms == 30_000
    assert result.failed_requests == 40
    assert result.hits + result.misses == 40
    assert 0 < result.builds == result.build_failures <= 40
    assert result.peak_size == 0 and result.disposals == 0


def test_build_timeout_is_configurable() -> None:
    config = dataclasses.replace(SMALL, build_ms=50.0, build_timeout_ms=40)
    result = simulate(config)
    assert result.build_timeout_ms == 40
    assert result.failed_requests == 2_000
    assert result.builds == result.build_failures > 0
    ok = simulate(dataclasses.replace(SMALL, build_timeout_ms=60))
    assert (ok.failed_requests, ok.build_failures) == (0, 0)


def test_guards_are_the_ceiling_as_in_the_container(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "500")
    small = SimulationConfig(agents=20, requests=100, rate_per_s=50.0)
    assert simulate(small).max_entries == 64  # built-in guard: 500 is capped
    guarded = dataclasses.replace(small, guards=GuardConfig(max_entries=500, max_ttl_ms=9_000))
    result = simulate(guarded)
    assert (result.max_entries, result.ttl_ms) == (500, 9_000)


def test_every_numeric_field_has_one_parameter() -> None:
    numeric = {f.name for f in dataclasses.fields(SimulationConfig)
               if f.name not in ("guards", "eviction", "trace", "stale_while_rebuilding")}
    assert set(PARAMETERS) == numeric
    assert len({p.flag for p in PARAMETERS.values()}) == len(PARAMETERS)


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        ({"rate_per_s": math.inf}, "rate_per_s"),
        ({"rate_per_s": math.nan}, "rate_per_s"),
        ({"rate_per_s": 1e-300}, "rate_per_s"),
        ({"zipf_s": 1000.0}, "zipf_s"),
        ({"hold_ms": 1e300}, "hold_ms"),
        ({"build_ms": math.inf}, "build_ms"),
        ({"invalidations_per_s": -1.0}, "invalidations_per_s"),
        ({"agents": 10**9}, "agents"),
        ({"build_timeout_ms": 0}, "build_timeout_ms"),
        ({"seed": 1.5}, "seed"),
        # Each number in range, the run as a whole not: 2,000,000 s of virtual time.
        ({"requests": 1_000_000, "rate_per_s": 0.5}, "requests / rate_per_s"),
        ({"invalidations_per_s": 1_000.0}, "invalidations_per_s"),
    ],
)
def test_out_of_range_is_rejected_under_the_field_name(bad: dict[str, object], field: str) -> None:
    with pytest.raises(SimulationConfigError) as caught:
        SimulationConfig(**bad)  # type: ignore[arg-type]
    assert str(caught.value).startswith(field)


def test_cli_message_names_the_flags() -> None:
    with pytest.raises(SimulationConfigError) as caught:
        SimulationConfig(requests=1_000_000, rate_per_s=0.5)
    assert caught.value.cli_message.startswith("--requests / --rate")
    assert "604,800" in caught.value.cli_message


@pytest.mark.parametrize(
    ("flag", "text"),
    [("--rate", "inf"), ("--rate", "1e-300"), ("--zipf", "1000"), ("--hold-ms", "1e300"),
     ("--agents", "1.5"), ("--rate", "abc")],
)
def test_parameter_parse_rejects_text(flag: str, text: str) -> None:
    (parameter,) = [p for p in PARAMETERS.values() if p.flag == flag]
    with pytest.raises(ValueError, match=f"got {text}"):
        parameter.parse(text)


def test_every_accepted_extreme_is_bounded() -> None:
    """The largest span the bounds accept stays within MAX_SPAN_S of virtual time."""
    config = SimulationConfig(requests=1, rate_per_s=0.001, build_ms=86_400_000.0,
                              hold_ms=86_400_000.0, build_timeout_ms=86_400_000,
                              invalidations_per_s=0.0)
    assert expected_span_s({f: getattr(config, f) for f in PARAMETERS}) <= MAX_SPAN_S
    result = simulate(config)
    assert result.virtual_s <= MAX_SPAN_S
    assert result.failed_requests == 1  # a build as slow as its timeout fails


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
# ---------------------------------------------------------------- issue 16: deploy, one-time agents

DEPLOY = SimulationConfig(agents=100, zipf_s=0.0, requests=5_000, rate_per_s=200.0,
                          build_ms=50.0, hold_ms=10.0, invalidations_per_s=0.0,
                          max_entries=100, ttl_ms=20_000, deploy=100)


def test_a_deploy_without_jitter_rebuilds_in_a_storm_and_jitter_spreads_it() -> None:
    together = simulate(DEPLOY)
    spread = simulate(dataclasses.replace(DEPLOY, ttl_jitter=0.5))
    assert (together.ttl_jitter, spread.ttl_jitter) == (0.0, 0.5)
    # every deployed agent expires at 20 s: its next request rebuilds it within ~0.5 s
    assert together.peak_builds_second == 20
    assert together.peak_builds_per_s > 50
    assert spread.peak_builds_per_s * 3 < together.peak_builds_per_s
    assert together.expirations == 100 <= spread.expirations  # (jittered: some twice)


def test_one_time_agents_and_idle_expiry() -> None:
    # room for the one-time agents to linger: idle expiry removes them before capacity does
    config = dataclasses.replace(SMALL, one_time_share=0.3, invalidations_per_s=0.0,
                                 max_entries=200)
    plain = simulate(config)
    idle = simulate(dataclasses.replace(config, idle_ttl_ms=500))
    for r in (plain, idle):
        assert 0.6 * 2_000 < r.returning_requests < 0.8 * 2_000
        assert 0 < r.returning_hits < r.returning_requests
        assert r.returning_hit_rate == r.returning_hits / r.returning_requests
    assert (plain.idle_ttl_ms, plain.idle_expirations) == (0, 0)
    assert idle.idle_ttl_ms == 500 and idle.idle_expirations > 0
    assert idle.mean_size < plain.mean_size  # unused agents left early


@pytest.mark.parametrize(
    "bad",
    [{"deploy": 51}, {"deploy": -1}, {"one_time_share": 1.0}, {"one_time_share": -0.1},
     {"ttl_jitter": 0.6}, {"idle_ttl_ms": -1}, {"idle_ttl_ms": 1.5}],
)
def test_invalid_issue_16_options(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        dataclasses.replace(SMALL, **bad)  # type: ignore[arg-type]
# ------------------------------------------------------- policies and traces (issue 13)


def test_eviction_policy_is_chosen_per_run() -> None:
    lru = simulate(dataclasses.replace(SMALL, eviction="lru", invalidations_per_s=0.0))
    cost = simulate(dataclasses.replace(SMALL, eviction="cost-aware", invalidations_per_s=0.0))
    assert (lru.eviction, cost.eviction) == ("lru", "cost-aware")
    assert lru.hits + lru.misses == cost.hits + cost.misses == SMALL.requests
    assert cost.misses < lru.misses  # Zipf traffic: frequency beats recency


def test_unknown_eviction_policy_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="eviction: unknown eviction policy 'fifo'"):
        dataclasses.replace(SMALL, eviction="fifo")


def test_a_trace_is_replayed_at_its_timestamps() -> None:
    trace = (TraceRequest("a", "alice", 1_000), TraceRequest("b", None, 1_500),
             TraceRequest("a", "alice", 61_000), TraceRequest("a", "bob", 61_100))
    result = simulate(dataclasses.replace(SMALL, trace=trace, invalidations_per_s=0.0,
                                          max_entries=4, ttl_ms=600_000))
    assert result.requests == 4
    assert (result.hits, result.misses, result.denied) == (1, 2, 1)
    assert 60 <= result.virtual_s < 62  # the last arrival is 60.1 s after the first


def test_trace_file_lines_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("# header\n a , u1 , 5 \nb\n\nc,,7\n")
    assert read_trace(path) == (TraceRequest("a", "u1", 5), TraceRequest("b", None, None),
                                TraceRequest("c", None, 7))
    for text, message in [
        ("", "no requests"),
        ("a,u,1,2\n", "line 1: expected agent_id[,user_id[,timestamp_ms]], got 4 fields"),
        (",u\n", "line 1: empty agent_id"),
        ("a,u,-1\n", "line 1: timestamp_ms must be >= 0, got -1"),
        ("a,u,1.5\n", "line 1: timestamp_ms must be an integer, got '1.5'"),
        ("a,u,9\nb,u,3\n", "line 2: timestamp 3 goes back in time (previous 9)"),
    ]:
        path.write_text(text)
        with pytest.raises(TraceError, match=re.escape(f"{path}") + ".*" + re.escape(message)):
            read_trace(path)
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(TraceError, match="not UTF-8"):
        read_trace(path)
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.csv")


# ------------------------------------------------------------ per-user quota (issue 19)

TENANTS = dataclasses.replace(
    SMALL, agents=200, users=50, invalidations_per_s=0.0, ttl_ms=None, requests=3_000,
    eviction="lru",
)


def test_a_burst_costs_the_other_users_hits_and_the_quota_gives_them_back() -> None:
    calm = simulate(TENANTS)
    burst = simulate(dataclasses.replace(TENANTS, burst_agents=80))
    capped = simulate(dataclasses.replace(TENANTS, burst_agents=80, max_entries_per_user=4))
    assert calm.other_requests == burst.other_requests == capped.other_requests == 3_000
    assert calm.window_requests == burst.window_requests == capped.window_requests == 1_000
    assert (burst.quota_evictions, burst.max_entries_per_user) == (0, None)
    assert capped.max_entries_per_user == 4
    assert capped.quota_evictions >= 40  # most of the burst (capacity takes some first)
    assert capped.removals["quota"] == capped.quota_evictions
    assert burst.window_hit_rate < calm.window_hit_rate
    assert capped.window_hit_rate > burst.window_hit_rate
    # every agent built is disposed by the end, the burst's included
    assert capped.disposals == capped.builds + capped.rebuilds


def test_the_burst_user_is_not_counted_with_the_others() -> None:
    burst = simulate(dataclasses.replace(TENANTS, burst_agents=80))
    assert burst.hits + burst.misses == 3_000 + 80
    assert burst.other_hits <= burst.hits
