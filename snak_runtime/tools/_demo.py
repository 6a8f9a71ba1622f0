"""The ``demo`` command: the quickstart scenario on the embedded cache, step by step.

One process, no Redis, no files: a miss and its build, hits, a denial, an invalidation and
its rebuild, a duplicate event, a shadow seed, an eviction and an expiry (on a simulated
clock), then the stats and what each counter counts. Redis only with ``--redis`` (issue 27:
a ``REDIS_URL`` in the environment made the demo connect, or print a traceback without the
``redis`` extra).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from .._errors import RuntimeNotCached
from .._manager import AgentRuntimeManager
from .._seed import RuntimeSeed
from .._stats import CacheStats, RemovalCause
from ..containers import RuntimeContainer
from ..invalidation import InvalidationSettings
from ..invalidation._client import require_redis
from ..testing import FakeClock

_BUILD_COST_S = 0.02


@dataclass(slots=True)
class _DemoAgent:
    """A stand-in for a live agent: something to close."""

    agent_id: str
    cfg_version: int
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class _DemoRuntime:
    agent_id: str
    cfg_version: int


class _DemoBackend:
    """The demo's "database": agent configurations with versions and owners."""

    def __init__(self) -> None:
        self.versions = {"support-bot": 1, "sales-bot": 1}
        self.owners = {"support-bot": "alice", "sales-bot": "bob"}
        self.agents: list[_DemoAgent] = []

    async def build(self, agent_id: str) -> RuntimeSeed[_DemoRuntime, _DemoAgent] | None:
        if agent_id not in self.versions:
            return None
        await asyncio.sleep(_BUILD_COST_S)  # the visible cost of building a runtime
        version = self.versions[agent_id]
        agent = _DemoAgent(agent_id, version)
        self.agents.append(agent)

        async def rebuild() -> RuntimeSeed[_DemoRuntime, _DemoAgent] | None:
            return await self.build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id,
            user_id=self.owners[agent_id],
            cfg_version=version,
            runtime=_DemoRuntime(agent_id, version),
            rebuild=rebuild,
            agent=agent,
        )


_COUNTER_NOTES = (
    "which counter counts what:",
    "  removals   every entry that left the cache, by cause: explicit = evict(),",
    "             invalidated = replaced by a rebuild, expired = TTL, idle = unused for",
    "             the idle TTL; also "
    + ", ".join(c for c in RemovalCause if c not in ("explicit", "invalidated", "expired", "idle")),
    "  evictions  capacity removals only (more than max_entries cached): {evictions} here;",
    "             evict() is counted in removals as explicit, never in evictions",
    "  loads      builds a lease ran on a miss; rebuilds: those on_invalidate() ran",
    "  disposals  agents closed, each once, after its last pin (also at shutdown)",
)


def _elapsed_ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.2f} ms"


def _stats_table(stats: CacheStats) -> list[str]:
    rows: list[tuple[str, str]] = []
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.name == "removals":
            text = ", ".join(f"{cause}={n}" for cause, n in value.items() if n) or "-"
        elif not isinstance(value, int | float):
            continue  # histograms and other structured fields: see the metrics exporters
        elif isinstance(value, float):
            text = f"{value:.1f}"
        else:
            text = str(value)
        rows.append((field.name, text))
    rows.append(("hit_rate", f"{stats.hit_rate:.2f}"))
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {text}" for name, text in rows]


async def _resources(pending: Awaitable[None] | None) -> None:
    """``init_resources()``/``shutdown_resources()`` return an awaitable for async resources."""
    if pending is not None:
        await pending


Manager = AgentRuntimeManager[_DemoRuntime, _DemoAgent]
Step = Callable[[str, str], None]


async def _read_steps(manager: Manager, backend: _DemoBackend, step: Step) -> None:
    """A miss, a lease that builds, two hits, another user's lease denied."""
    started = time.perf_counter()
    found = await manager.acquire("support-bot")
    step("acquire support-bot", f"{'hit' if found else 'miss'} ({_elapsed_ms(started)})")

    started = time.perf_counter()
    async with manager.lease("support-bot", user_id="alice", build=backend.build) as lease:
        step(
            "lease support-bot as alice",
            f"miss, built v{lease.cfg_version} ({_elapsed_ms(started)})",
        )
    for _ in range(2):
        started = time.perf_counter()
        async with manager.lease("support-bot", user_id="alice") as lease:
            step(
                "lease support-bot as alice",
                f"hit v{lease.cfg_version} ({_elapsed_ms(started)})",
            )

    try:
        async with manager.lease("support-bot", user_id="mallory"):
            pass
    except RuntimeNotCached:
        step("lease support-bot as mallory", "denied (not yours; existence not revealed)")


async def _write_steps(manager: Manager, backend: _DemoBackend, step: Step) -> None:
    """An invalidation and its rebuild, a duplicate event, a shadow seed, an eviction."""
    backend.versions["support-bot"] = 2
    started = time.perf_counter()
    await manager.on_invalidate("support-bot", 2)
    version = manager.version_of("support-bot")
    step("invalidate support-bot (v2)", f"rebuilt v{version} ({_elapsed_ms(started)})")
    await manager.on_invalidate("support-bot", 2)
    step("invalidate support-bot (v2)", "duplicate event ignored, no rebuild")

    seed = await backend.build("sales-bot")
    if seed is not None:
        await manager.shadow_seed(seed)
        step("shadow_seed sales-bot (v1)", f"cached, size={manager.size}")
    removed = await manager.evict("sales-bot")
    step(
        "evict sales-bot",
        f"{'removed' if removed else 'absent'}, size={manager.size}"
        " (cause explicit: in removals, not in evictions)",
    )


async def _demo(say: Callable[[str], None], *, redis: bool = False) -> CacheStats:
    def step(action: str, outcome: str) -> None:
        say(f"  {action:<30} -> {outcome}")

    container = RuntimeContainer()
    if not redis:  # REDIS_* in the environment is not a request to connect: --redis is
        container.invalidation_settings.override(InvalidationSettings.model_construct())
    clock = FakeClock()
    # Simulated time lets the demo show an expiry without waiting for the TTL.
    container.clock.override(clock)
    backend = _DemoBackend()
    await _resources(container.init_resources())
    manager: Manager = container.manager()
    try:
        limits = manager.limits
        subscriber = await container.invalidation()
        if subscriber is None:
            say("snak_runtime demo: the embedded cache (one process, no Redis, no files)")
        else:
            where = subscriber.endpoint.describe()
            state = "listening" if subscriber.connected else "not connected yet"
            say(f"snak_runtime demo: the embedded cache; invalidations from {where} ({state})")
        say(f"limits: max_entries={limits.max_entries} from {limits.max_entries_source}")
        say(f"        default_ttl_ms={limits.default_ttl_ms} from {limits.default_ttl_source}")

        await _read_steps(manager, backend, step)
        await _write_steps(manager, backend, step)
        clock.advance(manager.default_ttl_ms)
        say(f"  (simulated clock moves {manager.default_ttl_ms} ms, the default TTL)")
        found = await manager.acquire("support-bot")
        step("acquire support-bot", "hit" if found else "miss: expired, removed")
        if found is not None:
            manager.release("support-bot")
    finally:
        await _resources(container.shutdown_resources())
    closed = sum(agent.closed for agent in backend.agents)
    step("shutdown", f"{closed} of {len(backend.agents)} agents disposed")
    stats = manager.stats()
    say("stats:")
    for line in _stats_table(stats):
        say(line)
    for line in _COUNTER_NOTES:
        say(line.format(evictions=stats.evictions))
    return stats


def demo_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--redis", action="store_true",
        help="also subscribe to the Redis invalidation channel of REDIS_URL (or REDIS_HOST, "
        "...); needs the redis extra. Without it the demo never connects",
    )


def run_demo(args: argparse.Namespace) -> int:
    """``snak-runtime demo``: print the scenario as it runs (exit 0; 2 for a bad --redis)."""
    redis = bool(getattr(args, "redis", False))
    if redis:
        problem = _redis_problem()
        if problem is not None:
            print(f"snak-runtime demo: error: {problem}", file=sys.stderr)
            return 2
    asyncio.run(_demo(print, redis=redis))
    return 0


def _redis_problem() -> str | None:
    """Why ``--redis`` cannot run, in one line; None when it can."""
    try:
        require_redis()
    except ImportError:
        return "--redis needs the redis package: pip install 'snak-runtime[redis]'"
    if not InvalidationSettings().configured:
        return "--redis needs REDIS_URL (or REDIS_HOST/REDIS_PORT/REDIS_SENTINELS) set"
    return None
