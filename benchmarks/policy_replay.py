"""Replay a trace through one of our eviction policies directly, as the manager drives it.

The manager, on a miss: times the build (``learn_cost``), installs (``inserted``), evicts
while above capacity (``victim`` never the new entry, then ``removed``), then the lease's
release calls ``touch``; on a hit only the release's ``touch``. Without the event loop and
the manager's bookkeeping this is ~10x faster, which the full grid of ``hit_ratio.py``
needs; ``hit_ratio.py --check`` replays cells both ways and requires equal outcomes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from snak_runtime import RuntimeSeed
from snak_runtime._generation import _Generation
from snak_runtime._policies import EvictionPolicy, make_policy


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
