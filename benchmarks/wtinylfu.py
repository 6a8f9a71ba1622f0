"""A W-TinyLFU that works at small sizes, as a benchmark peer (pure Python, a simulator only).

libCacheSim's W-TinyLFU sizes its window as 1% of the capacity, which rounds to no window at
all at 64 entries: every new key then has to beat the main cache's victim on frequency at
once, and almost none do (its miss ratio goes to ~1.0). This one follows Caffeine's design
(Einziger, Friedman and Manes, "TinyLFU", ACM TOS 2017) with the window at least one entry:

- a window LRU (1% of the capacity, at least 1) that every new key enters;
- a main segmented LRU: probation (20% of main) and protected (80%), a hit in probation
  promotes, protected overflow demotes its least recent entry to probation;
- a count-min sketch (4 rows of 4-bit counters, 16 counters per entry of capacity) of
  request frequencies, every counter halved after 10 x capacity increments (aging);
- admission: the window's least recent key enters main only when its estimated frequency is
  above that of main's victim (probation's least recent), else it is the one evicted.
"""

from __future__ import annotations

from collections import OrderedDict


class FrequencySketch:
    """Count-min sketch of 4-bit counters with periodic halving (TinyLFU's aging)."""

    __slots__ = ("_additions", "_mask", "_rows", "_sample")

    _SEEDS = (0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5)

    def __init__(self, capacity: int) -> None:
        width = 1
        while width < 4 * max(capacity, 16):
            width <<= 1
        self._mask = width - 1
        self._rows = [[0] * width for _ in self._SEEDS]
        self._sample = 10 * max(capacity, 1)
        self._additions = 0

    def _indexes(self, key: int) -> list[int]:
        out = []
        for seed in self._SEEDS:
            h = ((key + 1) * seed) & 0xFFFFFFFFFFFFFFFF
            h ^= h >> 29
            out.append(h & self._mask)
        return out

    def frequency(self, key: int) -> int:
        return min(row[i] for row, i in zip(self._rows, self._indexes(key), strict=True))

    def increment(self, key: int) -> None:
        indexes = self._indexes(key)
        low = min(row[i] for row, i in zip(self._rows, indexes, strict=True))
        if low >= 15:
            return
        for row, i in zip(self._rows, indexes, strict=True):
            if row[i] == low:  # conservative update
                row[i] += 1
        self._additions += 1
        if self._additions >= self._sample:
            for row in self._rows:
                row[:] = [c >> 1 for c in row]
            self._additions //= 2


class WTinyLFU:
    """``access(key) -> hit``: one request through the cache."""

    def __init__(self, capacity: int, window_share: float = 0.01) -> None:
        self.capacity = capacity
        self.window_max = max(1, round(capacity * window_share))
        main = max(capacity - self.window_max, 1)
        self.protected_max = max(1, int(main * 0.8)) if main > 1 else 0
        self.window: OrderedDict[int, None] = OrderedDict()
        self.probation: OrderedDict[int, None] = OrderedDict()
        self.protected: OrderedDict[int, None] = OrderedDict()
        self.sketch = FrequencySketch(capacity)

    def __len__(self) -> int:
        return len(self.window) + len(self.probation) + len(self.protected)

    def access(self, key: int) -> bool:
        self.sketch.increment(key)
        if key in self.window:
            self.window.move_to_end(key)
            return True
        if key in self.protected:
            self.protected.move_to_end(key)
            return True
        if key in self.probation:
            del self.probation[key]
            self.protected[key] = None
            if len(self.protected) > self.protected_max:
                demoted, _ = self.protected.popitem(last=False)
                self.probation[demoted] = None
            return True
        self.window[key] = None
        if len(self.window) > self.window_max:
            candidate, _ = self.window.popitem(last=False)
            self._admit(candidate)
        return False

    def _admit(self, candidate: int) -> None:
        if len(self) < self.capacity:
            self.probation[candidate] = None
            return
        queue = self.probation or self.protected
        victim = next(iter(queue))
        if self.sketch.frequency(candidate) > self.sketch.frequency(victim):
            del queue[victim]
            self.probation[candidate] = None
        # else the candidate is evicted (it was already taken out of the window)
