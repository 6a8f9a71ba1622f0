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
import math
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from ._base import EvictionPolicy
from ._climber import Climber, Knob
from ._values import Values

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

RING = 8  # releases remembered between two installs, x capacity
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
class AdaptivePolicy(EvictionPolicy):
    """Window (LRU) + main by decayed count x cost^0.75, the window's share and the
    half-life climbed online (see the module)."""

    name = "adaptive"

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
        # the climbed parameters: log2(window / main), log2(half-life / capacity)
        self._share = Knob(value=START[0], low=-7.0, high=5.0, first_step=1.0,
                           least_step=0.25, probe=4.0)
        # the memory only probes (x4 or / 4), kept when clearly better: small steps of it
        # measured as noise, and cost build-seconds on Zipf traffic
        self._memory_knob = Knob(value=START[1], low=0.0, high=6.0, first_step=0.0,
                                 least_step=0.0, probe=2.0)
        knobs = {"window": self._share, "memory": self._memory_knob}
        self._climber = Climber([knobs[name] for name in TURNS], capacity)
        self._window_target = 1.0
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
        """Approximate: the window's overflow (oldest first), main by value, the rest of the
        window, then entries set aside while pinned and released since; pinned entries are
        not candidates and are left out."""
        self._drain()
        window = list(self._window.values())
        over = max(0, len(window) - math.floor(self._window_target))
        main = sorted(self._main.values(), key=lambda g: self._values.value(g._agent_id))
        parked = [gen for gen, _ in self._parked.values()]  # released, but not seen yet
        return [g for g in window[:over] + main + window[over:] + parked if not g.pins]

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
        window, main, parked = self._window, self._main, self._parked
        count = self._values.count
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
            count(agent_id)
        ring.clear()
        if self._requests >= self._climber.sample:
            self._end_sample()

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
            self._rebuild_heap()

    def _push(self, agent_id: str) -> None:
        seq = next(self._seq)
        self._stamp[agent_id] = seq
        heapq.heappush(self._heap, (self._values.value(agent_id), seq, agent_id))

    def _rebuild_heap(self) -> None:
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
