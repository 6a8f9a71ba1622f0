"""A traffic simulation on a real manager, in virtual time, to size the cache and the TTL.

Requests for N agents arrive as a Poisson process with Zipf popularity; each one leases
its agent (building it on a miss, single flight) and holds it for a while; configuration
changes arrive as another Poisson process and go through ``on_invalidate`` (the traffic:
``_simulate_run.py``; the workload's parameters: ``_simulate_params.py``). Builds, holds,
arrivals, TTLs and the sweeper all run on a virtual clock: the event loop jumps straight
to its next timer instead of sleeping, and the manager's clock reads the same virtual
time. So a run of hours of traffic takes seconds, latencies are virtual milliseconds
(time spent waiting for builds; a hit costs 0), and the manager code is the real one.

Two workload shapes of issue 16: a deploy (``deploy`` agents installed together at the
start: without ``ttl_jitter`` they all expire in the same second, and the rebuilds of the
busy ones arrive as a storm; ``peak_builds_per_s`` shows it), and one-time agents (a share
of requests for ids never seen again, which hold capacity until evicted, expired or, with
``idle_ttl_ms``, idle: ``returning_hit_rate`` is the hit rate of the other requests).

``trace`` replays recorded requests instead of the Zipf workload (``_trace.py``), and
``eviction`` picks the eviction policy, so an operator compares policies and cache sizes on
their own traffic.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping

from .._options import QUOTA_ROW
from ._simulate_params import SimulationConfig as SimulationConfig
from ._simulate_params import SimulationResult as SimulationResult
from ._simulate_run import WINDOW as WINDOW
from ._simulate_run import ProgressCallback as ProgressCallback
from ._simulate_run import Tally, Traffic
from ._virtual_time import VirtualLoop, VirtualTime

__all__ = ("WINDOW", "ProgressCallback", "SimulationConfig", "SimulationResult", "simulate")


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _hot(
    arrivals: Mapping[str, list[tuple[float, float]]], window_ms: int
) -> tuple[int, int, int]:
    """(agents requested at least once per ``window_ms``, their requests that arrived after
    the agent's first build ended, how many of those waited). The requests that arrive
    while an agent's first build runs always wait for it (cold start)."""
    if window_ms <= 0:
        return 0, 0, 0
    agents = requests = waited = 0
    window_s = window_ms / 1000
    for seen in arrivals.values():
        seen = sorted(seen)
        if len(seen) < 2 or any(
            b[0] - a[0] > window_s for a, b in itertools.pairwise(seen)
        ):
            continue
        agents += 1
        warm = seen[0][1]  # the first request was granted when the first build ended
        later = [(arrived, granted) for arrived, granted in seen if arrived >= warm]
        requests += len(later)
        waited += sum(1 for arrived, granted in later if granted > arrived)
    return agents, requests, waited


def simulate(
    config: SimulationConfig | None = None, progress: ProgressCallback | None = None
) -> SimulationResult:
    """Run the workload on its own virtual-time event loop; nothing is printed."""
    config = config if config is not None else SimulationConfig()
    clock = VirtualTime()
    loop = VirtualLoop(clock)
    try:
        traffic = Traffic(config, clock, progress)
        tally = loop.run_until_complete(traffic.run())
        return _result(config, traffic, tally)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def _result(config: SimulationConfig, traffic: Traffic, tally: Tally) -> SimulationResult:
    manager, stats, latencies = traffic.manager, tally.stats, tally.latencies
    assert stats is not None  # read by Traffic.run before it closed the manager
    hot = _hot(tally.arrivals, config.hot_window)
    peak_second, peak_builds = max(
        tally.builds_per_s.items(), key=lambda kv: kv[1], default=(0, 0)
    )
    return SimulationResult(
        config=config,
        max_entries=manager.max_entries,
        ttl_ms=manager.default_ttl_ms,
        build_timeout_ms=config.timeout_ms,
        requests=config.request_count,
        failed_requests=tally.failed,
        hits=stats.hits,
        misses=stats.misses,
        builds=stats.loads,
        build_failures=stats.load_failures,
        evictions=stats.evictions,
        expirations=stats.expirations,
        invalidations=stats.invalidations,
        rebuilds=stats.rebuilds,
        rebuild_failures=stats.rebuild_failures,
        disposals=tally.disposals,
        peak_size=tally.peak,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        virtual_s=tally.virtual_s,
        wall_s=tally.wall_s,
        removals=dict(stats.removals),
        waited=sum(1 for ms in latencies if ms > 0),  # a hit costs 0 virtual ms
        refreshes=stats.refreshes,
        refresh_failures=stats.refresh_failures,
        hot_agents=hot[0],
        hot_requests=hot[1],
        hot_waited=hot[2],
        idle_ttl_ms=manager.idle_ttl_ms,
        ttl_jitter=manager.ttl_jitter,
        idle_expirations=stats.idle_expirations,
        peak_builds_per_s=peak_builds,
        peak_builds_second=peak_second,
        returning_requests=tally.returning,
        returning_hits=tally.returning_hits,
        mean_size=tally.sizes / max(config.request_count, 1),
        quota_evictions=stats.quota_evictions,
        **{QUOTA_ROW.name: getattr(manager, QUOTA_ROW.name)},
        other_requests=tally.other_requests,
        other_hits=tally.other_hits,
        window_requests=tally.window_requests,
        window_hits=tally.window_hits,
        denied=tally.denied,
        eviction=manager.eviction,
    )
