"""A traffic simulation on a real manager, in virtual time, to size the cache and the TTL.

Requests for N agents arrive as a Poisson process with Zipf popularity; each one leases
its agent (building it on a miss, single flight) and holds it for a while; configuration
changes arrive as another Poisson process and go through ``on_invalidate``. Builds, holds,
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

import asyncio
import bisect
import contextlib
import itertools
import math
import random
import selectors
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, final

from ._config import GuardConfig
from ._errors import RuntimeNotCached
from ._manager import AgentRuntimeManager
from ._policies import POLICY_NAMES
from ._seed import RuntimeSeed
from ._settings import RuntimeCacheSettings
from ._simulate_params import (
    DEFAULT_BUILD_TIMEOUT_MS,
    MAX_SPAN_S,
    PARAMETERS,
    SimulationConfigError,
    validate,
)
from ._trace import TraceRequest

WINDOW = 1_000
"""Requests of the other users, from the middle of the run on, whose hit ratio is reported
apart (``window_hit_rate``): where a burst hurts them most."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called as requests complete (about 100 times a run)."""


@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """The workload. ``max_entries`` / ``ttl_ms`` left as None use the manager's own
    resolution (``guards`` and the ``AGENT_RUNTIME_CACHE_*`` environment variables);
    ``build_timeout_ms`` None is the manager's default. ``guards`` None is the built-in
    defaults (the CLI passes the guard file's, read as ``config`` reads it).

    Every number is checked against ``PARAMETERS`` (``SimulationConfigError``, a
    ``ValueError`` naming the field), and so is the run as a whole: its span of virtual
    time and its expected invalidations are capped, so any accepted workload finishes.

    ``eviction`` None is the manager's resolution (``AGENT_RUNTIME_CACHE_EVICTION`` or the
    default policy). With ``trace``, its requests replace ``agents``, ``zipf_s`` and
    ``requests``; ``rate_per_s`` paces the requests that carry no timestamp.
    """

    agents: int = 1_000
    zipf_s: float = 1.1
    requests: int = 50_000
    rate_per_s: float = 50.0
    build_ms: float = 250.0
    hold_ms: float = 100.0
    invalidations_per_s: float = 0.2
    max_entries: int | None = None
    ttl_ms: int | None = None
    build_timeout_ms: int | None = None
    seed: int = 1
    refresh_ahead_ms: int = 0  # the manager's option (0: off)
    # Requests for agents whose every gap between requests is at most this are counted
    # apart (``hot_waited``); None: ``refresh_ahead_ms`` (0: no agent is counted apart).
    hot_window_ms: int | None = None
    stale_while_rebuilding: bool = False  # the manager's option (not a numeric parameter)
    guards: GuardConfig | None = None
    idle_ttl_ms: int | None = None
    ttl_jitter: float | None = None
    deploy: int = 0
    one_time_share: float = 0.0
    eviction: str | None = None
    trace: tuple[TraceRequest, ...] | None = None
    users: int = 1
    burst_agents: int = 0
    burst_rate_per_s: float = 50.0
    max_entries_per_user: int | None = None

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in PARAMETERS}
        if self.trace is not None:
            if not self.trace:
                raise ValueError("trace: no requests")
            values["requests"] = len(self.trace)
            stamps = [r.at_ms for r in self.trace if r.at_ms is not None]
            if stamps and (stamps[-1] - stamps[0]) / 1000 > MAX_SPAN_S:
                raise SimulationConfigError(
                    ("requests",), f"the trace spans more than {MAX_SPAN_S:,} s of time")
        validate(values)
        if self.eviction is not None and self.eviction not in POLICY_NAMES:
            raise ValueError(
                f"eviction: unknown eviction policy {self.eviction!r}; "
                f"known: {', '.join(POLICY_NAMES)}"
            )

    @property
    def request_count(self) -> int:
        return len(self.trace) if self.trace is not None else self.requests


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


@final
class _VirtualTime:
    """Virtual seconds shared by the event loop and the manager's clock."""

    __slots__ = ("now_s",)

    def __init__(self) -> None:
        self.now_s = 0.0

    def now_ms(self) -> int:
        return int(self.now_s * 1000)


@final
class _VirtualSelector(selectors.BaseSelector):
    """Never waits: a ``select(timeout)`` moves virtual time to the next timer instead.

    The simulation does no I/O; only the loop's own wake-up pipe is registered here.
    """

    def __init__(self, clock: _VirtualTime) -> None:
        self._clock = clock
        self._keys: dict[Any, selectors.SelectorKey] = {}

    def register(self, fileobj: Any, events: int, data: Any = None) -> selectors.SelectorKey:
        key = selectors.SelectorKey(fileobj, _fd(fileobj), events, data)
        self._keys[fileobj] = key
        return key

    def unregister(self, fileobj: Any) -> selectors.SelectorKey:
        return self._keys.pop(fileobj)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        if timeout is None:
            raise RuntimeError("simulation deadlock: nothing scheduled and nothing ready")
        if timeout > 0:
            self._clock.now_s += timeout
        return []

    def get_map(self) -> Mapping[Any, selectors.SelectorKey]:
        return dict(self._keys)

    def close(self) -> None:
        self._keys.clear()


def _fd(fileobj: Any) -> int:
    return fileobj if isinstance(fileobj, int) else int(fileobj.fileno())


@final
class _VirtualLoop(asyncio.SelectorEventLoop):
    """An event loop whose ``time()`` is the virtual clock."""

    def __init__(self, clock: _VirtualTime) -> None:
        super().__init__(_VirtualSelector(clock))
        self._virtual = clock

    def time(self) -> float:
        return self._virtual.now_s


@final
class _SimAgent:
    """A stand-in agent: something for the manager to dispose."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def _percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    index = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[index]


def _make_manager(
    config: SimulationConfig, clock: _VirtualTime
) -> AgentRuntimeManager[str, _SimAgent]:
    base = config.guards if config.guards is not None else GuardConfig()
    timeout_ms = config.build_timeout_ms or DEFAULT_BUILD_TIMEOUT_MS
    # None leaves each expiry option to its variable, then its default (off).
    options: dict[str, Any] = {
        "build_timeout_ms": timeout_ms,
        "idle_ttl_ms": config.idle_ttl_ms,
        "ttl_jitter": config.ttl_jitter,
        "ttl_jitter_random": random.Random(config.seed),
        "eviction": config.eviction,
        "max_entries_per_user": config.max_entries_per_user,
        "stale_while_rebuilding": config.stale_while_rebuilding,
    }
    if config.refresh_ahead_ms:
        options["refresh_ahead_ms"] = config.refresh_ahead_ms
    quota = config.max_entries_per_user
    if quota is not None and base.max_entries_per_user is not None:
        # An explicit value is what the operator wants to try: raise the guard to allow it.
        base = replace(base, max_entries_per_user=max(base.max_entries_per_user, quota))
    if config.max_entries is None and config.ttl_ms is None:
        # The embedded default: guards + environment, as `config` resolves them.
        return AgentRuntimeManager(guards=base, clock=clock, **options)
    env = RuntimeCacheSettings()
    max_entries = config.max_entries
    ttl_ms = config.ttl_ms
    # An explicit value is what the operator wants to try: raise the guard to allow it.
    guards = GuardConfig(
        max_entries=max(base.max_entries, max_entries or 0),
        max_ttl_ms=max(base.max_ttl_ms, ttl_ms or 0),
        max_entries_per_user=base.max_entries_per_user,
    )
    settings = RuntimeCacheSettings(
        max_entries=str(max_entries) if max_entries is not None else env.max_entries,
        ttl_ms=str(ttl_ms) if ttl_ms is not None else env.ttl_ms,
        ttl_seconds=env.ttl_seconds,
    )
    return AgentRuntimeManager(guards=guards, settings=settings, clock=clock, **options)


async def _run(
    config: SimulationConfig, clock: _VirtualTime, progress: ProgressCallback | None
) -> SimulationResult:
    rng = random.Random(config.seed)
    if config.trace is not None:
        agent_ids = list(dict.fromkeys(r.agent_id for r in config.trace))
    else:
        agent_ids = [f"agent-{i:05d}" for i in range(config.agents)]
    popularity = list(agent_ids)
    rng.shuffle(popularity)  # rank r is a random id
    cum_weights = list(
        itertools.accumulate(1.0 / (rank**config.zipf_s) for rank in range(1, config.agents + 1))
    )
    versions = dict.fromkeys(agent_ids, 1)
    build_s = config.build_ms / 1000
    hold_s = config.hold_ms / 1000
    builds_per_s: Counter[int] = Counter()  # second of virtual time -> builds started

    def make_seed(agent_id: str, owner: str = "user") -> RuntimeSeed[str, _SimAgent]:
        version = versions.get(agent_id, 1)  # one-time agents are never reconfigured

        async def rebuild() -> RuntimeSeed[str, _SimAgent]:
            return await build(agent_id, owner)

        return RuntimeSeed(
            agent_id=agent_id, user_id=owner, cfg_version=version,
            runtime=f"{agent_id}@v{version}", rebuild=rebuild, agent=_SimAgent(),
        )

    async def build(agent_id: str, owner: str = "user") -> RuntimeSeed[str, _SimAgent]:
        builds_per_s[int(clock.now_s)] += 1
        await asyncio.sleep(build_s)
        return make_seed(agent_id, owner)

    def build_for(owner: str | None) -> Callable[[str], Any]:
        if owner is None:
            return build

        async def owned(agent_id: str) -> RuntimeSeed[str, _SimAgent]:
            return await build(agent_id, owner)

        return owned

    manager = _make_manager(config, clock)
    latencies: list[float] = []
    arrivals: dict[str, list[tuple[float, float]]] = {}  # per agent: (arrived s, granted s)
    done = 0
    failed = 0
    denied = 0
    total = config.request_count
    step = max(1, total // 100)
    peak = 0
    returning = returning_hits = 0
    # issue 19: agent i belongs to user i % users; a burst user's requests are counted apart
    owners = {
        agent_id: f"user-{i % config.users:06d}" for i, agent_id in enumerate(agent_ids)
    } if config.users > 1 else {}
    burst_ids = [f"burst-{i:06d}" for i in range(config.burst_agents)]
    other_requests = other_hits = window_requests = window_hits = 0
    middle = config.request_count // 2
    window = range(middle, middle + WINDOW)  # request numbers
    sizes = 0

    async def request(
        agent_id: str, once: bool, user_id: str | None = None, number: int = -1
    ) -> None:
        nonlocal done, failed, denied, peak, returning, returning_hits, sizes
        nonlocal other_requests, other_hits, window_requests, window_hits
        arrived = clock.now_s
        hit = agent_id in manager  # live on arrival: the lease will hit
        burst = number < 0
        if not burst:  # the burst's requests are counted apart
            sizes += manager.size
            other_requests += 1
            other_hits += hit
            if number in window:
                window_requests += 1
                window_hits += hit
            if not once:
                returning += 1
                returning_hits += hit
        try:
            async with manager.lease(agent_id, user_id=user_id, build=build_for(user_id)):
                latencies.append((clock.now_s - arrived) * 1000)
                arrivals.setdefault(agent_id, []).append((arrived, clock.now_s))
                peak = max(peak, manager.size)
                await asyncio.sleep(hold_s)
        except TimeoutError:
            failed += 1  # the build outlived build_timeout_ms: counted in load_failures
        except RuntimeNotCached:
            denied += 1  # a trace request by a user who does not own the cached agent
        if burst:
            return
        done += 1
        if progress is not None and (done % step == 0 or done == total):
            progress(done, total)

    async def invalidations(stop: asyncio.Event) -> None:
        rate = config.invalidations_per_s
        if rate <= 0:
            return
        while True:
            try:
                await asyncio.wait_for(stop.wait(), rng.expovariate(rate))
                return
            except TimeoutError:
                pass
            agent_id = rng.choice(agent_ids)  # a configuration edit, whatever the traffic
            versions[agent_id] += 1
            # A rebuild that outlives build_timeout_ms is counted in rebuild_failures.
            with contextlib.suppress(TimeoutError):
                await manager.on_invalidate(agent_id, versions[agent_id])

    await manager.start()
    for agent_id in popularity[: config.deploy]:  # a deploy warms the cache all at once
        await manager.shadow_seed(make_seed(agent_id))
    stop = asyncio.Event()
    changes = asyncio.ensure_future(invalidations(stop))
    tasks: set[asyncio.Task[None]] = set()
    wall = time.perf_counter()
    started_s = clock.now_s
    burst_rng = random.Random(config.seed + 1)  # the main arrivals stay those of no burst

    async def burst() -> None:
        for agent_id in burst_ids:
            await asyncio.sleep(burst_rng.expovariate(config.burst_rate_per_s))
            task = asyncio.ensure_future(request(agent_id, False, "burst"))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    bursting: asyncio.Future[None] | None = None
    number = 0
    async for agent_id, user_id, once in _arrivals(config, rng, popularity, cum_weights, clock):
        if number == middle and burst_ids:
            bursting = asyncio.ensure_future(burst())
        if user_id is None and not once:
            user_id = owners.get(agent_id)
        task = asyncio.ensure_future(request(agent_id, once, user_id, number))
        number += 1
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if bursting is not None:
        await bursting
    while tasks:
        await asyncio.gather(*tasks)
    stop.set()
    await changes
    virtual_s = clock.now_s - started_s
    stats = manager.stats()
    await manager.aclose()
    disposals = manager.stats().disposals
    latencies.sort()
    hot = _hot(arrivals, config.hot_window_ms if config.hot_window_ms is not None
               else config.refresh_ahead_ms)
    peak_second, peak_builds = max(builds_per_s.items(), key=lambda kv: kv[1], default=(0, 0))
    return SimulationResult(
        config=config,
        max_entries=manager.max_entries,
        ttl_ms=manager.default_ttl_ms,
        build_timeout_ms=config.build_timeout_ms or DEFAULT_BUILD_TIMEOUT_MS,
        requests=total,
        failed_requests=failed,
        hits=stats.hits,
        misses=stats.misses,
        builds=stats.loads,
        build_failures=stats.load_failures,
        evictions=stats.evictions,
        expirations=stats.expirations,
        invalidations=stats.invalidations,
        rebuilds=stats.rebuilds,
        rebuild_failures=stats.rebuild_failures,
        disposals=disposals,
        peak_size=peak,
        p50_ms=_percentile(latencies, 0.50),
        p99_ms=_percentile(latencies, 0.99),
        max_ms=latencies[-1] if latencies else 0.0,
        virtual_s=virtual_s,
        wall_s=time.perf_counter() - wall,
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
        returning_requests=returning,
        returning_hits=returning_hits,
        mean_size=sizes / max(total, 1),
        quota_evictions=stats.quota_evictions,
        max_entries_per_user=manager.max_entries_per_user,
        other_requests=other_requests,
        other_hits=other_hits,
        window_requests=window_requests,
        window_hits=window_hits,
        denied=denied,
        eviction=manager.eviction,
    )


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


async def _arrivals(
    config: SimulationConfig, rng: random.Random, popularity: list[str],
    cum_weights: list[float], clock: _VirtualTime,
) -> AsyncIterator[tuple[str, str | None, bool]]:
    """Each request when it arrives, as (agent id, user id, one-time agent?): Zipf draws
    (and one-time agents, ``one_time_share`` of them) at the Poisson rate, or the trace's
    lines (at their timestamps, relative to the first one; at the Poisson rate without one)."""
    if config.trace is None:
        one_time = itertools.count()
        for _ in range(config.requests):
            await asyncio.sleep(rng.expovariate(config.rate_per_s))
            if config.one_time_share and rng.random() < config.one_time_share:
                yield f"once-{next(one_time):07d}", None, True
                continue
            rank = bisect.bisect_left(cum_weights, rng.random() * cum_weights[-1])
            yield popularity[min(rank, config.agents - 1)], None, False
        return
    origin_s = clock.now_s
    first_ms: int | None = None
    for request in config.trace:
        if request.at_ms is None:
            await asyncio.sleep(rng.expovariate(config.rate_per_s))
        elif first_ms is None:
            first_ms, origin_s = request.at_ms, clock.now_s
        else:
            wait_s = origin_s + (request.at_ms - first_ms) / 1000 - clock.now_s
            if wait_s > 0:
                await asyncio.sleep(wait_s)
        yield request.agent_id, request.user_id, False


def simulate(
    config: SimulationConfig | None = None, progress: ProgressCallback | None = None
) -> SimulationResult:
    """Run the workload on its own virtual-time event loop; nothing is printed."""
    config = config if config is not None else SimulationConfig()
    clock = _VirtualTime()
    loop = _VirtualLoop(clock)
    try:
        return loop.run_until_complete(_run(config, clock, progress))
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
