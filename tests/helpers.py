"""Shared test helpers: type aliases, loop settling, removal listening (one place for all tests).

Import from here (``from tests.helpers import settle, listen, Manager``), never redefine them
in a test module.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from hypothesis import settings

from snak_runtime import AgentRuntimeManager, RuntimeSeed

Manager = AgentRuntimeManager[str, object]
MakeManager = Callable[..., Manager]
Seed = RuntimeSeed[str, object]
MakeSeed = Callable[..., Seed]
Rebuild = Callable[[], Awaitable[Seed | None]]
AssertStats = Callable[..., None]


async def settle(n: int = 10) -> None:
    """Let the event loop run ``n`` rounds, so tasks scheduled just now take their steps.

    Orders concurrent steps without a wall clock (tests never sleep on time)."""
    for _ in range(n):
        await asyncio.sleep(0)


def listen(m: AgentRuntimeManager[Any, Any]) -> list[tuple[str, str]]:
    """Record every removal of ``m`` as ``(agent_id, cause)``, in order."""
    removed: list[tuple[str, str]] = []
    m.on_removal(lambda agent_id, cause: removed.append((agent_id, str(cause))))
    return removed


def examples(share: float) -> int:
    """A property test's example count: ``share`` of the loaded Hypothesis profile's
    ``max_examples`` (tests/conftest.py: 100 in the fast suite, 1,000 under ``--full``).

    Property tests are bounded by example counts, never by time."""
    return max(1, round(settings().max_examples * share))  # settings(): the loaded profile


def removal_event(m: AgentRuntimeManager[Any, Any], n: int = 1) -> asyncio.Event:
    """An event set once ``m`` has removed ``n`` more entries (any cause), counted from now.

    The sweeper runs on the event loop's timer, not on the injected clock: a test waits for
    what the sweeper did (this event), never for time to pass."""
    done = asyncio.Event()
    seen = 0

    def count(agent_id: str, cause: object) -> None:
        nonlocal seen
        seen += 1
        if seen >= n:
            done.set()

    m.on_removal(count)
    return done


async def _no_rebuild() -> Seed | None:
    raise AssertionError("not called")


def replay_requests(policy: Any, requests: list[int], costs: dict[int, float] | None = None
                    ) -> int:
    """Drive an eviction policy as the manager does (learn_cost, inserted, victims while over
    capacity, never the new entry nor a pinned one, then the release's touch); the misses."""
    from snak_runtime._generation import _Generation

    cached: dict[str, Any] = {}
    misses = 0
    for a in requests:
        name = f"agent-{a}"
        if name not in cached:
            misses += 1
            policy.learn_cost(name, (costs or {}).get(a, 100.0))
            g = cached[name] = _Generation(RuntimeSeed(name, "u1", 1, name, _no_rebuild), 100)
            policy.inserted(g, None)
            while len(cached) > policy.capacity:
                victim = policy.victim(g)
                assert victim is not None and victim is not g and not victim.pins
                del cached[victim.agent_id]
                policy.removed(victim)
        policy.touch(name)
    return misses
