"""Least recently used: the order the cache has always had."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, final

from ._base import EvictionPolicy

if TYPE_CHECKING:
    from .._store import _Generation

    Gen = _Generation[Any, Any]


@final
class LruPolicy(EvictionPolicy):
    """Agent ids least recently used first; an entry moves to the end when installed and
    when its last pin is released (it was in use until then).

    Pinned entries are not moved on a hit: when one reaches the head, ``victim`` drops it
    from the order (its last release puts it back), so each pin costs eviction at most
    one skip.
    """

    name = "lru"

    def __init__(self, capacity: int) -> None:
        super().__init__(capacity)
        self.recency: OrderedDict[str, Gen] = OrderedDict()
        self.touch = self.recency.move_to_end  # KeyError: dropped while pinned, see idle

    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        recency = self.recency
        if previous is not None:
            recency.pop(gen._agent_id, None)
        recency[gen._agent_id] = gen

    def removed(self, gen: Gen) -> None:
        self.recency.pop(gen._agent_id, None)

    def idle(self, gen: Gen) -> None:
        try:  # most recently used: it was in use until now
            self.recency.move_to_end(gen._agent_id)
        except KeyError:  # dropped from the order while pinned
            self.recency[gen._agent_id] = gen

    def victim(self, keep: Gen | None) -> Gen | None:
        recency = self.recency
        while recency:
            agent_id = next(iter(recency))
            gen = recency[agent_id]
            if not gen.pins:
                return None if gen is keep else gen
            del recency[agent_id]  # pinned: its last release puts it back, most recent
        return None

    def order(self) -> list[Gen]:
        """Idle entries least recently used first (pinned ones are not candidates)."""
        return [gen for gen in self.recency.values() if not gen.pins]
