"""Calls into user code the manager awaits (builds, rebuilds, refreshes), bounded without
their cooperation.

``asyncio.timeout`` cancels the code it bounds and then waits for it to end: a build that
swallows ``CancelledError`` would hold its agent id forever (issue 23, finding 5). Here each
call runs in a task of its own that the caller waits for: past its timeout (or
when the caller is cancelled) the call is cancelled and given a short grace to end, and
one that is still running after that is abandoned. An abandoned call stays referenced
until it ends; a seed it returns then is handed to ``on_late_seed`` (the manager disposes
its agent), an exception it raises then is logged once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, final

T = TypeVar("T")


class _Owned(Protocol):
    """What records the task that runs user code for an agent id (a turn, a refresh), so
    that the re-entry check recognizes a call back from that very task."""

    owner: asyncio.Task[Any] | None


class UserCodeCancelled(RuntimeError):
    """Internal: user code raised ``CancelledError`` although nothing of ours cancelled it.

    That is the call's failure (a failed build or rebuild), never a cancellation of the
    callers waiting on it (CONTRACT §12)."""


@final
class _UserCalls:
    """The manager's calls into builds and rebuilds: each bounded, abandoned past its bound."""

    __slots__ = ("_abandoned", "_grace_s", "_log", "_on_late_seed", "_timeout_s")

    def __init__(
        self,
        timeout_s: float,
        grace_s: float,
        log: logging.Logger,
        on_late_seed: Callable[[str, object], None],
    ) -> None:
        self._timeout_s = timeout_s
        self._grace_s = grace_s  # how long a cancelled call may take to end
        self._log = log
        self._on_late_seed = on_late_seed
        # calls given up while still running: referenced until they end
        self._abandoned: set[asyncio.Future[Any]] = set()

    @property
    def abandoned(self) -> int:
        """Calls given up that have not ended yet."""
        return len(self._abandoned)

    async def run(
        self,
        what: str,
        agent_id: str,
        call: Callable[[], Awaitable[T]],
        holder: _Owned,
        *,
        keep: object = None,
    ) -> T:
        """Await ``call()`` for at most the timeout; ``holder.owner`` is its task meanwhile.

        ``keep``: an agent the cache holds already (the one a rebuild replaces): a seed
        carrying it that arrives too late is not disposed for it.

        Raises what the call raised, ``TimeoutError`` past the timeout, or
        ``UserCodeCancelled`` when the call raised ``CancelledError`` on its own. When the
        caller is cancelled, the call is cancelled too, and ``CancelledError`` is raised
        within the grace whether or not the call has ended.
        """
        loop = asyncio.get_running_loop()
        task: asyncio.Future[T] = asyncio.ensure_future(call(), loop=loop)
        holder.owner = task if isinstance(task, asyncio.Task) else None
        try:
            try:
                done = await _wait(task, self._timeout_s)
            except asyncio.CancelledError:  # our caller was cancelled: so is the call
                task.cancel()
                await self._give_up(what, agent_id, task, keep)
                raise
            if not done:
                task.cancel()
                await self._give_up(what, agent_id, task, keep)
                raise TimeoutError(
                    f"{what} of agent {agent_id!r} did not finish within {self._timeout_s:g} s"
                )
        finally:
            if holder.owner is task:
                holder.owner = None
        if task.cancelled():  # (not by us: we raised above when we cancelled it)
            # departure: not in the original (which had no bound at all); a CancelledError
            # the call raised itself is its failure, not the cancellation of its callers.
            raise UserCodeCancelled(
                f"{what} of agent {agent_id!r} raised CancelledError without being cancelled"
            )
        return task.result()

    async def _give_up(
        self, what: str, agent_id: str, task: asyncio.Future[Any], keep: object
    ) -> None:
        """``task`` was cancelled: wait up to the grace for it to end, else abandon it. Its
        outcome is never the caller's: a seed is disposed, an exception logged."""
        try:
            await _wait(task, self._grace_s)
        finally:  # (also when cancelled again meanwhile)
            if task.done():
                self._settle(what, agent_id, task, keep, late=False)
            else:
                # departure: contract §6's per-agent mutual exclusion holds for code that
                # ends when cancelled; one that ignores cancellation may still be running
                # when the next operation on its agent id starts.
                self._log.warning(
                    "%s of agent %r did not end when cancelled; abandoned (it may still be "
                    "running)",
                    what, agent_id, extra={"agent_id": agent_id},
                )
                self._abandoned.add(task)
                task.add_done_callback(lambda t: self._ended(what, agent_id, t, keep))

    def _ended(self, what: str, agent_id: str, task: asyncio.Future[Any], keep: object) -> None:
        self._abandoned.discard(task)
        self._settle(what, agent_id, task, keep, late=True)

    def _settle(
        self, what: str, agent_id: str, task: asyncio.Future[Any], keep: object, *, late: bool
    ) -> None:
        """The outcome of a call nobody waits for any more."""
        if task.cancelled():
            return
        exc = task.exception()  # (retrieved: asyncio does not report it as lost)
        if exc is not None:
            if late:
                self._log.warning(
                    "abandoned %s of agent %r ended with %r", what, agent_id, exc,
                    extra={"agent_id": agent_id},
                )
            return
        seed = task.result()
        if seed is not None and (keep is None or getattr(seed, "agent", None) is not keep):
            self._log.info(
                "%s of agent %r returned after it was given up; its agent is disposed",
                what, agent_id, extra={"agent_id": agent_id},
            )
            self._on_late_seed(agent_id, seed)


async def _wait(task: asyncio.Future[Any], timeout_s: float) -> bool:
    """Wait until ``task`` is done or ``timeout_s`` passed; return whether it is done.
    Cancelling the waiter leaves ``task`` alone."""
    if not task.done():
        await asyncio.wait((task,), timeout=timeout_s)
    return task.done()
