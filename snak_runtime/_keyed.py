"""Per-key FIFO turns: operations on one agent id run one at a time, in arrival order.

A key has a queue only while some operation holds or awaits its turn, so the common
case (nothing in flight) is a single dict lookup. Readers do not take a turn: they wait
for the operation that was last in line when they arrived, and are woken before the
next operation resumes, so they see exactly the state that operation left behind.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, final

from ._seed import RuntimeSeed

# departure: the original chained promises, so two waiters could run at once after the
# first finished; here a queue hands the turn to exactly one waiter at a time.


@final
class _Turn:
    """One operation's place in a key's queue."""

    __slots__ = ("discards", "owner", "readers", "ready", "stale_ok")

    def __init__(self, ready: asyncio.Future[None] | None, stale_ok: bool = False) -> None:
        self.ready = ready  # None: the turn was free on arrival
        self.readers: list[asyncio.Future[None]] = []
        self.owner: asyncio.Task[Any] | None = None  # the task running user code (build)
        # readers may be served what is cached instead of waiting for this turn
        # (an invalidation that serves the stale generation meanwhile)
        self.stale_ok = stale_ok
        # users evicted (evict_user) while this operation was in flight: a seed of theirs
        # made before that must not be installed
        self.discards: set[str] | None = None


@final
class _KeyedTurns:
    """The queues of every busy key."""

    __slots__ = ("blocking", "queues")

    def __init__(self) -> None:
        self.queues: dict[str, deque[_Turn]] = {}
        # key -> how many of its queued turns readers must wait for (those not ``stale_ok``);
        # a key whose turns are all ``stale_ok`` has no entry
        self.blocking: dict[str, int] = {}

    def enqueue(
        self, key: str, loop: asyncio.AbstractEventLoop, *, stale_ok: bool = False
    ) -> _Turn:
        """Join ``key``'s queue now (arrival order is fixed here, synchronously)."""
        queue = self.queues.get(key)
        if queue is None:
            turn = _Turn(None, stale_ok)
            self.queues[key] = deque((turn,))
        else:
            turn = _Turn(loop.create_future(), stale_ok)
            queue.append(turn)
        if not stale_ok:
            self.blocking[key] = self.blocking.get(key, 0) + 1
        return turn

    def readers_may_skip(self, key: str) -> bool:
        """Whether every turn queued for ``key`` lets readers be served without waiting."""
        return key not in self.blocking

    def _popped(self, key: str, turn: _Turn) -> None:
        if not turn.stale_ok:
            left = self.blocking[key] - 1
            if left:
                self.blocking[key] = left
            else:
                del self.blocking[key]

    async def wait_turn(self, key: str, turn: _Turn) -> None:
        """Wait until ``turn`` heads the queue. On cancellation the place is given up."""
        ready = turn.ready
        if ready is None:
            return
        try:
            await ready
        except asyncio.CancelledError:
            if ready.done() and not ready.cancelled():
                self.leave(key, turn)  # the turn came just as we were cancelled: pass it on
            # otherwise ``ready`` is cancelled and leave() skips this turn
            raise

    def leave(self, key: str, turn: _Turn) -> None:
        """The head ``turn`` is done: wake its readers, then hand over to the next waiter."""
        queue = self.queues[key]
        head = queue.popleft()
        assert head is turn, "only the head of a key's queue may leave it"
        self._popped(key, turn)
        _wake(turn.readers)
        while queue:
            nxt = queue[0]
            assert nxt.ready is not None
            if nxt.ready.cancelled():
                queue.popleft()
                self._popped(key, nxt)
                _wake(nxt.readers)
                continue
            nxt.ready.set_result(None)
            return
        del self.queues[key]

    async def wait_for_tail(self, key: str, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for the operation last in ``key``'s queue now (and so for all before it)."""
        queue = self.queues[key]
        waiter: asyncio.Future[None] = loop.create_future()
        queue[-1].readers.append(waiter)
        await waiter  # cancellation cancels only this reader's own future

    # departure: in the original a rebuild calling back into its own id waited on itself.
    def check_reentry(self, key: str, loop: asyncio.AbstractEventLoop | None) -> None:
        """Raise if the task running ``key``'s user code (a build, a rebuild) is the caller:
        waiting for its own turn, it would wait on itself forever."""
        holder = self.holder(key)
        if holder is not None and holder.owner is not None \
                and holder.owner is asyncio.current_task(loop):
            raise RuntimeError(
                f"a build or rebuild of agent {key!r} called back into the manager for "
                "the same agent id; that would wait on itself forever"
            )

    def discard_user(self, user_id: str) -> None:
        """``evict_user`` ran: every operation in flight must not install a seed of
        ``user_id`` made before now (see ``discarded``)."""
        for queue in self.queues.values():
            for turn in queue:
                if turn.discards is None:
                    turn.discards = {user_id}
                else:
                    turn.discards.add(user_id)

    def holder(self, key: str) -> _Turn | None:
        queue = self.queues.get(key)
        return queue[0] if queue else None

    def tail(self, key: str) -> _Turn | None:
        queue = self.queues.get(key)
        return queue[-1] if queue else None


def discarded(turn: _Turn | None, seed: RuntimeSeed[Any, Any]) -> bool:
    """Whether ``evict_user`` ran for ``seed``'s user while the operation holding ``turn``
    was making (or, for ``shadow_seed``, waiting to install) it."""
    return turn is not None and turn.discards is not None and seed.user_id in turn.discards


def _wake(readers: list[asyncio.Future[None]]) -> None:
    for waiter in readers:
        if not waiter.done():
            waiter.set_result(None)
    readers.clear()
