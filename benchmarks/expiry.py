"""Expiry: the sweeper's cost per expired entry when 100,000 expire at once, and the cost
of a hit on a live entry before they expire, while they wait to be swept, and after."""

from __future__ import annotations

import asyncio
import functools
import gc
import time
from typing import Any

from common import (
    ProgressFn,
    Series,
    Settings,
    key_sequence,
    make_manager,
    make_seed,
    settle,
    timed,
    unsettle,
)

from snak_runtime import AgentRuntimeManager
from snak_runtime.testing import internals

TTL_MS = 60_000
LIVE = 1_000
BEFORE = "hit, nothing expired"
WAITING = "hit, the expired entries waiting to be swept"
AFTER = "hit, after the sweep"
SWEEP = "sweep per expired entry (removal, scheduling its disposal)"
SWEEP_DISPOSE = "sweep + running the disposals, per expired entry"
# The sweeper's batch (snak_runtime._manager._SWEEP_BATCH): it yields to the loop between.
SWEEP_BATCH = 1024


class _ManualClock:
    """A clock the benchmark sets freely (back and forth) to compare states."""

    __slots__ = ("now",)

    def __init__(self) -> None:
        self.now = 0

    def now_ms(self) -> int:
        return self.now


class _Agent:
    """An agent with a cheap ``aclose`` for the default disposer to call."""

    __slots__ = ()

    async def aclose(self) -> None:
        return None


async def _hits(manager: AgentRuntimeManager[Any, Any], seq: list[str]) -> None:
    acquire, release = manager.acquire, manager.release
    for key in seq:
        await acquire(key)
        release(key)


async def run_expiry(settings: Settings, say: ProgressFn) -> list[Series]:
    count = settings.expiry_entries
    series = {
        name: Series("expiry", name, count, "-")
        for name in (BEFORE, WAITING, AFTER, SWEEP, SWEEP_DISPOSE)
    }
    live_keys = [f"live-{i:05d}" for i in range(LIVE)]
    seq = key_sequence(live_keys, "uniform", settings.hit_ops, settings.seed)
    runtime = object()
    for sweep_round in range(settings.expiry_rounds):
        clock = _ManualClock()
        manager = make_manager(count + LIVE, ttl_ms=TTL_MS, clock=clock)
        for i in range(count):
            await manager.shadow_seed(make_seed(f"doomed-{i:07d}", runtime, _Agent()))
        clock.now = TTL_MS // 2
        for key in live_keys:
            await manager.shadow_seed(make_seed(key, runtime, _Agent()))

        settle()
        hits = functools.partial(_hits, manager, seq)

        if sweep_round == 0:
            for i in range(settings.rounds + 1):  # interleaved; round 0 warms up
                for name, now in ((BEFORE, TTL_MS - 1), (WAITING, TTL_MS)):
                    clock.now = now
                    sample = await timed(hits, len(seq))
                    if i:
                        series[name].samples_ns.append(sample)
        clock.now = TTL_MS
        store = internals(manager).store
        enabled = gc.isenabled()
        gc.disable()
        try:
            # The sweeper's loop; the time inside pop_expired (removal, counting, scheduling
            # each disposal) is told apart from the yields, where the disposals run.
            in_store = 0
            started = time.perf_counter_ns()
            while True:
                batch_started = time.perf_counter_ns()
                consumed = store.pop_expired(clock.now_ms(), SWEEP_BATCH)
                in_store += time.perf_counter_ns() - batch_started
                if consumed < SWEEP_BATCH:
                    break
                await asyncio.sleep(0)
            await manager.wait_for_disposals()
            disposed = time.perf_counter_ns()
        finally:
            if enabled:
                gc.enable()
        series[SWEEP].samples_ns.append(in_store / count)
        series[SWEEP_DISPOSE].samples_ns.append((disposed - started) / count)
        series[SWEEP].extra.setdefault("size_after", []).append(manager.size)
        if sweep_round == 0:
            for i in range(settings.rounds + 1):
                sample = await timed(hits, len(seq))
                if i:
                    series[AFTER].samples_ns.append(sample)
        await manager.aclose()
        unsettle()
        say(f"expiry sweep {sweep_round + 1}/{settings.expiry_rounds} of {count:,} entries done")
    return list(series.values())
