"""How long the admin listing holds the event loop: ``python benchmarks/admin_listing.py``.

Issue 23 found ``GET /entries`` (one unpaged snapshot, serialized through FastAPI's response
model) blocking the loop 82-217 ms at 10,000 entries. This walks every page of the paged
listing (``limit`` 100, the default, and 1,000, the maximum) through the ASGI app, while a
ticker task measures the longest gap between its turns on the loop: the longest time any
one step of the listing (or anything else) kept it. For reference, the same is measured for
the old route's work: ``manager.snapshot()`` and the JSON of all entries in one go.

Wall-clock times (the loop block is what a concurrent request waits): run it on a quiet
machine, under ``nice -n 19`` on a shared one, and read the medians over rounds. No asserts:
a plain script (STYLE.md §9); ``--sizes`` and ``--rounds`` to change the defaults.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import asdict
from typing import Any

from fastapi import FastAPI

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.contrib.fastapi import admin_router


def _seed(i: int) -> RuntimeSeed[str, None]:
    async def rebuild() -> RuntimeSeed[str, None] | None:
        return None

    return RuntimeSeed(
        agent_id=f"agent-{i:07d}", user_id=f"user-{i % 100}", cfg_version=1,
        runtime="rt", rebuild=rebuild,
    )  # fmt: skip


async def _get(app: FastAPI, query: str) -> tuple[int, str | None]:
    """One page through ASGI: (entries listed, next cursor). The body is read at C speed
    (a count and a search, not ``json.loads``): this client shares the loop it measures."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
        "scheme": "http", "path": "/entries", "raw_path": b"/entries", "root_path": "",
        "query_string": query.encode(), "headers": [], "client": ("127.0.0.1", 1),
        "server": ("bench", 80),
    }  # fmt: skip
    await app(scope, receive, send)
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    tail = body[body.rindex(b'"next_cursor":') + len(b'"next_cursor":'):]
    cursor = None if tail.startswith(b"null") else tail[1:tail.index(b'"', 1)].decode()
    return body.count(b'"agent_id":'), cursor


async def _longest_block(
    work: Callable[[], Awaitable[int]],
) -> tuple[float, float, float, int]:
    """(longest gap between the ticker's turns in ms, wall and thread CPU; wall ms of the
    work; its result). The CPU gap leaves out time the process was descheduled: on a shared
    machine, the wall gap is that plus the step's own cost."""
    longest = 0.0
    longest_cpu = 0.0
    done = False

    async def ticker() -> None:
        nonlocal longest, longest_cpu
        last, last_cpu = time.perf_counter(), time.thread_time()
        while not done:
            await asyncio.sleep(0)
            now, now_cpu = time.perf_counter(), time.thread_time()
            longest = max(longest, now - last)
            longest_cpu = max(longest_cpu, now_cpu - last_cpu)
            last, last_cpu = now, now_cpu

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    start = time.perf_counter()
    result = await work()
    wall = time.perf_counter() - start
    done = True
    await task
    return longest * 1000, longest_cpu * 1000, wall * 1000, result


async def _measure(size: int, rounds: int) -> dict[str, Any]:
    manager: AgentRuntimeManager[str, None] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=size, max_ttl_ms=3_600_000),
        settings=RuntimeCacheSettings(),
    )
    for i in range(size):
        await manager.shadow_seed(_seed(i))
    app = FastAPI()
    app.include_router(admin_router(manager, authorize=lambda: True))

    def walk(limit: int) -> Callable[[], Awaitable[int]]:
        async def run() -> int:
            listed, cursor = 0, None
            while True:
                query = f"limit={limit}" + ("" if cursor is None else f"&cursor={cursor}")
                count, cursor = await _get(app, query)
                listed += count
                if cursor is None:
                    return listed
                await asyncio.sleep(0)  # the next request arrives on a later turn, as over HTTP

        return run

    async def old_route() -> int:  # what the unpaged route did: every entry, one go
        return len(json.dumps([asdict(info) for info in manager.snapshot()]))

    results: dict[str, Any] = {"size": size}
    for name, work in (
        ("paged, limit=100", walk(100)),
        ("paged, limit=1000", walk(1000)),
        ("reference: whole snapshot + JSON", old_route),
    ):
        blocks, cpu_blocks, walls = [], [], []
        for _ in range(rounds):
            block, cpu_block, wall, count = await _longest_block(work)
            blocks.append(block)
            cpu_blocks.append(cpu_block)
            walls.append(wall)
        results[name] = {
            "longest_block_ms_median": round(statistics.median(blocks), 2),
            "longest_block_ms_max": round(max(blocks), 2),
            "longest_block_cpu_ms_median": round(statistics.median(cpu_blocks), 2),
            "longest_block_cpu_ms_max": round(max(cpu_blocks), 2),
            "walk_ms_median": round(statistics.median(walls), 1),
            "listed": count,
        }
    await manager.aclose(1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    for size in args.sizes:
        result = asyncio.run(_measure(size, args.rounds))
        print(f"{size:,} entries ({args.rounds} rounds):")
        for name, row in result.items():
            if name == "size":
                continue
            print(
                f"  {name:34} longest loop block: wall median"
                f" {row['longest_block_ms_median']:7.2f} ms"
                f" (max {row['longest_block_ms_max']:7.2f}),"
                f" CPU median {row['longest_block_cpu_ms_median']:7.2f} ms"
                f" (max {row['longest_block_cpu_ms_max']:7.2f}); whole walk"
                f" {row['walk_ms_median']:8.1f} ms; {row['listed']:,} listed"
            )


if __name__ == "__main__":
    main()
