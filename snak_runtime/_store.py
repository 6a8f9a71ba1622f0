"""Generations, recency order and expiry heap: synchronous, never awaits or disposes.

The store decides *what* leaves the map and which agent objects become orphaned; the
manager is told through two callbacks and does the disposing and notifying.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, final

from ._seed import AcquiredRuntime, Rebuild, RuntimeLease, RuntimeSeed
from ._stats import RemovalCause

R = TypeVar("R")
A = TypeVar("A")

# Rebuild the heap once stale items outnumber live ones (and there are enough to matter).
_COMPACT_MIN_STALE = 64


@final
@dataclass(slots=True, eq=False)
class _Generation(Generic[R, A]):
    """One installed seed. Immutable payload; pins and map membership change."""

    agent_id: str
    user_id: str
    cfg_version: int
    runtime: R
    agent: A | None
    rebuild: Rebuild[R, A]
    expires_at_ms: int
    seq: int
    pins: int = 0  # all pins: leases and acquires
    loose_pins: int = 0  # pins taken by acquire*, which release(agent_id) may give back
    current: bool = True  # the map's entry for its agent id
    in_heap: bool = True
    finished: bool = False  # agent reference given up (disposed or handed on)
    _lease: RuntimeLease[R, A] | None = None
    _acquired: AcquiredRuntime[R, A] | None = None

    def lease_view(self) -> RuntimeLease[R, A]:
        """The generation's snapshot, built once: a generation never changes its payload."""
        view = self._lease
        if view is None:
            view = self._lease = RuntimeLease(
                self.agent_id, self.user_id, self.cfg_version, self.runtime, self.agent
            )
        return view

    def acquired_view(self) -> AcquiredRuntime[R, A]:
        view = self._acquired
        if view is None:
            view = self._acquired = AcquiredRuntime(self.runtime, self.agent)
        return view


OnRemoved = Callable[[str, RemovalCause], None]
OnOrphaned = Callable[[str, Any], None]


@final
class _Store(Generic[R, A]):
    """The cache's data structures. Every method is O(1) amortized or O(log n).

    ``current`` maps an agent id to its current generation. ``idle`` holds the agent ids
    whose current generation is unpinned, least recently used first, so capacity eviction
    pops its head without looking at pinned entries. ``detached`` keeps superseded
    generations that are still pinned, oldest first, until their last pin goes.
    """

    __slots__ = (
        "_agents",
        "_heap",
        "_on_orphaned",
        "_on_removed",
        "_seq",
        "_stale",
        "current",
        "detached",
        "idle",
    )

    def __init__(self, on_removed: OnRemoved, on_orphaned: OnOrphaned) -> None:
        self.current: dict[str, _Generation[R, A]] = {}
        self.idle: OrderedDict[str, None] = OrderedDict()
        self.detached: dict[str, list[_Generation[R, A]]] = {}
        self._heap: list[tuple[int, int, _Generation[R, A]]] = []
        self._stale = 0
        # id(agent) -> [agent, number of unfinished generations holding it]
        self._agents: dict[int, list[Any]] = {}
        self._seq = itertools.count()
        self._on_removed = on_removed
        self._on_orphaned = on_orphaned

    def install(
        self, seed: RuntimeSeed[R, A], expires_at_ms: int, old_cause: RemovalCause | None
    ) -> _Generation[R, A]:
        """Make ``seed`` the current generation; the old one (if any) leaves with ``old_cause``.

        ``old_cause=None`` is a same-version refresh: the old generation is superseded
        silently (no removal is reported), but still detached so its pins stay exact.
        """
        old = self.current.get(seed.agent_id)
        seq = next(self._seq)
        gen = _Generation(
            seed.agent_id,
            seed.user_id,
            seed.cfg_version,
            seed.runtime,
            seed.agent,
            seed.rebuild,
            expires_at_ms,
            seq,
        )
        if seed.agent is not None:
            ref = self._agents.get(id(seed.agent))
            if ref is None:
                self._agents[id(seed.agent)] = [seed.agent, 1]
            else:
                ref[1] += 1
        if old is not None:
            self.detach(old, old_cause)
        self.current[seed.agent_id] = gen
        self.idle[seed.agent_id] = None
        heapq.heappush(self._heap, (expires_at_ms, seq, gen))
        return gen

    def detach(self, gen: _Generation[R, A], cause: RemovalCause | None) -> None:
        """Take ``gen`` out of the map; its agent is orphaned now or at its last release."""
        agent_id = gen.agent_id
        del self.current[agent_id]
        gen.current = False
        if gen.pins == 0:
            self.idle.pop(agent_id, None)  # absent when its last pin is being released now
        if gen.in_heap:
            self._stale += 1
            if self._stale > _COMPACT_MIN_STALE and self._stale * 2 > len(self._heap):
                self._compact()
        if cause is not None:
            self._on_removed(agent_id, cause)
        if gen.pins:
            self.detached.setdefault(agent_id, []).append(gen)
        else:
            self.finish(gen)

    def drop_detached(self, gen: _Generation[R, A]) -> None:
        """A detached generation lost its last pin."""
        pinned = self.detached[gen.agent_id]
        pinned.remove(gen)
        if not pinned:
            del self.detached[gen.agent_id]
        self.finish(gen)

    def finish(self, gen: _Generation[R, A]) -> None:
        """Give up ``gen``'s hold on its agent; orphan the agent when no generation holds it."""
        if gen.finished:
            return
        gen.finished = True
        agent = gen.agent
        if agent is None:
            return
        ref = self._agents[id(agent)]
        ref[1] -= 1
        if ref[1] == 0:
            del self._agents[id(agent)]
            self._on_orphaned(gen.agent_id, agent)

    def owns(self, agent: object) -> bool:
        """Whether some unfinished generation holds ``agent`` (by identity)."""
        return id(agent) in self._agents

    def pop_expired(self, now_ms: int, limit: int) -> int:
        """Remove up to ``limit`` expired idle generations, soonest first; return how many
        heap items were consumed (stale and pinned ones included)."""
        consumed = 0
        while self._heap and consumed < limit and self._heap[0][0] <= now_ms:
            gen = heapq.heappop(self._heap)[2]
            consumed += 1
            gen.in_heap = False
            if not gen.current:
                self._stale -= 1
            elif gen.pins == 0:
                self.detach(gen, RemovalCause.EXPIRED)
            # a pinned expired generation is removed at its last release
        return consumed

    def lru_victim(self, keep: str | None) -> _Generation[R, A] | None:
        """The least recently used idle generation, unless it is ``keep``."""
        for agent_id in self.idle:
            return None if agent_id == keep else self.current[agent_id]
        return None

    def _compact(self) -> None:
        self._heap = [item for item in self._heap if item[2].current]
        heapq.heapify(self._heap)
        self._stale = 0

    def unfinished_pinned(self) -> list[_Generation[R, A]]:
        """Every generation still pinned and holding its agent (used at shutdown only)."""
        gens = [g for gens in self.detached.values() for g in gens if not g.finished]
        gens.extend(g for g in self.current.values() if g.pins and not g.finished)
        return gens

    @property
    def heap_size(self) -> int:
        return len(self._heap)
