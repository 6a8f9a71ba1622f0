"""Single flight: N concurrent ``lease(..., build=...)`` misses, for one id and for N ids."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import Any

from common import ProgressFn, Series, Settings, make_manager, make_seed, timed

ONE_ID = "lease+build, one id (1 build)"
MANY_IDS = "lease+build, one id each"
GATHER = "reference: gather of awaited dict lookups"
SUSPENDED = "reference: gather of tasks that each suspend once"
FLIGHT_SYSTEMS = (ONE_ID, MANY_IDS, GATHER, SUSPENDED)


async def _gather(each: Callable[[str], Awaitable[object]], keys: list[str]) -> None:
    await asyncio.gather(*(each(key) for key in keys))


async def run_single_flight(settings: Settings, say: ProgressFn) -> list[Series]:
    waiters = settings.waiters
    ids = [f"flight-{i:05d}" for i in range(waiters)]
    runtime = object()
    series = {name: Series("flight", name, waiters, "-") for name in FLIGHT_SYSTEMS}
    builds_one: list[int] = []
    builds_many: list[int] = []
    plain = dict.fromkeys(ids, runtime)

    async def floor_get(key: str) -> object | None:
        return plain.get(key)

    async def suspended_get(key: str) -> object | None:
        # Any single-flight waiter must suspend until the build ends and be woken once:
        # this is that floor (one suspension, one wake-up per task).
        await asyncio.sleep(0)
        return plain.get(key)

    for round_no in range(settings.flight_rounds + 1):  # round 0 warms up
        for name in FLIGHT_SYSTEMS:
            if name in (GATHER, SUSPENDED):
                each = floor_get if name == GATHER else suspended_get
                sample = await timed(functools.partial(_gather, each, ids), waiters)
                if round_no:
                    series[name].samples_ns.append(sample)
                continue
            manager = make_manager(2 * waiters)
            calls = 0

            async def build(agent_id: str) -> Any:
                nonlocal calls
                calls += 1
                await asyncio.sleep(0)  # a build suspends at least once
                return make_seed(agent_id, runtime)

            async def waiter(agent_id: str, manager: Any = manager, build: Any = build) -> None:
                async with manager.lease(agent_id, build=build):
                    pass

            keys = [ids[0]] * waiters if name == ONE_ID else ids
            sample = await timed(functools.partial(_gather, waiter, keys), waiters)
            await manager.aclose()
            if round_no:
                series[name].samples_ns.append(sample)
                (builds_one if name == ONE_ID else builds_many).append(calls)
    series[ONE_ID].extra["builds_per_round"] = builds_one
    series[MANY_IDS].extra["builds_per_round"] = builds_many
    say(f"single flight with {waiters:,} waiters done")
    return list(series.values())
