"""Replay a trace through one of our eviction policies directly, as the manager drives it
(run as a script: each policy's work per request, by cache size).

The manager, on a miss: times the build (``learn_cost``), installs (``inserted``), evicts
while above capacity (``victim`` never the new entry, then ``removed``), then the lease's
release calls ``touch``; on a hit only the release's ``touch``. Without the event loop and
the manager's bookkeeping this is ~10x faster, which the full grid of ``hit_ratio.py``
needs; ``hit_ratio.py --check`` replays cells both ways and requires equal outcomes.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from snak_runtime import RuntimeSeed
from snak_runtime._generation import _Generation
from snak_runtime._policies import POLICY_NAMES, EvictionPolicy, make_policy


async def _no_rebuild() -> None:
    return None


def replay_policy(
    requests: Sequence[int], costs_ms: Sequence[int], capacity: int, policy: str | EvictionPolicy
) -> tuple[int, int, EvictionPolicy]:
    """(misses, build milliseconds, the policy) of ``requests`` through ``policy``."""
    p = make_policy(policy, capacity) if isinstance(policy, str) else policy
    names = [f"agent-{a}" for a in range(len(costs_ms))]
    cached: dict[str, Any] = {}
    touch, inserted, victim, removed, learn = p.touch, p.inserted, p.victim, p.removed, p.learn_cost
    misses = build_ms = 0
    for a in requests:
        name = names[a]
        if name not in cached:
            cost = costs_ms[a]
            misses += 1
            build_ms += cost
            learn(name, cost)
            gen: Any = _Generation(RuntimeSeed(name, "user", 1, name, _no_rebuild), 0)
            gen.last_build_ms = cost
            cached[name] = gen
            inserted(gen, None)
            while len(cached) > capacity:
                out = victim(gen)
                if out is None:
                    break
                del cached[out._agent_id]
                removed(out)
        try:
            touch(name)
        except KeyError:
            p.idle(cached[name])
    return misses, build_ms, p


def main() -> None:
    """``python benchmarks/policy_replay.py``: each policy's own work per request (the
    replay above, without the manager), on Zipf 0.9 traffic over 10,000 agents, per cache
    size: what eviction adds to a request, paid at installs (interleaved rounds, the best)."""
    from traces import GRID  # beside this file: run as a script

    length = 30_000
    print("| max_entries | " + " | ".join(f"{p} (us/request)" for p in POLICY_NAMES) + " |")
    print("|---|" + "---|" * len(POLICY_NAMES))
    for size in (16, 64, 256, 1024, 4096):
        trace = GRID["zipf-0.9"](1, length, size)
        best = dict.fromkeys(POLICY_NAMES, float("inf"))
        for _ in range(3):
            for policy in POLICY_NAMES:
                started = time.perf_counter()
                replay_policy(trace.requests, trace.costs_ms, size, policy)
                best[policy] = min(best[policy], time.perf_counter() - started)
        print(f"| {size} | " + " | ".join(f"{best[p] / length * 1e6:.1f}"
                                           for p in POLICY_NAMES) + " |")


if __name__ == "__main__":
    main()
