"""Supervision of the subscriber's long-lived tasks (the listener and the reconciler).

Their bodies handle every error they expect. Anything else that ends one (a bug, or a
``CancelledError`` that user code raised while nobody cancelled us) would leave the process
deaf until restart, silently. The supervisor logs such an exit at ERROR and runs the body again
after a capped, jittered backoff. A body that returns has ended on purpose (the manager
closed); a cancellation of the supervising task itself (``stop()``) ends it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import final

from ._ratelog import shown_exc
from ._wire import backoff_ms

logger = logging.getLogger(__name__)


@final
class Run:
    """One ``start()``..``stop()`` of the subscriber: its loops end when ``stopped`` is set,
    even a loop that swallowed the cancellation ``stop()`` sent it."""

    __slots__ = ("stopped",)

    def __init__(self) -> None:
        self.stopped = False


@final
class Supervisor:
    """Runs bodies under supervision with one backoff policy; counts the restarts."""

    def __init__(
        self, *, base_ms: int, cap_ms: int, rng: Callable[[], float] = random.random
    ) -> None:
        self._base_ms = base_ms
        self._cap_ms = cap_ms
        self._rng = rng
        self.restarts = 0

    async def run(
        self,
        name: str,
        body: Callable[[], Awaitable[None]],
        run: Run,
        on_restart: Callable[[], None] | None = None,
    ) -> None:
        """Run ``body`` until it returns, ``run`` stops or this task is cancelled; restart it
        (``on_restart()``, ERROR, backoff) after any other exit."""
        loop = asyncio.get_running_loop()
        failures = 0
        while not run.stopped:
            started = loop.time()
            try:
                await body()
                return
            except asyncio.CancelledError as exc:
                task = asyncio.current_task()
                if run.stopped or task is None or task.cancelling():
                    raise  # ours: stop()
                error: BaseException = exc
                why = "a CancelledError that nobody sent (raised by code it called)"
            except Exception as exc:
                error, why = exc, shown_exc(exc)
            if run.stopped:
                return
            if loop.time() - started > self._cap_ms / 1000:
                failures = 0  # it ran well for a while: start the backoff over
            delay = backoff_ms(failures, base_ms=self._base_ms, cap_ms=self._cap_ms, rng=self._rng)
            failures += 1
            self.restarts += 1
            if on_restart is not None:
                on_restart()
            logger.error(
                "invalidation %s ended unexpectedly: %s; restarting it in %d ms",
                name,
                why,
                delay,
                exc_info=error,
            )
            await asyncio.sleep(delay / 1000)
