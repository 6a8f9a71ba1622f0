"""Shadow caches: scaled-down copies of the adaptive policy, each with fixed parameters, that
the tuner runs on a sample of the requests to see which parameters would have cost least.

A shadow holds agent ids only (no runtimes, no pins): a window in LRU order, a main part
kept as a lazy heap by value, and its own decayed request counts (``Values``) valued with
the cache's build costs. It follows the same rules as ``AdaptivePolicy.victim``: the
window's oldest entry joins main only when worth ``MARGIN`` more than main's least valued
one. Comparing shadows that see the same requests (paired, not one sample after another)
is what lets the tuner decide from a few hundred requests.
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from typing import final

from ._values import Values

# log2: a window entry replaces main's least valued one only when worth 7% more. Decay makes
# the most recent of two agents requested alike worth a little more: without a margin a
# loop over a bit more agents than the cache holds would replace every entry (LRU's 0 hits).
MARGIN = 0.1


def window_size(capacity: int, share: float) -> float:
    """The window's target size: at least 1 entry, and main keeps at least 1."""
    return min(max(1.0, capacity * share), max(1.0, capacity - 1.0))


@final
class Shadow:
    """One simulated cache of ``capacity`` agent ids; ``cost`` and ``misses`` are the build
    milliseconds and misses it would have had, decayed by the tuner."""

    __slots__ = ("_heap", "_pushed", "_seq", "_target", "capacity", "cost", "main", "memory",
                 "misses", "share", "values", "window")

    def __init__(self, capacity: int, share: float, memory: float, values: Values) -> None:
        self.capacity = capacity
        self.window: OrderedDict[str, None] = OrderedDict()  # oldest first
        self.main: set[str] = set()
        self._heap: list[tuple[float, int, str]] = []  # (value, stamp, id), lazy
        self._pushed: dict[str, float] = {}  # main id -> the value its live item was pushed at
        self._seq = itertools.count()
        self.values = values
        self.cost = 0.0
        self.misses = 0.0
        self.share = share
        self.memory = memory
        self._target = window_size(capacity, share)
        values.rate = 1.0 / (capacity * memory)

    def twin(self, share: float, weight: float, memory: float) -> Shadow:
        """A copy of this shadow (contents, counts, scores) with other parameters: a new
        candidate starts warm, so it is judged on its parameters and not on its start."""
        twin = Shadow(self.capacity, share, memory, self.values.copy())
        twin.window = OrderedDict(self.window)
        twin.main = set(self.main)
        twin.cost, twin.misses = self.cost, self.misses
        twin.values.weight = -1.0  # so that retune() rebuilds the heap
        twin.retune(share, weight, memory)
        return twin

    @property
    def weight(self) -> float:
        return self.values.weight

    def retune(self, share: float, weight: float, memory: float) -> None:
        self.share, self.memory = share, memory
        self._target = window_size(self.capacity, share)
        self.values.rate = 1.0 / (self.capacity * memory)
        if weight != self.values.weight:  # the values change order: the heap is made again
            self.values.weight = weight
            self._rebuild()

    def request(self, agent_id: str, cost_ms: float) -> None:
        """One request: a hit moves it in the window; a miss is paid for, installed, and
        evicts; then it is counted (the policy counts at the release, after the install)."""
        window = self.window
        if agent_id in window:
            window.move_to_end(agent_id)
        elif agent_id not in self.main:
            self.cost += cost_ms
            self.misses += 1.0
            self.values.installed(itertools.chain(window, self.main), self.capacity)
            window[agent_id] = None
            if len(window) + len(self.main) > self.capacity:
                self._evict(agent_id)
        self.values.count(agent_id)

    # ---------------------------------------------------------------------------- parts

    def _evict(self, new: str) -> None:
        window, main, target = self.window, self.main, self._target
        while len(window) > target and len(main) + target < self.capacity:
            oldest = next(iter(window))
            if oldest == new:
                break
            del window[oldest]
            self._join(oldest)
        candidate = next(iter(window)) if len(window) > target else None
        if candidate == new:
            candidate = None
        top = self._least() if main else None
        if candidate is not None:
            del window[candidate]
            if top is not None and self.values.value(candidate) > self.values.value(top) + MARGIN:
                self._leave(top)
                self._join(candidate)
        elif top is not None:
            self._leave(top)
        else:  # everything is in the window (a window of the whole shadow)
            oldest = next(agent_id for agent_id in window if agent_id != new)
            del window[oldest]

    def _join(self, agent_id: str) -> None:
        self.main.add(agent_id)
        self._push(agent_id)

    def _leave(self, agent_id: str) -> None:
        self.main.discard(agent_id)
        del self._pushed[agent_id]  # its heap items are now stale

    def _push(self, agent_id: str) -> None:
        value = self.values.value(agent_id)
        self._pushed[agent_id] = value
        heapq.heappush(self._heap, (value, next(self._seq), agent_id))
        if len(self._heap) > 2 * len(self.main) + 64:
            self._rebuild()

    def _least(self) -> str | None:
        """Main's id of least value; items pushed before a recount are pushed again."""
        heap, pushed, value = self._heap, self._pushed, self.values.value
        while heap:
            old, _, agent_id = heap[0]
            if pushed.get(agent_id) != old:
                heapq.heappop(heap)  # left main, or pushed again since
                continue
            now = value(agent_id)
            if now != old:  # counted since: its value only grew
                pushed[agent_id] = now
                heapq.heapreplace(heap, (now, next(self._seq), agent_id))
                continue
            return agent_id
        return None

    def _rebuild(self) -> None:
        value = self.values.value
        self._pushed = {agent_id: value(agent_id) for agent_id in self.main}
        self._heap = [(v, next(self._seq), agent_id) for agent_id, v in self._pushed.items()]
        heapq.heapify(self._heap)
