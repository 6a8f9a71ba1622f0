"""The simulated traffic: arrivals, leases, configuration changes and a burst, on one manager.

Requests for N agents arrive as a Poisson process with Zipf popularity (or as a trace's
lines); each one leases its agent (building it on a miss, single flight) and holds it for a
while; configuration changes arrive as another Poisson process and go through
``on_invalidate``. Everything runs on the virtual clock (``_virtual_time``): a build or a
hold is an ``asyncio.sleep`` of virtual time. ``Traffic.run`` returns a ``Tally``: what the
manager's own stats do not count (latencies, per-agent arrivals, builds per second, ...).
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, final

from .._errors import RuntimeNotCached
from .._seed import RuntimeSeed
from .._stats import CacheStats
from ._simulate_params import SimAgent, SimulationConfig, make_manager
from ._virtual_time import VirtualTime

WINDOW = 1_000
"""Requests of the other users, from the middle of the run on, whose hit ratio is reported
apart (``window_hit_rate``): where a burst hurts them most."""

ProgressCallback = Callable[[int, int], None]
"""``progress(done, total)``: called as requests complete (about 100 times a run)."""

Seed = RuntimeSeed[str, SimAgent]


@dataclass(slots=True)
class Tally:
    """What the traffic counted beside the manager's stats (``stats``, read before close)."""

    stats: CacheStats | None = None
    disposals: int = 0  # after close: every agent built is disposed by then
    latencies: list[float] = field(default_factory=list)  # virtual ms, sorted at the end
    arrivals: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    """Per agent: (arrived s, granted s) of each granted request."""
    builds_per_s: Counter[int] = field(default_factory=Counter)  # second -> builds started
    done: int = 0
    failed: int = 0
    denied: int = 0
    peak: int = 0
    sizes: int = 0  # sum of the cache size at each arrival (for the mean)
    returning: int = 0
    returning_hits: int = 0
    other_requests: int = 0
    other_hits: int = 0
    window_requests: int = 0
    window_hits: int = 0
    virtual_s: float = 0.0
    wall_s: float = 0.0


@final
class Traffic:
    """One run's workload on its own manager; ``run()`` once, on the virtual loop."""

    def __init__(
        self, config: SimulationConfig, clock: VirtualTime, progress: ProgressCallback | None
    ) -> None:
        self._config = config
        self._clock = clock
        self._progress = progress
        self._rng = random.Random(config.seed)
        if config.trace is not None:
            self._agent_ids = list(dict.fromkeys(r.agent_id for r in config.trace))
        else:
            self._agent_ids = [f"agent-{i:05d}" for i in range(config.agents)]
        self._popularity = list(self._agent_ids)
        self._rng.shuffle(self._popularity)  # rank r is a random id
        self._cum_weights = list(itertools.accumulate(
            1.0 / (rank**config.zipf_s) for rank in range(1, config.agents + 1)
        ))
        self._versions = dict.fromkeys(self._agent_ids, 1)
        self._build_s = config.build_ms / 1000
        self._hold_s = config.hold_ms / 1000
        # issue 19: agent i belongs to user i % users; a burst user's requests count apart
        self._owners = {
            agent_id: f"user-{i % config.users:06d}" for i, agent_id in enumerate(self._agent_ids)
        } if config.users > 1 else {}
        self._burst_ids = [f"burst-{i:06d}" for i in range(config.burst_agents)]
        self._middle = config.request_count // 2
        self._window = range(self._middle, self._middle + WINDOW)  # request numbers
        self._step = max(1, config.request_count // 100)
        self._tasks: set[asyncio.Task[None]] = set()
        self.manager = make_manager(config, clock)
        self.tally = Tally()

    # ------------------------------------------------------------------------ builds

    def _seed(self, agent_id: str, owner: str = "user") -> Seed:
        version = self._versions.get(agent_id, 1)  # one-time agents are never reconfigured

        async def rebuild() -> Seed:
            return await self._build(agent_id, owner)

        return RuntimeSeed(
            agent_id=agent_id, user_id=owner, cfg_version=version,
            runtime=f"{agent_id}@v{version}", rebuild=rebuild, agent=SimAgent(),
        )

    async def _build(self, agent_id: str, owner: str = "user") -> Seed:
        self.tally.builds_per_s[int(self._clock.now_s)] += 1
        await asyncio.sleep(self._build_s)
        return self._seed(agent_id, owner)

    def _build_for(self, owner: str | None) -> Callable[[str], Any]:
        if owner is None:
            return self._build

        async def owned(agent_id: str) -> Seed:
            return await self._build(agent_id, owner)

        return owned

    # ---------------------------------------------------------------------- requests

    def _count_arrival(self, once: bool, number: int, hit: bool) -> None:
        """A request of the other users (not the burst's) arrived, finding its agent or not."""
        tally = self.tally
        tally.sizes += self.manager.size
        tally.other_requests += 1
        tally.other_hits += hit
        if number in self._window:
            tally.window_requests += 1
            tally.window_hits += hit
        if not once:
            tally.returning += 1
            tally.returning_hits += hit

    async def _request(
        self, agent_id: str, once: bool, user_id: str | None = None, number: int = -1
    ) -> None:
        tally, clock, manager = self.tally, self._clock, self.manager
        arrived = clock.now_s
        burst = number < 0  # the burst's requests are counted apart
        if not burst:
            self._count_arrival(once, number, agent_id in manager)  # live: the lease hits
        try:
            async with manager.lease(agent_id, user_id=user_id, build=self._build_for(user_id)):
                tally.latencies.append((clock.now_s - arrived) * 1000)
                tally.arrivals.setdefault(agent_id, []).append((arrived, clock.now_s))
                tally.peak = max(tally.peak, manager.size)
                await asyncio.sleep(self._hold_s)
        except TimeoutError:
            tally.failed += 1  # the build outlived its timeout: counted in load_failures
        except RuntimeNotCached:
            tally.denied += 1  # a trace request by a user who does not own the cached agent
        if burst:
            return
        tally.done += 1
        total = self._config.request_count
        if self._progress is not None and (tally.done % self._step == 0 or tally.done == total):
            self._progress(tally.done, total)

    def _spawn(self, request: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(request)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _invalidations(self, stop: asyncio.Event) -> None:
        rate = self._config.invalidations_per_s
        if rate <= 0:
            return
        while True:
            try:
                await asyncio.wait_for(stop.wait(), self._rng.expovariate(rate))
                return
            except TimeoutError:
                pass
            agent_id = self._rng.choice(self._agent_ids)  # an edit, whatever the traffic
            self._versions[agent_id] += 1
            # A rebuild that outlives its timeout is counted in rebuild_failures.
            with contextlib.suppress(TimeoutError):
                await self.manager.on_invalidate(agent_id, self._versions[agent_id])

    async def _burst(self) -> None:
        rng = random.Random(self._config.seed + 1)  # the main arrivals stay those of no burst
        for agent_id in self._burst_ids:
            await asyncio.sleep(rng.expovariate(self._config.burst_rate_per_s))
            self._spawn(self._request(agent_id, False, "burst"))

    # --------------------------------------------------------------------------- run

    async def run(self) -> Tally:
        """Deploy, send every request and change, wait for them all, close the manager."""
        config, clock, manager, tally = self._config, self._clock, self.manager, self.tally
        await manager.start()
        for agent_id in self._popularity[: config.deploy]:  # a deploy warms the cache at once
            await manager.shadow_seed(self._seed(agent_id))
        stop = asyncio.Event()
        changes = asyncio.ensure_future(self._invalidations(stop))
        wall = time.perf_counter()
        started_s = clock.now_s
        bursting: asyncio.Future[None] | None = None
        arrivals = _arrivals(config, self._rng, self._popularity, self._cum_weights, clock)
        number = 0
        async for agent_id, user_id, once in arrivals:
            if number == self._middle and self._burst_ids:
                bursting = asyncio.ensure_future(self._burst())
            if user_id is None and not once:
                user_id = self._owners.get(agent_id)
            self._spawn(self._request(agent_id, once, user_id, number))
            number += 1
        if bursting is not None:
            await bursting
        while self._tasks:
            await asyncio.gather(*self._tasks)
        stop.set()
        await changes
        tally.virtual_s = clock.now_s - started_s
        tally.stats = manager.stats()
        await manager.aclose()
        tally.disposals = manager.stats().disposals
        tally.latencies.sort()
        tally.wall_s = time.perf_counter() - wall
        return tally


async def _arrivals(
    config: SimulationConfig, rng: random.Random, popularity: list[str],
    cum_weights: list[float], clock: VirtualTime,
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
