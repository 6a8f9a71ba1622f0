"""Disposer provider: how a cached agent's resources are released."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, final, runtime_checkable

if TYPE_CHECKING:
    from ._stats import _StatsCounter

_CLOSE_METHODS = ("aclose", "dispose", "close")


@runtime_checkable
class Disposer(Protocol):
    """Releases one agent object. The manager bounds each call with its own timeout."""

    async def dispose(self, agent: object) -> None: ...


@final
class DefaultDisposer:
    """Calls the first of ``aclose()``, ``dispose()``, ``close()`` the agent has.

    A method returning an awaitable is awaited; the whole call is bounded by ``timeout_ms``
    and an agent with none of the methods is left alone.
    """

    __slots__ = ("timeout_ms",)

    def __init__(self, timeout_ms: int = 10_000) -> None:
        if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int) or timeout_ms <= 0:
            raise ValueError(f"timeout_ms must be a positive integer, got {timeout_ms!r}")
        self.timeout_ms = timeout_ms

    async def dispose(self, agent: object) -> None:
        for name in _CLOSE_METHODS:
            method = getattr(agent, name, None)
            if callable(method):
                async with asyncio.timeout(self.timeout_ms / 1000):
                    result = method()
                    if inspect.isawaitable(result):
                        await result
                return


# departure: the original awaited agent.dispose() unbounded, on the caller's path.
@final
class _Disposals:
    """The manager's disposals in flight: each in a task of its own, off the caller's path.

    A timer abandons a disposal after the timeout even if it swallows cancellation, so no
    disposer can hang shutdown; an abandoned task stays referenced until it ends. Failures
    and timeouts are logged and counted, never raised into a cache operation.
    """

    __slots__ = (
        "_abandoned", "_disposer", "_forced", "_log", "_loop_of", "_pending", "_stats",
        "_timeout_s",
    )

    def __init__(
        self,
        disposer: Disposer,
        timeout_s: float,
        stats: _StatsCounter,
        log: logging.Logger,
        loop_of: Callable[[], asyncio.AbstractEventLoop | None],
    ) -> None:
        self._disposer = disposer
        self._loop_of = loop_of  # the manager's loop, once bound
        self._forced = False  # the grace period is over: every agent was disposed already
        self._timeout_s = timeout_s
        self._stats = stats
        self._log = log
        self._pending: set[asyncio.Future[Any]] = set()  # what wait() waits for
        self._abandoned: set[asyncio.Future[Any]] = set()  # timed out, still running

    def orphaned(self, agent_id: str, agent: object) -> None:
        """No cached generation holds ``agent`` any more: dispose it off the caller's path."""
        if self._forced:
            return  # the grace period is over: every agent was disposed already
        loop = self._loop_of()
        if loop is None or loop.is_closed():
            self._log.warning(
                "agent %r cannot be disposed: its event loop is gone", agent_id,
                extra={"agent_id": agent_id},
            )
            return
        self.schedule(loop, agent_id, agent)

    def late(self, agent_id: str, agent: object) -> None:
        """The agent of a seed that a build or rebuild given up returned after all: never
        cached, so disposed even after the grace period."""
        loop = self._loop_of()
        if loop is not None and not loop.is_closed():  # (a done callback runs in the loop)
            self.schedule(loop, agent_id, agent)

    def force(self) -> None:
        """Close's grace period is over: what the cache still held was disposed."""
        self._forced = True

    def schedule(self, loop: asyncio.AbstractEventLoop, agent_id: str, agent: object) -> None:
        self._stats.disposals += 1
        try:
            result: object = self._disposer.dispose(agent)
        except (Exception, asyncio.CancelledError) as exc:  # a plain dispose() that raised
            # (CancelledError too: it must not reach the cache operation that orphaned it)
            self._failed(agent_id, exc)
            return
        if not inspect.isawaitable(result):
            return  # a plain dispose() that already finished
        call = asyncio.ensure_future(result, loop=loop)
        self._pending.add(call)
        timer = loop.call_later(self._timeout_s, self._abandon, agent_id, call)
        call.add_done_callback(partial(self._done, agent_id, timer))

    async def wait(self) -> None:
        while self._pending:  # a disposal leaves the set when it ends or is abandoned
            await asyncio.wait(
                tuple(self._pending), timeout=self._timeout_s, return_when=asyncio.FIRST_COMPLETED
            )
            await asyncio.sleep(0)  # let the done callbacks record the outcome

    def _abandon(self, agent_id: str, call: asyncio.Future[Any]) -> None:
        self._pending.discard(call)
        self._abandoned.add(call)
        call.cancel()
        self._failed(agent_id, TimeoutError(f"dispose did not finish within {self._timeout_s:g} s"))

    def _done(self, agent_id: str, timer: asyncio.TimerHandle, call: asyncio.Future[Any]) -> None:
        timer.cancel()
        if call in self._abandoned:  # already counted as timed out
            self._abandoned.discard(call)
            if not call.cancelled():
                call.exception()  # seen, so asyncio does not report it as lost
            return
        self._pending.discard(call)
        exc = asyncio.CancelledError() if call.cancelled() else call.exception()
        if exc is not None:
            self._failed(agent_id, exc)

    def _failed(self, agent_id: str, exc: BaseException) -> None:
        self._stats.dispose_failures += 1
        self._log.warning(
            "disposing agent %r failed: %r", agent_id, exc, extra={"agent_id": agent_id}
        )
