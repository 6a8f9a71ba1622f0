"""Cost-aware eviction: keep the agents whose misses would cost the most build time.

Under independent requests the cache that spends the least build time keeps the agents
with the highest request rate x build cost; the one that misses least keeps the highest
rate. This policy estimates both and keeps a balance (``value = rate x cost^0.75``), with
an adaptive recency window in front so that conversations (bursts of requests for one
agent) and shifts in popularity are followed as quickly as LRU follows them.

- **Window** (LRU order): every new entry starts here. Its size adapts as in ARC: a miss
  on an agent recently evicted from the window grows it (recency was cut short), a miss
  on one recently evicted from the main part shrinks it.
- **Main**: a heap by value. The window's oldest entry joins main only when its value is
  above that of main's cheapest entry (which then leaves); otherwise it is the one evicted.
- **Rate**: an exponentially decayed request count per agent (half-life 32 x capacity
  installs), kept in log2 form with forward decay, so values never need rescaling and
  their order does not change with time. Agents not cached keep their count (bounded:
  the table keeps the 32 x capacity highest), so a returning agent is recognised.
- **Cost**: the last build time the manager measured for the agent (bounded memory of
  32 x capacity agents); an agent never built counts the geometric mean of those seen.

The hit path calls nothing in Python: ``touch`` is a bounded ring's C-level ``append``
(an agent id per last release). The ring is read when an entry is installed or a victim
chosen: its ids update recency and counts then. If more than 8 x capacity releases
happen between two installs, the oldest are forgotten (counts become a sample).

A pinned entry found where a victim was looked for is set aside until an id in the ring
(its last release) or the store's ``idle`` brings it back; if that id was forgotten, it
comes back when nothing else can be evicted, or leaves by expiry or invalidation.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from ._values import MEMORY, Values
from ._windowed import RING, WindowedPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

COST_WEIGHT = 0.75  # value = rate x cost^COST_WEIGHT (1: least build time; 0: least misses)
HALF_LIFE = 32  # x capacity installs

__all__ = ("MEMORY", "RING", "CostAwarePolicy")


@final
class CostAwarePolicy(WindowedPolicy):
    """Window (LRU, ARC-sized) + main by decayed rate x cost^0.75 (see the module)."""

    name = "cost-aware"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        capacity = self.capacity
        self._window_target = max(1.0, capacity / 100)
        self._recent_window: OrderedDict[str, None] = OrderedDict()  # ghosts, ARC's B1
        self._recent_main: OrderedDict[str, None] = OrderedDict()  # ARC's B2
        # counts (decayed on a clock of installs of new agents) and costs
        self._values = Values(capacity, COST_WEIGHT)
        self._values.rate = 1.0 / (HALF_LIFE * capacity)

    # ------------------------------------------------------------------ what the store says

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        self._drain()
        agent_id = gen._agent_id
        if previous is not None:  # same agent, new generation: it keeps its place
            self._replace(agent_id, gen)
            return
        self._adapt(agent_id)
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
                if self._value(candidate._agent_id) > self._value(top._agent_id):
                    self._leave_main(top)
                    del self._window[candidate._agent_id]
                    self._join_main(candidate)
                    return top
                return self._leave_window(candidate)
            if candidate is not None:
                return self._leave_window(candidate)
            if top is not None:
                self._leave_main(top)
                return top
            candidate = self._window_candidate(keep, share=0.0)  # main has nothing to give
            if candidate is not None:
                return self._leave_window(candidate)
            if not self._unpark_idle():
                return None
        return None

    def victim_among(self, candidates: Sequence[Gen], keep: Gen | None) -> Gen | None:
        """Of one user's entries (the per-user quota), the one of least value (decayed
        rate x cost^0.75, what main ranks by), after applying the releases in the ring:
        O(len(candidates)). Ties go to the earlier candidate."""
        self._drain()
        best: Gen | None = None
        best_value = 0.0
        for gen in candidates:
            if gen is keep or gen.pins:
                continue
            value = self._value(gen._agent_id)
            if best is None or value < best_value:
                best, best_value = gen, value
        return best

    def order(self) -> list[Gen]:
        """Approximate (see ``WindowedPolicy._ordered``), after the releases in the ring."""
        self._drain()
        return self._ordered()

    # ---------------------------------------------------------------------------- parts

    def _drain(self) -> None:
        """Apply the releases recorded in the ring: recency in the window, counts, and the
        return of entries set aside while pinned."""
        ring = self._ring
        if not ring:
            return
        released, count = self._released, self._values.count
        for agent_id in ring:
            if released(agent_id):
                count(agent_id)
        ring.clear()

    def _leave_main(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        del self._stamp[agent_id], self._main[agent_id]  # its heap item is now stale
        self._remember(self._recent_main, agent_id)

    def _leave_window(self, gen: Gen) -> Gen:
        del self._window[gen._agent_id]
        self._remember(self._recent_window, gen._agent_id)
        return gen

    def _compact(self) -> None:
        stamp = self._stamp
        self._heap = [item for item in self._heap if stamp.get(item[2]) == item[1]]
        heapq.heapify(self._heap)

    # ------------------------------------------------------------------- value and memory

    def _value(self, agent_id: str) -> float:
        """log2(decayed count x cost^COST_WEIGHT): the order of values never changes with
        time (forward decay), only with new counts."""
        return self._values.value(agent_id)

    def _adapt(self, agent_id: str) -> None:
        """ARC's rule for the window's share, from misses on recently evicted agents."""
        b1, b2 = self._recent_window, self._recent_main
        if agent_id in b1:
            del b1[agent_id]
            step = max(1.0, len(b2) / max(1, len(b1)))
            self._window_target = min(max(1.0, self.capacity - 1.0), self._window_target + step)
        elif agent_id in b2:
            del b2[agent_id]
            step = max(1.0, len(b1) / max(1, len(b2)))
            self._window_target = max(1.0, self._window_target - step)

    def _remember(self, ghosts: OrderedDict[str, None], agent_id: str) -> None:
        ghosts[agent_id] = None
        if len(ghosts) > self.capacity:
            ghosts.popitem(last=False)

