"""The window-and-main shape that ``cost-aware`` and ``adaptive`` share: an LRU window in front
of a main part kept as a heap by value, entries set aside while pinned, and a ring of releases.

Each policy says how an agent is valued (``_value``), how large the window may be
(``_window_target``), how a victim is chosen between the window's oldest entry and main's
least valued one, and how the heap is compacted; this base keeps the structures and the
moves between them, so the two cannot drift apart.
"""

from __future__ import annotations

import heapq
import itertools
from abc import abstractmethod
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from ._base import EvictionPolicy

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]

RING = 8  # releases remembered between two installs, x capacity


class WindowedPolicy(EvictionPolicy):
    """Window (LRU order, oldest first) + main (a lazy heap by ``_value``) + the parked."""

    def __init__(self, capacity: int) -> None:
        capacity = max(1, capacity)
        super().__init__(capacity)
        # The hit path's only call: a C-level append of the agent id at each last release.
        self._ring: deque[str] = deque(maxlen=RING * capacity + 64)
        self.touch = self._ring.append
        self._window: OrderedDict[str, Gen] = OrderedDict()  # oldest first
        self._main: dict[str, Gen] = {}
        self._heap: list[tuple[float, int, str]] = []  # (value, stamp, agent id), lazy
        self._stamp: dict[str, int] = {}  # agent id -> stamp of its live heap item
        self._dirty: set[str] = set()  # main ids counted since their heap item was made
        self._parked: dict[str, tuple[Gen, bool]] = {}  # pinned, set aside: (gen, in main)
        self._seq = itertools.count()
        self._window_target = 1.0

    @abstractmethod
    def _value(self, agent_id: str) -> float:
        """What main ranks by (least valued leaves first)."""

    @abstractmethod
    def _compact(self) -> None:
        """Drop the heap's stale items once they pile up (called from ``_join_main``)."""

    # ------------------------------------------------------------------ what the store says

    def removed(self, gen: Gen) -> None:
        agent_id = gen._agent_id
        self._window.pop(agent_id, None)
        self._main.pop(agent_id, None)
        self._stamp.pop(agent_id, None)
        self._dirty.discard(agent_id)
        self._parked.pop(agent_id, None)

    def idle(self, gen: Gen) -> None:
        self._ring.append(gen._agent_id)

    # ---------------------------------------------------------------------------- parts

    def _released(self, agent_id: str) -> bool:
        """One release read from the ring: recency in the window, a recount in main, or the
        return of an entry set aside while pinned. False for an agent not cached (or still
        pinned): its release counts for nothing."""
        window, parked = self._window, self._parked
        if agent_id in window:
            window.move_to_end(agent_id)
        elif agent_id in self._main:
            self._dirty.add(agent_id)
        elif agent_id in parked:
            gen, in_main = parked[agent_id]
            if gen.pins:
                return False
            del parked[agent_id]
            if in_main:
                self._join_main(gen)
            else:
                window[agent_id] = gen
        else:
            return False
        return True

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

    def _ordered(self) -> list[Gen]:
        """Approximate eviction order: the window's overflow (oldest first), main by value,
        the rest of the window, then entries set aside while pinned and released since;
        pinned entries are not candidates and are left out."""
        window = list(self._window.values())
        over = max(0, len(window) - int(self._window_target))
        main = sorted(self._main.values(), key=lambda g: self._value(g._agent_id))
        parked = [gen for gen, _ in self._parked.values()]  # released, but not seen yet
        return [g for g in window[:over] + main + window[over:] + parked if not g.pins]
