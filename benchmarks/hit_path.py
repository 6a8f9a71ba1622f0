"""Hit path and install at capacity: the manager against its Python peers, size by size.

At each size every system holds the same keys and reads the same precomputed key
sequence; systems take turns within each round (A B C ... A B C ...), so drifting
machine noise hits them all alike, and the median of the rounds is reported.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import cachetools
from aiocache import SimpleMemoryCache
from async_lru import alru_cache
from common import (
    DISTS,
    LONG_TTL_MS,
    SIZES,
    ProgressFn,
    Series,
    Settings,
    agent_keys,
    key_sequence,
    make_manager,
    make_seed,
    settle,
    timed,
    unsettle,
)
from prometheus_client import CollectorRegistry

from snak_runtime.metrics.prometheus import register

Run = Callable[[list[str]], Awaitable[None]]

# Display names, in table order. The first three are the manager.
ACQUIRE = "acquire+release"
ACQUIRE_AGENT = "acquire_with_agent+release"
LEASE = "async with lease"
LEASE_METRICS = "async with lease, Prometheus collector registered"
TTL_LOCK = "TTLCache.get + asyncio.Lock"
LRU = "LRUCache.get"
ALRU = "async_lru hit"
AIOCACHE = "aiocache SimpleMemoryCache.get"
FLOOR = "floor: awaited dict lookup"
DICT = "dict lookup (sync)"
HIT_SYSTEMS = (
    ACQUIRE, ACQUIRE_AGENT, LEASE, LEASE_METRICS, TTL_LOCK, LRU, ALRU, AIOCACHE, FLOOR, DICT,
)
MANAGER_HIT = (ACQUIRE, ACQUIRE_AGENT, LEASE)

INSTALL = "shadow_seed (new id, 1 LRU eviction)"
TTL_SET = "TTLCache[k] = v + asyncio.Lock"
LRU_SET = "LRUCache[k] = v"
INSTALL_SYSTEMS = (INSTALL, TTL_SET, LRU_SET)


class _Runtime:
    """A cached value: one small object per key (the same objects for every system)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


async def _hit_systems(keys: list[str], values: dict[str, _Runtime]) -> dict[str, Run]:
    n = len(keys)
    manager = make_manager(n)
    observed = make_manager(n)  # the same, with an exporter registered (issue 6)
    register(observed, registry=CollectorRegistry(), cache="bench")
    for key in keys:
        await manager.shadow_seed(make_seed(key, values[key]))
        await observed.shadow_seed(make_seed(key, values[key]))

    ttl: cachetools.TTLCache[str, _Runtime] = cachetools.TTLCache(n, LONG_TTL_MS / 1000)
    lru: cachetools.LRUCache[str, _Runtime] = cachetools.LRUCache(n)
    plain: dict[str, _Runtime] = {}
    for key in keys:
        ttl[key] = lru[key] = plain[key] = values[key]
    lock = asyncio.Lock()

    @alru_cache(maxsize=n)
    async def alru_load(key: str) -> _Runtime:
        return values[key]

    for key in keys:
        await alru_load(key)

    aio = SimpleMemoryCache()
    await aio.multi_set([(key, values[key]) for key in keys])

    async def floor_get(key: str) -> _Runtime | None:
        return plain.get(key)

    async def run_acquire(seq: list[str]) -> None:
        acquire, release = manager.acquire, manager.release
        for key in seq:
            await acquire(key)
            release(key)

    async def run_acquire_agent(seq: list[str]) -> None:
        acquire, release = manager.acquire_with_agent, manager.release
        for key in seq:
            await acquire(key)
            release(key)

    async def run_lease(seq: list[str]) -> None:
        lease = manager.lease
        for key in seq:
            async with lease(key):
                pass

    async def run_lease_observed(seq: list[str]) -> None:
        lease = observed.lease
        for key in seq:
            async with lease(key):
                pass

    async def run_ttl(seq: list[str]) -> None:
        get = ttl.get
        for key in seq:
            async with lock:
                get(key)

    async def run_lru(seq: list[str]) -> None:
        get = lru.get
        for key in seq:
            get(key)

    async def run_alru(seq: list[str]) -> None:
        for key in seq:
            await alru_load(key)

    async def run_aio(seq: list[str]) -> None:
        get = aio.get
        for key in seq:
            await get(key)

    async def run_floor(seq: list[str]) -> None:
        for key in seq:
            await floor_get(key)

    async def run_dict(seq: list[str]) -> None:
        get = plain.get
        for key in seq:
            get(key)

    return {
        ACQUIRE: run_acquire, ACQUIRE_AGENT: run_acquire_agent, LEASE: run_lease,
        LEASE_METRICS: run_lease_observed,
        TTL_LOCK: run_ttl, LRU: run_lru, ALRU: run_alru, AIOCACHE: run_aio,
        FLOOR: run_floor, DICT: run_dict,
    }


async def run_hit_path(settings: Settings, say: ProgressFn) -> list[Series]:
    out: list[Series] = []
    for size in SIZES:
        keys = agent_keys(size)
        values = {key: _Runtime(key) for key in keys}
        systems = await _hit_systems(keys, values)
        seqs = {
            dist: key_sequence(keys, dist, settings.hit_ops, settings.seed + size)
            for dist in DISTS
        }
        series = {
            (dist, name): Series("hit", name, size, dist) for dist in DISTS for name in systems
        }
        settle()
        for dist in DISTS:  # warm-up round, not recorded
            for run in systems.values():
                await run(seqs[dist][:500])
        for _ in range(settings.rounds):
            for dist in DISTS:
                seq = seqs[dist]
                for name, run in systems.items():
                    series[dist, name].samples_ns.append(
                        await timed(functools.partial(run, seq), len(seq))
                    )
        out.extend(series.values())
        del systems
        unsettle()
        say(f"hit path at {size:>7,} entries done")
    return out


Batch = list[Any]
InstallSystem = tuple[Callable[[Batch], Awaitable[None]], Callable[[int], Batch]]


async def _install_systems(size: int, fresh: itertools.count[int]) -> dict[str, InstallSystem]:
    """Systems at capacity, each with a runner and a batch maker: every batch holds brand
    new ids, so each install evicts the least recently used entry. Batches (seeds, values)
    are made before the clock starts: only the installs are timed."""
    manager = make_manager(size)
    ttl: cachetools.TTLCache[str, _Runtime] = cachetools.TTLCache(size, LONG_TTL_MS / 1000)
    lru: cachetools.LRUCache[str, _Runtime] = cachetools.LRUCache(size)
    for key in agent_keys(size):
        value = _Runtime(key)
        await manager.shadow_seed(make_seed(key, value))
        ttl[key] = lru[key] = value
    lock = asyncio.Lock()

    def new_items(count: int) -> Batch:
        return [(f"new-{i:08d}", _Runtime("new")) for i in itertools.islice(fresh, count)]

    def new_seeds(count: int) -> Batch:
        return [make_seed(key, value) for key, value in new_items(count)]

    async def run_shadow(seeds: Batch) -> None:
        shadow_seed = manager.shadow_seed
        for seed in seeds:
            await shadow_seed(seed)

    async def run_ttl(items: Batch) -> None:
        for key, value in items:
            async with lock:
                ttl[key] = value

    async def run_lru(items: Batch) -> None:
        for key, value in items:
            lru[key] = value

    return {
        INSTALL: (run_shadow, new_seeds),
        TTL_SET: (run_ttl, new_items),
        LRU_SET: (run_lru, new_items),
    }


async def run_install(settings: Settings, say: ProgressFn) -> list[Series]:
    out: list[Series] = []
    fresh = itertools.count()
    for size in SIZES:
        systems = await _install_systems(size, fresh)
        series = {name: Series("install", name, size, "new ids") for name in systems}
        settle()
        for run, prepare in systems.values():  # warm-up
            await run(prepare(100))
        for _ in range(settings.rounds):
            for name, (run, prepare) in systems.items():
                batch = prepare(settings.install_ops)
                series[name].samples_ns.append(
                    await timed(functools.partial(run, batch), len(batch))
                )
        out.extend(series.values())
        del systems
        unsettle()
        say(f"install at {size:>7,} entries done")
    return out
