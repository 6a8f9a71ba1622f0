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
from dataclasses import dataclass, field

from ._simulate_params import SimulationConfig as SimulationConfig
from ._simulate_run import WINDOW as WINDOW
from ._simulate_run import ProgressCallback as ProgressCallback
from ._simulate_run import Tally, Traffic
from ._virtual_time import VirtualLoop, VirtualTime

__all__ = ("WINDOW", "ProgressCallback", "SimulationConfig", "SimulationResult", "simulate")


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What happened. Latencies are virtual milliseconds from a request's arrival to its
    lease being granted; ``wall_s`` is how long the simulation took to run. A request whose
    build failed (slower than ``build_timeout_ms``) is counted in ``failed_requests`` and
    has no latency; the build in ``build_failures``."""

    config: SimulationConfig
    max_entries: int
    ttl_ms: int
    build_timeout_ms: int
    requests: int
    failed_requests: int
    hits: int
    misses: int
    builds: int
    build_failures: int
    evictions: int
    expirations: int
    invalidations: int
    rebuilds: int
    rebuild_failures: int
    disposals: int
    peak_size: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    virtual_s: float
    wall_s: float
    removals: Mapping[str, int] = field(default_factory=dict)
    waited: int = 0  # requests whose lease waited for a build (latency above 0)
    refreshes: int = 0
    refresh_failures: int = 0
    # agents requested at least once in every ``hot_window_ms`` (each gap between two of
    # their requests at most that), their requests after the first build (cold start)
    # ended, and how many of those waited for a build
    hot_agents: int = 0
    hot_requests: int = 0
    hot_waited: int = 0
    idle_ttl_ms: int = 0
    ttl_jitter: float = 0.0
    idle_expirations: int = 0
    peak_builds_per_s: int = 0
    """The most build calls (loads and rebuilds) that started in one second of virtual time."""
    peak_builds_second: int = 0
    returning_requests: int = 0
    """Requests for the ``agents`` ids (not one-time agents)."""
    returning_hits: int = 0
    """Returning requests that found their agent live on arrival."""
    mean_size: float = 0.0
    """Entries in the cache, averaged over request arrivals (what the cache holds open)."""
    denied: int = 0  # trace requests by a user who does not own the cached agent
    eviction: str = ""  # the policy the manager used
    quota_evictions: int = 0
    max_entries_per_user: int | None = None
    other_requests: int = 0
    """Requests of the users other than the burst's (issue 19: ``users``, ``burst_agents``)."""
    other_hits: int = 0
    """Of those, the ones that found their agent live on arrival."""
    window_requests: int = 0
    """The ``WINDOW`` other users' requests from the middle of the run on."""
    window_hits: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return 1.0 if total == 0 else self.hits / total

    @property
    def other_hit_rate(self) -> float:
        """The hit ratio of every user but the burst's."""
        return 1.0 if not self.other_requests else self.other_hits / self.other_requests

    @property
    def window_hit_rate(self) -> float:
        """The other users' hit ratio over the ``WINDOW`` requests from the middle of the
        run on (where a burst starts): the same requests in runs with and without one."""
        return 1.0 if not self.window_requests else self.window_hits / self.window_requests

    @property
    def returning_hit_rate(self) -> float:
        n = self.returning_requests
        return 1.0 if n == 0 else self.returning_hits / n


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
        max_entries_per_user=manager.max_entries_per_user,
        other_requests=tally.other_requests,
        other_hits=tally.other_hits,
        window_requests=tally.window_requests,
        window_hits=tally.window_hits,
        denied=tally.denied,
        eviction=manager.eviction,
    )
