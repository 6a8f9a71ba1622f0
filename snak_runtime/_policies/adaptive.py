"""Adaptive eviction (issue 25, the default): a windowed, cost-aware frequency cache that
tunes itself to the traffic.

The shape is W-TinyLFU's (Einziger, Friedman and Manes, "TinyLFU", ACM TOS 2017), with
cost-aware's value in main:

- **Window** (LRU order): every new entry starts here.
- **Main**: a heap by value. The window's oldest entry joins main only when its value is
  above that of main's least valued entry (which then leaves); otherwise it is the one
  evicted. So one-off agents and scans pass through the window and leave, and a loop a bit
  larger than the cache keeps most of its agents in main instead of missing on every one
  (with a margin: see ``_shadows.MARGIN``).
- **Value**: log2(decayed request count) + weight x log2(build cost). Counts decay with
  forward decay on a clock that advances by 1 / half-life per install of a new agent
  (``_values.py``); cost is the agent's last build time.

Three parameters adapt online (``_tuner.py``): the window's share of the cache, the cost
weight and the half-life, each chosen from a short ladder by shadow caches that run the
same rules with other parameters on a sample of the requests. No constant is chosen per
kind of traffic; the ladders and the tuner's rules are the same for every cache.

The hit path calls nothing in Python: ``touch`` is a bounded ring's C-level ``append`` (an
agent id per last release). The ring is read when an entry is installed or a victim
chosen: its ids update recency and counts, and feed the tuner's shadows. If more than
8 x capacity releases happen between two installs, the oldest are forgotten.

A pinned entry found where a victim was looked for is set aside until an id in the ring
(its last release) or the store's ``idle`` brings it back; if that id was forgotten, it
comes back when nothing else can be evicted, or leaves by expiry or invalidation.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from ._shadows import MARGIN, window_size
from ._tuner import START, Tuner
from ._values import Values
from ._windowed import RING, WindowedPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

__all__ = ("RING", "AdaptivePolicy")


@final
class AdaptivePolicy(WindowedPolicy):
    """Window (LRU) + main by decayed count x cost^weight; the window's share, the weight
    and the half-life tuned online by shadow caches (see the module)."""

    name = "adaptive"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self._values = Values(self.capacity, START[1])
        self._tuner = Tuner(self.capacity, self._values)
        self._apply()

    # ------------------------------------------------------------------ what the store says

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        self._drain()
        agent_id = gen._agent_id
        if previous is not None:  # same agent, new generation: it keeps its place
            self._replace(agent_id, gen)
            return
        self._window[agent_id] = gen
        # counted when released (the ring), like every request
        self._values.installed(itertools.chain(self._window, self._main, self._parked),
                               self.capacity)

    def learn_cost(self, agent_id: str, ms: float) -> None:
        self._values.learn_cost(agent_id, ms)

    # ------------------------------------------------------------------------- eviction

    def victim(self, keep: Gen | None) -> Gen | None:
        self._drain()
        if self._parked:
            self._check_one_parked()
        self._fill_main(keep)
        for _ in range(2):
            candidate = self._window_candidate(keep)
            top = self._main_min(keep)
            if candidate is not None and top is not None:
                value = self._values.value
                if value(candidate._agent_id) > value(top._agent_id) + MARGIN:
                    del self._main[top._agent_id], self._stamp[top._agent_id]
                    del self._window[candidate._agent_id]
                    self._join_main(candidate)
                    return top
                del self._window[candidate._agent_id]
                return candidate
            if candidate is not None:
                del self._window[candidate._agent_id]
                return candidate
            if top is not None:
                del self._main[top._agent_id], self._stamp[top._agent_id]
                return top
            candidate = self._window_candidate(keep, share=0.0)  # main has nothing to give
            if candidate is not None:
                del self._window[candidate._agent_id]
                return candidate
            if not self._unpark_idle():
                return None
        return None

    def victim_among(self, candidates: Sequence[Gen], keep: Gen | None) -> Gen | None:
        """Of one user's entries (the per-user quota), the one of least value (what main
        ranks by), after applying the releases in the ring: O(len(candidates)). Ties go
        to the earlier candidate."""
        self._drain()
        best: Gen | None = None
        best_value = 0.0
        for gen in candidates:
            if gen is keep or gen.pins:
                continue
            value = self._values.value(gen._agent_id)
            if best is None or value < best_value:
                best, best_value = gen, value
        return best

    def order(self) -> list[Gen]:
        """Approximate (see ``WindowedPolicy._ordered``), after the releases in the ring."""
        self._drain()
        return self._ordered()

    @property
    def parameters(self) -> dict[str, float]:
        """What the tuner has chosen so far: the window's share of the capacity, the
        half-life in installs and the cost weight (for tests, snapshots and tuning)."""
        return {
            "window": self._window_target / self.capacity,
            "half_life": 1.0 / self._values.rate,
            "cost_weight": self._values.weight,
        }

    # ------------------------------------------------------------------------ adaptation

    def _apply(self) -> None:
        """Take the tuner's parameters; a new weight reorders main (its heap is made again)."""
        tuner, values = self._tuner, self._values
        self._window_target = window_size(self.capacity, tuner.share)
        values.rate = 1.0 / (self.capacity * tuner.memory)
        if values.weight != tuner.weight:
            values.weight = tuner.weight
            self._compact()

    # ---------------------------------------------------------------------------- parts

    def _drain(self) -> None:
        """Apply the releases recorded in the ring: recency in the window, counts, the
        return of entries set aside while pinned; then the tuner sees them."""
        ring = self._ring
        if not ring:
            return
        released, count = self._released, self._values.count
        for agent_id in ring:
            if released(agent_id):
                count(agent_id)
        changed = self._tuner.feed(ring)
        ring.clear()
        if changed:
            self._apply()

    def _value(self, agent_id: str) -> float:
        return self._values.value(agent_id)

    def _compact(self) -> None:
        """Every main entry's item made again, once stale items pile up: O(main), at most
        once per as many pushes."""
        stamp, value, seq = self._stamp, self._values.value, self._seq
        heap: list[tuple[float, int, str]] = []
        for agent_id in self._main:
            n = next(seq)
            stamp[agent_id] = n
            heap.append((value(agent_id), n, agent_id))
        heapq.heapify(heap)
        self._heap = heap
        self._dirty.clear()

