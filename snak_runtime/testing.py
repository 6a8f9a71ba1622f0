"""Test helpers for users of snak_runtime: a clock you move by hand, a disposer that records;
and, for this project's own tests, ``internals()``: the one documented window on a manager's
parts (not a stable API)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, final

from ._policies import EvictionPolicy, LruPolicy

if TYPE_CHECKING:
    from ._manager import AgentRuntimeManager
    from ._store import _Store


@final
class FakeClock:
    """A ``Clock`` that only moves when told to (``advance``/``set``)."""

    __slots__ = ("_now_ms",)

    def __init__(self, start_ms: int = 0) -> None:
        self._now_ms = start_ms

    def now_ms(self) -> int:
        return self._now_ms

    def advance(self, ms: int) -> None:
        if ms < 0:
            raise ValueError(f"a monotonic clock cannot go back (advance by {ms})")
        self._now_ms += ms

    def set(self, ms: int) -> None:
        if ms < self._now_ms:
            raise ValueError(f"a monotonic clock cannot go back (from {self._now_ms} to {ms})")
        self._now_ms = ms


@final
class RecordingDisposer:
    """A ``Disposer`` that records every agent it is asked to dispose, in order."""

    def __init__(self) -> None:
        self.disposed: list[object] = []
        self.event = asyncio.Event()

    async def dispose(self, agent: object) -> None:
        self.disposed.append(agent)
        self.event.set()

    def count(self, agent: object) -> int:
        """How many times ``agent`` (by identity) was disposed."""
        return sum(1 for a in self.disposed if a is agent)


@final
class ManagerInternals:
    """The one documented window on a manager's parts, for this project's own tests.

    Not a stable API: it names internal parts (see docs/how-it-works.md) so that
    tests need not reach into private attributes one by one. ``internals(manager)`` makes
    one. Each attribute is the part itself, not a copy:

    - ``cache``: the map, pins and install (``cache.install``, ``cache.over_limits()``,
      ``cache.user_index()``, ``cache.pop_expired(limit)``), and ``cache.capacity``, its
      trims (``capacity.slow_release``: the release path's test);
    - ``store``: the cache's store (expiry queues, the user index, the policy);
    - ``policy``: the eviction policy inside the store;
    - ``turns``: the per-agent FIFO turns (``turns.queues``: ids with work in flight);
    - ``calls``: the bounded calls into user code (``calls.abandoned``);
    - ``refreshes``, ``loads``, ``writes``: the parts that run tasks (``tasks()``);
    - ``touch``: the release path's policy hook (the hot path's alias);
    - ``disposer``: the disposer the manager was given.

    A test may wrap a part's method by assigning the instance attribute (``cache.install``,
    ``cache.discard``, ``cache.capacity.trim_user``): parts call each other through these names.
    """

    __slots__ = ("cache", "calls", "disposer", "loads", "policy", "refreshes", "store", "touch",
                 "turns", "writes")

    def __init__(self, manager: AgentRuntimeManager[Any, Any]) -> None:
        self.cache = manager._cache
        self.store = manager._cache._store
        self.policy = self.store.policy
        parts = manager._parts
        self.turns = parts.turns
        self.calls = parts.calls
        self.refreshes = parts.refreshes
        self.loads = parts.loads
        self.writes = parts.writes
        self.touch = manager._touch
        self.disposer = manager._disposer

    def abandon_cancelled_at_once(self) -> None:
        """A cancelled build or rebuild gets no grace to end: one that ignores cancellation
        is abandoned at once (a test without a wall clock has no other way to get there)."""
        self.calls._grace_s = 0.0

    def queued_expiries(self) -> int:
        """Items in the store's expiry FIFO and heaps, stale ones included."""
        return queued_expiries(self.store)

    def lru_order(self) -> list[str]:
        """The LRU policy's order of agent ids, least recently used first."""
        return lru_order(self.policy)


def queued_expiries(store: _Store[Any, Any]) -> int:
    """Items in ``store``'s expiry FIFO and heaps, stale ones included."""
    return len(store._heap) + len(store._fifo) + len(store._idle_heap)


def lru_order(policy: EvictionPolicy) -> list[str]:
    """The agent ids in ``policy``'s order: least recently used first for LRU, the
    policy's ``order()`` (its eviction order of the idle entries) for another."""
    if not isinstance(policy, LruPolicy):
        return [gen.agent_id for gen in policy.order()]
    policy.drain()  # with ranks, releases wait in a ring until the next policy call
    return list(policy.recency)


def internals(manager: AgentRuntimeManager[Any, Any]) -> ManagerInternals:
    """The testing surface of ``manager`` (see ``ManagerInternals``)."""
    return ManagerInternals(manager)


def replace_maps(
    manager: AgentRuntimeManager[Any, Any],
    current: dict[str, Any],
    recency: OrderedDict[str, Any] | None = None,
) -> None:
    """Swap the entry map (and, with the LRU policy, its recency order) for instrumented
    mappings of the same contents, in every part that holds them: a test counts how many
    elements an operation visits. Use on a fresh manager."""
    parts = _parts(manager)
    current.update(manager._current)
    _swap(parts, manager._current, current)
    if recency is not None:
        policy = manager._cache.policy
        assert isinstance(policy, LruPolicy), "only the LRU policy keeps a recency order"
        old = policy.recency
        recency.update(old)
        old_touch = policy.touch
        policy.recency = recency
        policy.touch = recency.move_to_end
        _swap(parts, old_touch, recency.move_to_end, equal=True)


def _parts(manager: AgentRuntimeManager[Any, Any]) -> list[object]:
    cache = manager._cache
    return [
        manager, cache, cache._store, manager._parts.refreshes, manager._parts.loads,
        manager._parts.writes, manager._parts.reads,
    ]


def _swap(parts: list[object], old: object, new: object, *, equal: bool = False) -> None:
    """Every attribute of ``parts`` that is ``old`` (or equal to it) becomes ``new``."""
    for part in parts:
        names = list(getattr(part, "__dict__", {}))
        for cls in type(part).__mro__:
            names.extend(getattr(cls, "__slots__", ()))
        for name in names:
            value = getattr(part, name, None)
            if value is old or (equal and value is not None and value == old):
                setattr(part, name, new)
