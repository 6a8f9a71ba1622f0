"""The eviction-policy interface: which entry leaves when the cache is over capacity.

The store owns one policy and tells it about every change of the map; the manager never
reorders anything itself. Every hook is synchronous and O(1) amortized, never awaits and
never disposes: the store decides, the manager disposes. The hit path makes no call at
all: a hit is not reported to the policy. It only counts ``gen.hits += 1`` on the
generation (``EntryInfo.hits``, issue 18: measured 0-4% on the hit path), which a policy
may read lazily.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from .._generation import _Generation

    Gen = _Generation[Any, Any]


class EvictionPolicy(ABC):
    """Decides the eviction order of the current generations (one per agent id).

    Memory a policy keeps about agents that are not cached (ghosts, frequencies, costs)
    must stay bounded in proportion to ``capacity``.
    """

    name: ClassVar[str]
    # False: the policy ignores ``idle`` and the release path skips the call.
    wants_idle: ClassVar[bool] = True

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        # The release hot path's form of ``idle``, called with the agent id: it does what
        # ``idle`` would do with that id's current generation, or raises KeyError, and then
        # ``idle(gen)`` is called. A Python call here costs the hot path 10-30%, so a
        # policy that wants ``idle`` should set a C-level callable (LRU: its OrderedDict's
        # ``move_to_end``). The default always defers to ``idle`` (an exception per release).
        self.touch: Callable[[str], object] = _DEFER_TO_IDLE

    @abstractmethod
    def inserted(self, gen: Gen, previous: Gen | None) -> None:
        """``gen`` just became the current generation of its agent id; ``previous`` is the
        generation it replaced (same id), or None. Per-id state may be carried over."""

    @abstractmethod
    def removed(self, gen: Gen) -> None:
        """A current generation left the map for any reason other than being replaced."""

    @abstractmethod
    def idle(self, gen: Gen) -> None:
        """The last pin of ``gen`` (current and live) was just released."""

    @abstractmethod
    def victim(self, keep: Gen | None) -> Gen | None:
        """The next generation to evict: never a pinned one and never ``keep`` (the one
        just installed); None when no such entry is left."""

    @abstractmethod
    def order(self) -> list[Gen]:
        """The current eviction order, next victim first (for snapshots; may scan)."""

    def learn_cost(self, agent_id: str, ms: float) -> None:  # noqa: B027 - optional hook
        """A build or rebuild of ``agent_id`` took ``ms`` on the manager's clock."""

    def keep_ranks(self) -> None:  # noqa: B027 - optional hook
        """Called once by a manager with a per-user quota, before its first install: from
        then on ``victim_among`` should cost O(len(candidates)). A policy may change
        ``touch`` here (the manager reads it afterwards)."""

    def victim_among(self, candidates: Sequence[Gen], keep: Gen | None) -> Gen | None:
        """Of ``candidates`` (current generations: one user's entries), the one this policy
        values least: never a pinned one and never ``keep``; None when no such entry.

        The per-user quota evicts through this. The default walks ``order()``, O(entries):
        a policy overrides it to cost O(len(candidates)) once ``keep_ranks`` was called.
        """
        wanted = {id(gen) for gen in candidates if gen is not keep and not gen.pins}
        if not wanted:
            return None
        for gen in self.order():
            if id(gen) in wanted:
                return gen
        # order() may leave out entries it is not tracking: any candidate then
        return next(gen for gen in candidates if id(gen) in wanted)


_NOTHING: dict[str, object] = {}
_DEFER_TO_IDLE: Callable[[str], object] = _NOTHING.__getitem__  # KeyError: call idle(gen)
