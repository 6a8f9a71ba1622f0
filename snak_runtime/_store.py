"""Generations, eviction order and expiry queues: synchronous, never awaits or disposes.

The store decides *what* leaves the map (asking its eviction policy which entry goes
next) and which agent objects become orphaned; the manager is told through two
callbacks and does the disposing and notifying.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from typing import Any, Generic, TypeVar, final

from ._generation import _Generation, _IdleGeneration
from ._policies import EvictionPolicy, LruPolicy
from ._seed import RuntimeSeed
from ._stats import RemovalCause

R = TypeVar("R")
A = TypeVar("A")

# Rebuild the heap once stale items outnumber live ones (and there are enough to matter).
_COMPACT_MIN_STALE = 64


OnRemoved = Callable[[str, RemovalCause], None]
OnOrphaned = Callable[[str, Any], None]


@final
class _Store(Generic[R, A]):
    """The cache's data structures. Every method is O(1) amortized or O(log n).

    ``current`` maps an agent id to its current generation. ``policy`` (LRU by default)
    orders them for eviction: the store tells it of every install and removal, the
    manager of every last release (``policy.idle``). ``detached`` keeps superseded
    generations that are still pinned, oldest first, until their last pin goes.
    ``by_user`` indexes the current agent ids of each user, so ``evict_user`` touches only
    that user's entries. It is built by the first ``evict_user`` (one pass over the map)
    and kept from then on by install and removal, never by a read: a cache that never
    evicts by user does not pay for it (keeping it costs an install about 15%). A manager
    with a per-user quota builds it at once (``index_users``): the quota reads it at every
    install.

    departure: the original kept one mutable entry per id (a release after a rebuild
    decremented the new entry's count) and scanned every entry on every call.

    Expiry: entries on the default TTL expire in install order, so a FIFO holds them (no
    per-entry heap item); entries with a TTL of their own (or a jittered one) go to a heap.
    Both delete lazily.

    Idle expiry (``idle_ticks`` > 0): every entry goes to the TTL heap, and a second heap
    is keyed on a lower bound of each entry's idle deadline (``last_used + idle_ticks``).
    ``last_used`` only moves forward, and a release moves it without touching the heap, so
    a popped item is re-checked and, if the entry was used since, pushed again at its true
    deadline: at most one item per entry and one push per pop, O(log n) each. An entry whose
    idle deadline is not before its TTL deadline has no item (it cannot go idle first).
    Items of removed entries are dropped when popped, or by a rebuild once they could
    outnumber the entries.
    """

    __slots__ = (
        "_agents",
        "_fifo",
        "_heap",
        "_idle_heap",
        "_on_orphaned",
        "_on_removed",
        "_seq",
        "_stale",
        "by_user",
        "current",
        "detached",
        "idle_ticks",
        "policy",
    )

    def __init__(
        self,
        on_removed: OnRemoved,
        on_orphaned: OnOrphaned,
        policy: EvictionPolicy | None = None,
        *,
        idle_ticks: int = 0,
    ) -> None:
        self.current: dict[str, _Generation[R, A]] = {}
        self.idle_ticks = idle_ticks  # 0: idle expiry off
        self._idle_heap: list[tuple[int, int, _Generation[R, A]]] = []
        self.policy: EvictionPolicy = policy if policy is not None else LruPolicy(0)
        self.detached: dict[str, list[_Generation[R, A]]] = {}
        self.by_user: dict[str, set[str]] | None = None  # see user_agent_ids
        self._fifo: deque[_Generation[R, A]] = deque()
        self._heap: list[tuple[int, int, _Generation[R, A]]] = []
        self._stale = 0  # queued expiry items whose generation left the map
        # id(agent) -> number of unfinished generations holding it (they keep it alive, so
        # the id cannot be reused while it is a key here)
        self._agents: dict[int, int] = {}
        self._seq = itertools.count()
        self._on_removed = on_removed
        self._on_orphaned = on_orphaned

    def install(
        self,
        seed: RuntimeSeed[R, A],
        expires_at: int,
        old_cause: RemovalCause | None,
        *,
        in_order: bool = False,
        installed_at: int = 0,
        build_ms: float | None = None,
    ) -> _Generation[R, A]:
        """Make ``seed`` the current generation; the old one (if any) leaves with ``old_cause``.

        ``expires_at`` is its TTL deadline; ``now`` starts its idle time (idle expiry only).

        ``old_cause=None`` is a same-version refresh: the old generation is superseded
        silently (no removal is reported), but still detached so its pins stay exact.
        ``in_order`` says the entry expires no earlier than every entry installed before it
        with ``in_order`` (the default TTL), so it can join the FIFO instead of the heap.
        ``build_ms`` is how long the build or rebuild of ``seed`` took; None (a seed from
        ``shadow_seed``) keeps what is known of the agent id's last build.
        """
        agent_id = seed.agent_id
        old = self.current.get(agent_id)
        idle = self.idle_ticks
        gen = (
            _IdleGeneration(seed, expires_at, installed_at)
            if idle
            else _Generation(seed, expires_at, installed_at)
        )
        agent = seed.agent
        if agent is not None:
            agents = self._agents
            agents[id(agent)] = agents.get(id(agent), 0) + 1
        if old is not None:
            gen.last_build_ms = old.last_build_ms if build_ms is None else build_ms
            self._take_out(old, old_cause)
        else:
            gen.last_build_ms = build_ms
        self.current[agent_id] = gen
        by_user = self.by_user
        if by_user is not None:
            ids = by_user.get(seed.user_id)
            if ids is None:
                by_user[seed.user_id] = {agent_id}
            else:
                ids.add(agent_id)
        self.policy.inserted(gen, old)
        if in_order and not idle:  # (kept from idle: an idle entry always joins the heap)
            self._fifo.append(gen)
        else:
            heapq.heappush(self._heap, (expires_at, next(self._seq), gen))
        if idle:
            idle_at = installed_at + idle
            if idle_at < expires_at:
                gen.expires_at = idle_at
                self._push_idle(idle_at, gen)
        return gen

    def _push_idle(self, idle_at: int, gen: _Generation[R, A]) -> None:
        heap = self._idle_heap
        heapq.heappush(heap, (idle_at, next(self._seq), gen))
        if len(heap) > 2 * len(self.current) + _COMPACT_MIN_STALE:
            self._idle_heap = [item for item in heap if item[2].current]
            heapq.heapify(self._idle_heap)

    def cause(self, gen: _Generation[R, A], now: int) -> RemovalCause | None:
        """Why the current ``gen`` is no longer live at ``now``, or None if it still is.

        Called once ``now >= gen.expires_at``: with idle expiry on, that may only be the
        lower bound of its idle deadline, which is then moved to the true one. An entry in
        use (pinned) never goes idle. When both deadlines have passed, the earlier one
        names the cause (the TTL on a tie).
        """
        deadline = gen.deadline
        if not isinstance(gen, _IdleGeneration):
            # (before the deadline, ``expires_at`` was refresh-ahead's ``refresh_at``: kept)
            return RemovalCause.EXPIRED if now >= deadline else None
        # the hot path's bound never passes an open refresh-ahead window
        upper = gen.refresh_at or deadline
        idle = self.idle_ticks
        if not gen.pins:
            idle_at = gen.last_used + idle
            if idle_at < deadline:
                if now >= idle_at:
                    return RemovalCause.IDLE
                gen.expires_at = min(idle_at, upper)
                return None
        if now >= deadline:
            return RemovalCause.EXPIRED
        # pinned: not idle before its release, which is later than now
        gen.expires_at = min(upper, now + idle)
        return None

    def detach(self, gen: _Generation[R, A], cause: RemovalCause | None) -> None:
        """Take ``gen`` out of the map; its agent is orphaned now or at its last release."""
        self.policy.removed(gen)
        self._take_out(gen, cause)

    def _take_out(self, gen: _Generation[R, A], cause: RemovalCause | None) -> None:
        """Detach without telling the policy (a replaced generation: ``inserted`` says it)."""
        agent_id = gen._agent_id
        del self.current[agent_id]
        gen.current = False
        by_user = self.by_user
        if by_user is not None:
            ids = by_user[gen._user_id]
            ids.discard(agent_id)
            if not ids:
                del by_user[gen._user_id]
        if gen.in_expiry:
            self._stale += 1
            if (
                self._stale > _COMPACT_MIN_STALE
                and self._stale * 2 > len(self._heap) + len(self._fifo)
            ):
                self._compact()
        if cause is not None:
            self._on_removed(agent_id, cause)
        if gen.pins:
            self.detached.setdefault(agent_id, []).append(gen)
        else:
            self.finish(gen)

    def drop_detached(self, gen: _Generation[R, A]) -> None:
        """A detached generation lost its last pin."""
        pinned = self.detached[gen._agent_id]
        pinned.remove(gen)
        if not pinned:
            del self.detached[gen._agent_id]
        self.finish(gen)

    def finish(self, gen: _Generation[R, A]) -> None:
        """Give up ``gen``'s hold on its agent; orphan the agent when no generation holds it."""
        if gen.finished:
            return
        gen.finished = True
        agent = gen._agent
        if agent is None:
            return
        holders = self._agents[id(agent)] - 1
        if holders:
            self._agents[id(agent)] = holders
        else:
            del self._agents[id(agent)]
            self._on_orphaned(gen._agent_id, agent)

    def owns(self, agent: object) -> bool:
        """Whether some unfinished generation holds ``agent`` (by identity)."""
        return id(agent) in self._agents

    def pop_expired(self, now: int, limit: int) -> int:
        """Remove up to ``limit`` expired idle generations, soonest first; return how many
        queued items were consumed (stale and pinned ones included)."""
        consumed = 0
        while consumed < limit:
            fifo, heap, idle = self._fifo, self._heap, self._idle_heap  # detach() may compact
            if (
                idle
                and idle[0][0] <= now
                and (not fifo or idle[0][0] < fifo[0].deadline)
                and (not heap or idle[0][0] < heap[0][0])
            ):
                consumed += 1
                self._pop_idle(now)
                continue
            if fifo and (not heap or fifo[0].deadline <= heap[0][0]):
                if fifo[0].deadline > now:
                    break
                gen = fifo.popleft()
            elif heap and heap[0][0] <= now:
                gen = heapq.heappop(heap)[2]
            else:
                break
            consumed += 1
            gen.in_expiry = False
            if not gen.current:
                self._stale -= 1
            elif gen.pins == 0:
                # an idle entry whose idle item was not reached yet (the sweep's limit)
                self.detach(gen, self.cause(gen, now) or RemovalCause.EXPIRED)
            # a pinned expired generation is removed at its last release
        return consumed

    def _pop_idle(self, now: int) -> None:
        """The idle heap's head is due: remove its entry if it really went idle, or queue
        it again at its true idle deadline (it was used, or is in use, since queued)."""
        gen = heapq.heappop(self._idle_heap)[2]
        if not gen.current:
            return
        assert isinstance(gen, _IdleGeneration)
        if gen.pins:
            idle_at = now + self.idle_ticks  # its release, later than now, restarts it
        else:
            idle_at = gen.last_used + self.idle_ticks
            if idle_at <= now:
                cause = self.cause(gen, now)
                if cause is not None:
                    self.detach(gen, cause)
                return
        if idle_at < gen.deadline:
            self._push_idle(idle_at, gen)
        # else the TTL comes first: its own queue removes it

    def victim(self, keep: _Generation[R, A] | None) -> _Generation[R, A] | None:
        """The policy's next unpinned generation to evict, never ``keep``."""
        return self.policy.victim(keep)

    def user_victim(
        self, user_id: str, keep: _Generation[R, A] | None
    ) -> _Generation[R, A] | None:
        """The unpinned entry of ``user_id`` the policy values least, never ``keep``:
        O(that user's entries)."""
        current = self.current
        candidates = [current[agent_id] for agent_id in self.index_users().get(user_id, ())]
        return self.policy.victim_among(candidates, keep)

    def user_agent_ids(self, user_id: str) -> list[str]:
        """The agent ids of ``user_id``'s current generations. The first call builds the
        index (one pass over the map); install and removal keep it from then on."""
        return list(self.index_users().get(user_id, ()))

    def index_users(self) -> dict[str, set[str]]:
        """``by_user``, built now (one pass over the map) if it was not yet."""
        by_user = self.by_user
        if by_user is None:
            by_user = self.by_user = {}
            for agent_id, gen in self.current.items():
                ids = by_user.get(gen._user_id)
                if ids is None:
                    by_user[gen._user_id] = {agent_id}
                else:
                    ids.add(agent_id)
        return by_user

    def _compact(self) -> None:
        for gen in self._fifo:
            gen.in_expiry = gen.current
        for item in self._heap:
            item[2].in_expiry = item[2].current
        self._fifo = deque(gen for gen in self._fifo if gen.current)
        self._heap = [item for item in self._heap if item[2].current]
        heapq.heapify(self._heap)
        self._stale = 0

    def unfinished_pinned(self) -> list[_Generation[R, A]]:
        """Every generation still pinned and holding its agent (used at shutdown only)."""
        gens = [g for gens in self.detached.values() for g in gens if not g.finished]
        gens.extend(g for g in self.current.values() if g.pins and not g.finished)
        return gens

