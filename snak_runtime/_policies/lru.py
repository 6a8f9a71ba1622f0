"""Least recently used: the order the cache has always had."""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, final

from ._base import EvictionPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

RING = 8  # with ranks: last releases remembered between two calls, x capacity (+ 1024)


@final
class LruPolicy(EvictionPolicy):
    """Agent ids least recently used first; an entry moves to the end when installed and
    when its last pin is released (it was in use until then).

    Pinned entries are not moved on a hit: when one reaches the head, ``victim`` drops it
    from the order (its last release puts it back), so each pin costs eviction at most
    one skip.

    Ranks (``keep_ranks``, for the per-user quota): every move to the end also stamps the
    id with a rising number, so the least recent of a few given entries is the one with
    the lowest stamp, found without walking the order. The release hot path cannot afford
    a Python call, so ``touch`` becomes a bounded ring's C-level ``append`` and the ring is
    applied (move, stamp) at the start of every other call. If more than ``RING`` x capacity
    releases happen between two calls, the oldest are forgotten: those entries keep their
    older place (entries released since are still ordered exactly).
    """

    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.recency: OrderedDict[str, Gen] = OrderedDict()
        self.touch = self.recency.move_to_end  # KeyError: dropped while pinned, see idle
        self._ranked = False
        self._ring: deque[str] = deque(maxlen=RING * max(1, capacity) + 1024)
        self._stamps: dict[str, int] = {}
        self._seq = itertools.count()
        self._dropped: dict[str, Gen] = {}  # taken out of the order while pinned

    def keep_ranks(self) -> None:
        self._ranked = True
        self.touch = self._ring.append
        for agent_id in self.recency:
            self._stamps[agent_id] = next(self._seq)

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        if self._ranked:
            self.drain()
        agent_id = gen._agent_id
        recency = self.recency
        if previous is not None:
            recency.pop(agent_id, None)
            self._dropped.pop(agent_id, None)
        recency[agent_id] = gen
        if self._ranked:
            self._stamps[agent_id] = next(self._seq)

    def removed(self, gen: Gen) -> None:
        if self._ranked:
            self.drain()
            self._stamps.pop(gen._agent_id, None)
        self.recency.pop(gen._agent_id, None)
        self._dropped.pop(gen._agent_id, None)

    def idle(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        if self._ranked:
            self.drain()
            self._stamps[agent_id] = next(self._seq)
        try:  # most recently used: it was in use until now
            self.recency.move_to_end(agent_id)
        except KeyError:  # dropped from the order while pinned
            self.recency[agent_id] = gen
            self._dropped.pop(agent_id, None)

    def victim(self, keep: Gen | None) -> Gen | None:
        if self._ranked:
            self.drain()
        recency = self.recency
        while True:
            while recency:
                agent_id = next(iter(recency))
                gen = recency[agent_id]
                if not gen.pins:
                    return None if gen is keep else gen
                del recency[agent_id]  # pinned: its last release puts it back, most recent
                self._dropped[agent_id] = gen
            if not self._ranked or not self._undrop():
                return None

    def victim_among(self, candidates: Sequence[Gen], keep: Gen | None) -> Gen | None:
        """With ranks: the candidate least recently used, O(len(candidates))."""
        if not self._ranked:
            return super().victim_among(candidates, keep)
        self.drain()
        stamps = self._stamps
        best: Gen | None = None
        best_stamp = 0
        for gen in candidates:
            if gen is keep or gen.pins:
                continue
            stamp = stamps.get(gen._agent_id, -1)
            if best is None or stamp < best_stamp:
                best, best_stamp = gen, stamp
        return best

    def order(self) -> list[Gen]:
        """Idle entries least recently used first (pinned ones are not candidates)."""
        if self._ranked:
            self.drain()
        return [gen for gen in self.recency.values() if not gen.pins]

    def drain(self) -> None:
        """Apply the releases the ring recorded, oldest first (every hook starts with it;
        readers of ``recency`` call it first)."""
        ring = self._ring
        if not ring:
            return
        recency, stamps, dropped, seq = self.recency, self._stamps, self._dropped, self._seq
        for agent_id in ring:
            if agent_id in recency:
                recency.move_to_end(agent_id)
            elif agent_id in dropped:
                gen = dropped[agent_id]
                if gen.pins:
                    continue
                del dropped[agent_id]
                recency[agent_id] = gen
            else:
                continue
            stamps[agent_id] = next(seq)
        ring.clear()

    def _undrop(self) -> bool:
        """Entries dropped while pinned whose last release the ring forgot: back in the
        order (least recent first); whether any came back."""
        back = [(self._stamps.get(a, -1), a) for a, g in self._dropped.items() if not g.pins]
        for _, agent_id in sorted(back):
            self.recency[agent_id] = self._dropped.pop(agent_id)
        return bool(back)
