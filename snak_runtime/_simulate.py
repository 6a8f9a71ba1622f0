"""A traffic simulation on a real manager, in virtual time, to size the cache and the TTL.

Requests for N agents arrive as a Poisson process with Zipf popularity; each one leases
its agent (building it on a miss, single flight) and holds it for a while; configuration
changes arrive as another Poisson process and go through ``on_invalidate``. Builds, holds,
arrivals, TTLs and the sweeper all run on a virtual clock: the event loop jumps straight
to its next timer instead of sleeping, and the manager's clock reads the same virtual
time. So a run of hours of traffic takes seconds, latencies are virtual milliseconds
(time spent waiting for builds; a hit costs 0), and the manager code is the real one.
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, final

from ._config import GuardConfig
from ._manager import AgentRuntimeManager
from ._seed import RuntimeSeed
from ._settings import RuntimeCacheSettings
from ._simulate_params import DEFAULT_BUILD_TIMEOUT_MS, PARAMETERS, validate

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

    def __post_init__(self) -> None:
        validate({name: getattr(self, name) for name in PARAMETERS})


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

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return 1.0 if total == 0 else self.hits / total


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
    options: dict[str, Any] = {
        "build_timeout_ms": timeout_ms,
        "stale_while_rebuilding": config.stale_while_rebuilding,
    }
    if config.refresh_ahead_ms:
        options["refresh_ahead_ms"] = config.refresh_ahead_ms
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
    agent_ids = [f"agent-{i:05d}" for i in range(config.agents)]
    popularity = list(agent_ids)
    rng.shuffle(popularity)  # rank r is a random id
    cum_weights = list(
        itertools.accumulate(1.0 / (rank**config.zipf_s) for rank in range(1, config.agents + 1))
    )
    versions = dict.fromkeys(agent_ids, 1)
    build_s = config.build_ms / 1000
    hold_s = config.hold_ms / 1000

    async def build(agent_id: str) -> RuntimeSeed[str, _SimAgent]:
        await asyncio.sleep(build_s)
        version = versions[agent_id]

        async def rebuild() -> RuntimeSeed[str, _SimAgent]:
            return await build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id, user_id="user", cfg_version=version,
            runtime=f"{agent_id}@v{version}", rebuild=rebuild, agent=_SimAgent(),
        )

    manager = _make_manager(config, clock)
    latencies: list[float] = []
    arrivals: dict[str, list[tuple[float, float]]] = {}  # per agent: (arrived s, granted s)
    done = 0
    failed = 0
    step = max(1, config.requests // 100)
    peak = 0

    async def request(agent_id: str) -> None:
        nonlocal done, failed, peak
        arrived = clock.now_s
        try:
            async with manager.lease(agent_id, build=build):
                latencies.append((clock.now_s - arrived) * 1000)
                arrivals.setdefault(agent_id, []).append((arrived, clock.now_s))
                peak = max(peak, manager.size)
                await asyncio.sleep(hold_s)
        except TimeoutError:
            failed += 1  # the build outlived build_timeout_ms: counted in load_failures
        done += 1
        if progress is not None and (done % step == 0 or done == config.requests):
            progress(done, config.requests)

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
    stop = asyncio.Event()
    changes = asyncio.ensure_future(invalidations(stop))
    tasks: set[asyncio.Task[None]] = set()
    wall = time.perf_counter()
    started_s = clock.now_s
    for _ in range(config.requests):
        await asyncio.sleep(rng.expovariate(config.rate_per_s))
        rank = bisect.bisect_left(cum_weights, rng.random() * cum_weights[-1])
        task = asyncio.ensure_future(request(popularity[min(rank, config.agents - 1)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
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
    return SimulationResult(
        config=config,
        max_entries=manager.max_entries,
        ttl_ms=manager.default_ttl_ms,
        build_timeout_ms=config.build_timeout_ms or DEFAULT_BUILD_TIMEOUT_MS,
        requests=config.requests,
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
