"""Awaiting code we do not control with a bound that holds without its cooperation.

``asyncio.timeout`` around an ``await`` only works if the awaited code lets the cancellation
through: a version source that catches ``CancelledError`` and goes on waiting keeps the caller
waiting with it, past any timeout. So the call runs in a task of its own, the caller waits for
that task with a timeout, and on expiry cancels it and walks away. The abandoned task stays
referenced here until it ends (asyncio keeps only weak references to tasks), its late failure
is logged once, and it is never awaited again.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Final, TypeVar

from ._ratelog import RateLimitedLog

logger = logging.getLogger(__name__)
_late = RateLimitedLog(logger)

T = TypeVar("T")

_abandoned: set[asyncio.Task[object]] = set()
"""Tasks given up on, kept alive until they end by themselves."""

RECANCEL_EVERY_S: Final = 0.5
"""While waiting for cancelled tasks, cancel again this often (one cancellation can be lost)."""


class CallTimedOut(Exception):
    """The call did not finish within its bound; it was cancelled and abandoned."""


class CallCancelled(Exception):
    """The call raised ``CancelledError`` although nobody cancelled it: that call failed."""


def abandoned_count() -> int:
    """Abandoned tasks still running (for tests and diagnostics)."""
    return len(_abandoned)


def abandon(task: asyncio.Task[T], what: str) -> None:
    """Cancel ``task`` and stop caring: keep it referenced until it ends, log a late failure."""
    task.cancel()
    if task.done():
        _retrieve(task, what)
        return
    _abandoned.add(task)
    task.add_done_callback(lambda t: _late_end(t, what))


def _late_end(task: asyncio.Task[T], what: str) -> None:
    _abandoned.discard(task)
    _retrieve(task, what)


def _retrieve(task: asyncio.Task[T], what: str) -> None:
    if task.cancelled():
        return
    exc = task.exception()  # retrieved: no "exception was never retrieved" at GC
    if exc is not None:
        _late.warning(
            "late_failure", "%s, abandoned after its bound, failed later: %r", what, exc
        )


async def call_bounded(call: Callable[[], Awaitable[T]], timeout_s: float, what: str) -> T:
    """``await call()`` in a task of its own, for at most ``timeout_s`` whatever it does.

    Raises ``CallTimedOut`` past the bound (the task is cancelled and abandoned),
    ``CallCancelled`` when the call raised ``CancelledError`` by itself, and whatever else the
    call raised. If the caller is cancelled meanwhile, the call is abandoned and the
    cancellation goes on.
    """

    async def run() -> T:
        return await call()

    task = asyncio.get_running_loop().create_task(run(), name=f"snak-bounded:{what}")
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
    except asyncio.CancelledError:
        abandon(task, what)
        raise
    if not done:
        abandon(task, what)
        raise CallTimedOut(f"no answer within {timeout_s * 1000:.0f} ms")
    if task.cancelled():
        raise CallCancelled("it raised CancelledError")
    return task.result()


async def finish_within(
    tasks: Iterable[asyncio.Task[T]],
    deadline: float,
    what: str,
    recancel_s: float = RECANCEL_EVERY_S,
) -> list[asyncio.Task[T]]:
    """Cancel ``tasks`` and wait for them until ``deadline`` (loop time), cancelling again
    every ``recancel_s``; abandon those still running then, and return them."""
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    loop = asyncio.get_running_loop()
    while pending:
        left = deadline - loop.time()
        if left <= 0:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=min(left, recancel_s))
    for task in tasks:
        if task.done():
            _retrieve(task, what)
    for task in pending:
        abandon(task, what)
    return list(pending)
