"""Adaptive eviction (issue 25): a windowed, cost-aware frequency cache that tunes itself.

The shape is W-TinyLFU's (Einziger, Friedman and Manes, "TinyLFU", ACM TOS 2017), with
cost-aware's value in main:

- **Window** (LRU order): every new entry starts here.
- **Main**: a heap by value. The window's oldest entry joins main only when its value is
  above that of main's least valued entry (which then leaves); otherwise it is the one
  evicted. So one-off agents and scans pass through the window and leave, and a loop a bit
  larger than the cache keeps most of its agents in main instead of missing on every one
  (with a margin: see ``MARGIN``).
- **Value**: log2(decayed request count) + 0.75 x log2(build cost). Counts decay with
  forward decay on a clock that advances by 1 / half-life per install of a new agent, so
  the order of values never changes with time, only with new counts, even when the
  half-life changes. Agents not cached keep their count (bounded: the table keeps the
  32 x capacity highest), so a returning agent is recognised. Cost is the agent's last
  build time (bounded memory); an agent never built counts the geometric mean of those seen.

Two parameters adapt online (``_climber.py``), one per sample of at least max(capacity,
512) requests, by hill climbing on the samples' miss rates: the window's share of the cache
(from under 1% to over 95%: conversations want a large window, Zipf traffic and loops a
small one; it climbs two samples in three, in steps that grow while they help, with a
probe x16 or / 16 when it has settled, to see across plateaus), and the half-life of the
counts (1 to 64 x capacity installs, from 32: it only probes x4 or / 4 and keeps a probe
that is clearly better, as shifting popularity may want a shorter memory). The cost weight
is cost-aware's (see ``COST_WEIGHT``).

The hit path calls nothing in Python: ``touch`` is a bounded ring's C-level ``append`` (an
agent id per last release). The ring is read when an entry is installed or a victim
chosen: its ids update recency, counts and the sample's request count then. If more than
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

from ._climber import Climber, Knob
from ._values import Values
from ._windowed import RING, WindowedPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

__all__ = ("RING", "AdaptivePolicy")

# log2: a window entry replaces main's least valued one only when worth 7% more. Decay makes
# the most recent of two agents requested alike worth a little more: without a margin a
# loop over a bit more agents than the cache holds would replace every entry (LRU's 0 hits).
MARGIN = 0.1
# Where the climb starts: log2(window / main) (4%), log2(half-life / capacity) (32x).
START = (-4.5, 5.0)
TURNS = ("window", "window", "memory")  # the knob moved after each sample, in turn
# value = log2(count) + COST_WEIGHT x log2(cost), as cost-aware's: a climbed weight (judged
# on the build time of the misses, far noisier than their number) cost 3-10% build-seconds
# on lognormal costs and saved none where the popular agents are the cheap ones.
COST_WEIGHT = 0.75


@final
class AdaptivePolicy(WindowedPolicy):
    """Window (LRU) + main by decayed count x cost^0.75, the window's share and the
    half-life climbed online (see the module)."""

    name = "adaptive"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        capacity = self.capacity
        # the climbed parameters: log2(window / main), log2(half-life / capacity)
        self._share = Knob(value=START[0], low=-7.0, high=5.0, first_step=1.0,
                           least_step=0.25, probe=4.0)
        # the memory only probes (x4 or / 4), kept when clearly better: small steps of it
        # measured as noise, and cost build-seconds on Zipf traffic
        self._memory_knob = Knob(value=START[1], low=0.0, high=6.0, first_step=0.0,
                                 least_step=0.0, probe=2.0)
        knobs = {"window": self._share, "memory": self._memory_knob}
        self._climber = Climber([knobs[name] for name in TURNS], capacity)
        self._values = Values(capacity, COST_WEIGHT)
        self._apply()
        self._requests = 0  # in the running sample
        self._misses = 0

    # ------------------------------------------------------------------ what the store says

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        self._drain()
        agent_id = gen._agent_id
        if previous is not None:  # same agent, new generation: it keeps its place
            self._replace(agent_id, gen)
            return
        self._misses += 1
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
        """What the climb has chosen so far: the window's share of the capacity, the
        half-life in installs, and the cost weight (fixed) for tests, snapshots and tuning."""
        return {
            "window": self._window_target / self.capacity,
            "half_life": 1.0 / self._values.rate,
            "cost_weight": self._values.weight,
        }

    # ------------------------------------------------------------------------ adaptation

    def _apply(self) -> None:
        """Set the parameters from the knobs' values."""
        ratio = 2.0 ** self._share.value
        self._window_target = min(max(1.0, self.capacity * ratio / (1.0 + ratio)),
                                  max(1.0, self.capacity - 1.0))
        self._values.rate = 1.0 / (self.capacity * 2.0 ** self._memory_knob.value)

    def _end_sample(self) -> None:
        if self._climber.end_sample(self._requests, self._misses):
            self._apply()
        self._requests = self._misses = 0

    # ---------------------------------------------------------------------------- parts

    def _drain(self) -> None:
        """Apply the releases recorded in the ring: recency in the window, counts, the
        return of entries set aside while pinned, and the sample's request count."""
        ring = self._ring
        if not ring:
            return
        self._requests += len(ring)
        released, count = self._released, self._values.count
        for agent_id in ring:
            if released(agent_id):
                count(agent_id)
        ring.clear()
        if self._requests >= self._climber.sample:
            self._end_sample()

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

