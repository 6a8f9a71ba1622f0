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
- **Rate**: an exponentially decayed request count per agent (half-life 24 x capacity
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
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from ._base import EvictionPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

COST_WEIGHT = 0.75  # value = rate x cost^COST_WEIGHT (1: least build time; 0: least misses)
HALF_LIFE = 32  # x capacity installs
MEMORY = 64  # agents remembered (counts, costs), x capacity
RING = 8  # releases remembered between two installs, x capacity


@final
class CostAwarePolicy(EvictionPolicy):
    """Window (LRU, ARC-sized) + main by decayed rate x cost^0.75 (see the module)."""

    name = "cost-aware"

    def __init__(self, capacity: int) -> None:
        capacity = max(1, capacity)
        super().__init__(capacity)
        self._ring: deque[str] = deque(maxlen=RING * capacity + 64)
        self.touch = self._ring.append
        self._window: OrderedDict[str, Gen] = OrderedDict()  # oldest first
        self._main: dict[str, Gen] = {}
        self._heap: list[tuple[float, int, str]] = []  # (value, stamp, agent id), lazy
        self._stamp: dict[str, int] = {}  # agent id -> stamp of its live heap item
        self._dirty: set[str] = set()  # main ids counted since their heap item was made
        self._parked: dict[str, tuple[Gen, bool]] = {}  # pinned, set aside: (gen, in main)
        self._seq = itertools.count()
        self._window_target = max(1.0, capacity / 100)
        self._recent_window: OrderedDict[str, None] = OrderedDict()  # ghosts, ARC's B1
        self._recent_main: OrderedDict[str, None] = OrderedDict()  # ARC's B2
        self._ticks = 0  # installs of a new agent: the clock of the decay
        self._half_life = float(HALF_LIFE * capacity)
        self._counts: dict[str, float] = {}  # log2 of the forward-decayed count
        self._memory = MEMORY * capacity
        self._costs: OrderedDict[str, float] = OrderedDict()  # log2 ms, most recent last
        self._log_cost_sum = 0.0
        self._costs_seen = 0

    # ------------------------------------------------------------------ what the store says

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        self._drain()
        agent_id = gen._agent_id
        if previous is not None:  # same agent, new generation: it keeps its place
            self._replace(agent_id, gen)
            return
        self._ticks += 1  # counted when released (the ring), like every request
        self._adapt(agent_id)
        self._window[agent_id] = gen
        if len(self._counts) > self._memory + self.capacity:
            self._forget()

    def removed(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        self._window.pop(agent_id, None)
        self._main.pop(agent_id, None)
        self._stamp.pop(agent_id, None)
        self._dirty.discard(agent_id)
        self._parked.pop(agent_id, None)

    def idle(self, gen: Gen) -> None:
        self._ring.append(gen._agent_id)

    def learn_cost(self, agent_id: str, ms: float) -> None:
        log_ms = math.log2(max(float(ms), 1.0))
        costs = self._costs
        costs[agent_id] = log_ms
        costs.move_to_end(agent_id)
        if len(costs) > self._memory:
            costs.popitem(last=False)
        self._log_cost_sum += log_ms
        self._costs_seen += 1

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
        """Approximate: the window's overflow (oldest first), main by value, the rest of the
        window, then entries set aside while pinned and released since; pinned entries are
        not candidates and are left out."""
        self._drain()
        window = list(self._window.values())
        over = max(0, len(window) - math.floor(self._window_target))
        main = sorted(self._main.values(), key=lambda g: self._value(g._agent_id))
        parked = [gen for gen, _ in self._parked.values()]  # released, but not seen yet
        return [g for g in window[:over] + main + window[over:] + parked if not g.pins]

    # ---------------------------------------------------------------------------- parts

    def _drain(self) -> None:
        """Apply the releases recorded in the ring: recency in the window, counts, and the
        return of entries set aside while pinned."""
        ring = self._ring
        if not ring:
            return
        window, main, parked = self._window, self._main, self._parked
        for agent_id in ring:
            if agent_id in window:
                window.move_to_end(agent_id)
            elif agent_id in main:
                self._dirty.add(agent_id)
            elif agent_id in parked:
                gen, in_main = parked[agent_id]
                if gen.pins:
                    continue
                del parked[agent_id]
                if in_main:
                    self._join_main(gen)
                else:
                    window[agent_id] = gen
            else:
                continue
            self._count(agent_id, 1)
        ring.clear()

    def _replace(self, agent_id: str, gen: Gen) -> None:
        if agent_id in self._window:
            self._window[agent_id] = gen
            self._window.move_to_end(agent_id)
        elif agent_id in self._main:
            self._main[agent_id] = gen
        elif agent_id in self._parked:  # the old one is pinned; the new one is not
            if self._parked.pop(agent_id)[1]:
                self._join_main(gen)
            else:
                self._window[agent_id] = gen
        else:  # not known (cannot happen through the store): a new entry
            self._window[agent_id] = gen

    def _fill_main(self, keep: Gen | None) -> None:
        """While main has room for its share, the window's oldest entries move in."""
        window = self._window
        while len(window) > self._window_target and len(self._main) + self._window_target < (
            self.capacity
        ):
            candidate = self._window_candidate(keep)
            if candidate is None:
                return
            del window[candidate._agent_id]
            self._join_main(candidate)

    def _window_candidate(self, keep: Gen | None, share: float | None = None) -> Gen | None:
        """The window's oldest evictable entry, while the window is above ``share``
        (default: its adaptive share)."""
        window = self._window
        limit = self._window_target if share is None else share
        while len(window) > limit:
            agent_id, gen = next(iter(window.items()))
            if gen is keep:  # the newest entry, wherever it is
                if len(window) == 1:
                    return None
                window.move_to_end(agent_id)
                continue
            if not gen.pins:
                return gen
            del window[agent_id]
            self._parked[agent_id] = (gen, False)
        return None

    def _main_min(self, keep: Gen | None) -> Gen | None:
        """Main's entry of least value (recounted lazily), pinned ones set aside, never
        ``keep`` (a new generation of an agent in main keeps its place)."""
        heap, stamp, dirty, main = self._heap, self._stamp, self._dirty, self._main
        held: tuple[float, int, str] | None = None
        found: Gen | None = None
        while heap:
            _, seq, agent_id = heap[0]
            if stamp.get(agent_id) != seq:
                heapq.heappop(heap)  # stale: left main or was pushed again since
                continue
            if agent_id in dirty:
                dirty.discard(agent_id)
                heapq.heappop(heap)
                self._push(agent_id)
                continue
            gen = main[agent_id]
            if gen is keep:
                held = heapq.heappop(heap)
                continue
            if gen.pins:
                heapq.heappop(heap)
                del stamp[agent_id], main[agent_id]
                self._parked[agent_id] = (gen, True)
                continue
            found = gen
            break
        if held is not None:
            heapq.heappush(heap, held)
        return found

    def _join_main(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        self._main[agent_id] = gen
        self._dirty.discard(agent_id)
        self._push(agent_id)
        if len(self._heap) > 2 * len(self._main) + 64:
            self._compact()

    def _push(self, agent_id: str) -> None:
        seq = next(self._seq)
        self._stamp[agent_id] = seq
        heapq.heappush(self._heap, (self._value(agent_id), seq, agent_id))

    def _leave_main(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        del self._stamp[agent_id], self._main[agent_id]  # its heap item is now stale
        self._remember(self._recent_main, agent_id)

    def _leave_window(self, gen: Gen) -> Gen:
        del self._window[gen._agent_id]
        self._remember(self._recent_window, gen._agent_id)
        return gen

    def _check_one_parked(self) -> None:
        """Look at the oldest entry set aside (one per victim, in turn): back if unpinned.
        So an entry whose release the ring forgot is back within len(parked) evictions."""
        parked = self._parked
        agent_id = next(iter(parked))
        gen, in_main = parked.pop(agent_id)
        if gen.pins:
            parked[agent_id] = (gen, in_main)  # to the end of the turn
        elif in_main:
            self._join_main(gen)
        else:
            self._window[agent_id] = gen

    def _unpark_idle(self) -> bool:
        """Nothing else to evict: bring back entries set aside whose release was forgotten."""
        idle = [agent_id for agent_id, (gen, _) in self._parked.items() if not gen.pins]
        for agent_id in idle:
            gen, in_main = self._parked.pop(agent_id)
            if in_main:
                self._join_main(gen)
            else:
                self._window[agent_id] = gen
                self._window.move_to_end(agent_id, last=False)
        return bool(idle)

    def _compact(self) -> None:
        stamp = self._stamp
        self._heap = [item for item in self._heap if stamp.get(item[2]) == item[1]]
        heapq.heapify(self._heap)

    # ------------------------------------------------------------------- value and memory

    def _value(self, agent_id: str) -> float:
        """log2(decayed count x cost^COST_WEIGHT): the order of values never changes with
        time (forward decay), only with new counts."""
        return self._counts.get(agent_id, -math.inf) + COST_WEIGHT * self._log_cost(agent_id)

    def _log_cost(self, agent_id: str) -> float:
        """log2 of the last build time of the agent, or of the geometric mean of all the
        build times seen (a neutral cost) when it was never built."""
        log_cost = self._costs.get(agent_id)
        if log_cost is None:
            return self._log_cost_sum / self._costs_seen if self._costs_seen else 0.0
        return log_cost

    def _count(self, agent_id: str, n: int) -> None:
        """One more request now: count = count + n x 2^(ticks / half-life), in log2."""
        x = self._ticks / self._half_life + math.log2(n)
        old = self._counts.get(agent_id)
        if old is None:
            self._counts[agent_id] = x
        elif old >= x:
            self._counts[agent_id] = old + math.log2(1.0 + 2.0 ** (x - old))
        else:
            self._counts[agent_id] = x + math.log2(1.0 + 2.0 ** (old - x))

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

    def _forget(self) -> None:
        """Keep the counts of cached agents and of the best half of the others."""
        counts = self._counts
        cached = {a: counts[a] for a in itertools.chain(self._window, self._main, self._parked)
                  if a in counts}
        others = sorted((c, a) for a, c in counts.items() if a not in cached)
        keep = others[len(others) - self._memory // 2:] if self._memory // 2 else []
        cached.update((a, c) for c, a in keep)
        self._counts = cached
