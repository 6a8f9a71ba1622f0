"""Memory per entry at 100,000 entries (tracemalloc), the manager against TTLCache.

Keys, runtimes and agents are made before tracing starts and are shared by every
system, so what is counted is each cache's own bookkeeping per entry.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Awaitable, Callable
from typing import Any

import cachetools
from common import LONG_TTL_MS, ProgressFn, Settings, agent_keys, make_manager, make_seed

MANAGER = "AgentRuntimeManager (runtime + agent)"
MANAGER_READ = "AgentRuntimeManager, after one lease + acquire_with_agent each"
TTL = "TTLCache"
LRU = "LRUCache"
DICT = "dict"


class _Agent:
    __slots__ = ()


async def _traced(fill: Callable[[], Awaitable[Any]]) -> int:
    """Bytes still allocated by ``fill`` once it returns (its result is kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        kept = await fill()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    del kept
    return used


async def run_memory(settings: Settings, say: ProgressFn) -> list[dict[str, Any]]:
    n = settings.memory_entries
    keys = agent_keys(n)
    runtimes = [object() for _ in keys]
    agents = [_Agent() for _ in keys]
    pairs = list(zip(runtimes, agents, strict=True))

    async def fill_manager() -> Any:
        manager = make_manager(n)
        for key, runtime, agent in zip(keys, runtimes, agents, strict=True):
            await manager.shadow_seed(make_seed(key, runtime, agent))
        return manager

    async def fill_manager_read() -> Any:
        manager = await fill_manager()
        for key in keys:
            async with manager.lease(key):
                pass
            await manager.acquire_with_agent(key)
            manager.release(key)
        return manager

    async def fill_ttl() -> Any:
        cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(n, LONG_TTL_MS / 1000)
        for key, pair in zip(keys, pairs, strict=True):
            cache[key] = pair
        return cache

    async def fill_lru() -> Any:
        cache: cachetools.LRUCache[str, Any] = cachetools.LRUCache(n)
        for key, pair in zip(keys, pairs, strict=True):
            cache[key] = pair
        return cache

    async def fill_dict() -> Any:
        return dict(zip(keys, pairs, strict=True))

    rows = []
    for name, fill in ((MANAGER, fill_manager), (MANAGER_READ, fill_manager_read),
                       (TTL, fill_ttl), (LRU, fill_lru), (DICT, fill_dict)):
        used = await _traced(fill)
        rows.append({"system": name, "entries": n, "bytes": used, "bytes_per_entry": used / n})
    say(f"memory at {n:,} entries done")
    return rows
