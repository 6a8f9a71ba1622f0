"""The operator surface's cost: ``python benchmarks/snapshot.py [--quick] [--json PATH]``.

``snapshot()`` visits every entry, so its cost grows with the cache; this shows how much
at 64, 1,000 and 10,000 entries (is it cheap enough for a metrics scrape?), next to two
references measured in the same rounds: copying the map's values (the floor of any full
visit) and building the same number of frozen records directly. ``peek()`` and
``evict_user()`` (one user's 10 entries) should stay flat as the cache grows: neither scans.

Systems take turns within each round and the median of the rounds is printed, so
machine noise hits them alike. Times are the thread's CPU time (``time.thread_time_ns``),
not wall time: on a shared machine, time spent descheduled is not the code's cost (all of
this is synchronous, so the two agree on an idle machine). No asserts: a plain script
(STYLE.md §9).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from snak_runtime import (
    AgentRuntimeManager,
    EntryInfo,
    GuardConfig,
    RuntimeCacheSettings,
    RuntimeSeed,
)
from snak_runtime.testing import internals

SIZES = (64, 1_000, 10_000)
USER_ENTRIES = 10  # entries of the user that evict_user removes
PINNED_EVERY = 10  # every tenth entry is pinned while measuring


async def _no_rebuild() -> RuntimeSeed[Any, Any] | None:
    return None


def _seed(i: int) -> RuntimeSeed[Any, Any]:
    # users of 10 entries each, as a tenant with a few agents
    return RuntimeSeed(
        agent_id=f"agent-{i:07d}", user_id=f"user-{i // USER_ENTRIES:06d}", cfg_version=1,
        runtime=i, rebuild=_no_rebuild,
    )


async def _filled(size: int) -> AgentRuntimeManager[Any, Any]:
    manager: AgentRuntimeManager[Any, Any] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=size, max_ttl_ms=3_600_000),
        settings=RuntimeCacheSettings(max_entries=str(size), ttl_ms="3600000"),
    )
    for i in range(size):
        await manager.shadow_seed(_seed(i))
    for i in range(0, size, PINNED_EVERY):
        await manager.acquire(f"agent-{i:07d}")
    return manager


async def _close(manager: AgentRuntimeManager[Any, Any], size: int) -> None:
    for i in range(0, size, PINNED_EVERY):
        manager.release(f"agent-{i:07d}")  # a no-op for the ones evicted meanwhile
    await manager.aclose()


def _per_call_ns(call: Callable[[], object], calls: int) -> float:
    gc.disable()
    try:
        started = time.thread_time_ns()
        for _ in range(calls):
            call()
        return (time.thread_time_ns() - started) / calls
    finally:
        gc.enable()


def _records(manager: AgentRuntimeManager[Any, Any]) -> Callable[[], object]:
    gens = list(internals(manager).store.current.values())

    def build() -> object:
        return [
            EntryInfo(g.agent_id, g.user_id, g.cfg_version, 0, 1, 0, 0, 0, None) for g in gens
        ]

    return build


async def _evictions_ns(size: int, rounds: int) -> tuple[list[float], list[float]]:
    """One full cache; each round evicts one user's 10 entries with ``evict_user`` and
    another user's 10 with ten ``evict`` calls (the reference), each timed alone, then
    puts both users' entries back (untimed)."""
    manager = await _filled(size)
    users = size // USER_ENTRIES
    by_user: list[float] = []
    one_by_one: list[float] = []
    for r in range(-1, rounds):  # round -1 warms up, untimed
        user, other = (2 * r) % users, (2 * r + 1) % users
        ids = [f"agent-{other * USER_ENTRIES + j:07d}" for j in range(USER_ENTRIES)]
        gc.disable()
        started = time.thread_time_ns()
        removed = await manager.evict_user(f"user-{user:06d}")
        took = time.thread_time_ns() - started
        started = time.thread_time_ns()
        for agent_id in ids:
            await manager.evict(agent_id)
        took_one_by_one = time.thread_time_ns() - started
        gc.enable()
        assert removed == USER_ENTRIES
        if r >= 0:
            by_user.append(took)
            one_by_one.append(took_one_by_one)
        for u in (user, other):
            for i in range(u * USER_ENTRIES, (u + 1) * USER_ENTRIES):
                await manager.shadow_seed(_seed(i))
    await _close(manager, size)
    return by_user, one_by_one


async def run(rounds: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for size in SIZES:
        manager = await _filled(size)
        calls = max(3, 20_000 // size)
        entries = internals(manager).store.current
        systems: dict[str, Callable[[], object]] = {
            "snapshot()": manager.snapshot,
            "floor: list(map.values())": lambda e=entries: list(e.values()),
            "reference: EntryInfo(...) per entry": _records(manager),
            "peek(one id)": lambda m=manager: m.peek("agent-0000003"),
            "stats()": manager.stats,
        }
        samples: dict[str, list[float]] = {name: [] for name in systems}
        for _ in range(rounds):
            for name, call in systems.items():
                n = calls if name != "peek(one id)" and name != "stats()" else 20_000
                samples[name].append(_per_call_ns(call, n))
        await _close(manager, size)
        by_user, one_by_one = await _evictions_ns(size, rounds)
        samples["evict_user (a user's 10 entries)"] = by_user
        samples["reference: evict() x 10"] = one_by_one
        for name, values in samples.items():
            rows.append({"system": name, "size": size, "median_ns": statistics.median(values),
                         "samples_ns": values})
    return rows


def _table(rows: list[dict[str, Any]]) -> str:
    names = list(dict.fromkeys(row["system"] for row in rows))
    head = "| operation | " + " | ".join(f"{s:,} entries" for s in SIZES) + " |"
    lines = [head, "|" + "---|" * (len(SIZES) + 1)]
    for name in names:
        cells = []
        for size in SIZES:
            ns = next(r["median_ns"] for r in rows if r["system"] == name and r["size"] == size)
            per = f" ({ns / size:,.0f} ns/entry)" if name == "snapshot()" else ""
            cells.append(f"{ns / 1000:,.1f} µs{per}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 rounds instead of 15")
    parser.add_argument("--json", help="also write the raw samples here")
    args = parser.parse_args(argv)
    rows = asyncio.run(run(3 if args.quick else 15))
    print(_table(rows))
    print(f"\nmedian of {3 if args.quick else 15} interleaved rounds, thread CPU time; Python "
          f"{sys.version.split()[0]}; {PINNED_EVERY}% of entries pinned while measuring")
    if args.json:
        with open(args.json, "w") as out:
            json.dump(rows, out, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
