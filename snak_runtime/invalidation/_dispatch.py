"""From payload to manager call: parse and count (the inbox), then apply per agent in order."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from typing import Protocol, final

from .._errors import RuntimeManagerClosed
from ._wire import Action, Dropped, InvalidationMessage, parse_message

logger = logging.getLogger(__name__)


class InvalidationTarget(Protocol):
    """What the subscriber drives: ``AgentRuntimeManager`` fits without inheriting."""

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

    async def evict(self, agent_id: str) -> bool: ...

    async def evict_all(self) -> int: ...


# A repair the version check queued for one agent (see _versions), ordered with its messages.
_Work = Callable[[], Awaitable[None]]


@final
class _Dispatcher:
    """Applies messages to the target: in arrival order per agent, agents in parallel.

    One task per agent id with work queued; it exits when its queue is empty, so idle agents
    cost nothing. The check "queue empty, so leave" and "worker present, so append" never
    straddle an ``await``, so no message is stranded.
    """

    def __init__(self, target: InvalidationTarget) -> None:
        self._target = target
        self._queues: dict[str, deque[InvalidationMessage | _Work]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.applied = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, message: InvalidationMessage) -> None:
        """Queue one valid message behind the others for its agent."""
        self._enqueue(message.agent_id, message)

    def submit_work(self, agent_id: str, work: _Work) -> None:
        """Queue a repair for ``agent_id``; it counts neither as applied nor as failed."""
        self._enqueue(agent_id, work)

    def _enqueue(self, agent_id: str, item: InvalidationMessage | _Work) -> None:
        queue = self._queues.get(agent_id)
        if queue is not None:
            queue.append(item)
            return
        self._queues[agent_id] = deque((item,))
        self._idle.clear()
        task = asyncio.get_running_loop().create_task(
            self._run(agent_id), name=f"snak-invalidate:{agent_id}"
        )
        self._tasks[agent_id] = task

    async def _run(self, agent_id: str) -> None:
        queue = self._queues[agent_id]
        try:
            while queue:
                item = queue[0]
                if isinstance(item, InvalidationMessage):
                    await self._apply(item)
                else:
                    await self._repair(agent_id, item)
                queue.popleft()
        finally:
            del self._queues[agent_id]
            del self._tasks[agent_id]
            if not self._tasks:
                self._idle.set()

    async def _apply(self, message: InvalidationMessage) -> None:
        try:
            if message.action is Action.EVICT:
                await self._target.evict(message.agent_id)
            else:
                await self._target.on_invalidate(message.agent_id, message.cfg_version)
        except asyncio.CancelledError:
            raise
        except RuntimeManagerClosed:
            self.failures += 1
            logger.debug("agent %r: invalidation skipped, the manager is closed", message.agent_id)
        except Exception as exc:
            self.failures += 1
            logger.warning(
                "agent %r: invalidation to cfg_version %d failed (entry evicted): %r",
                message.agent_id,
                message.cfg_version,
                exc,
                exc_info=exc,
                extra={"agent_id": message.agent_id, "cfg_version": message.cfg_version},
            )
        else:
            self.applied += 1

    async def _repair(self, agent_id: str, work: _Work) -> None:
        try:
            await work()
        except asyncio.CancelledError:
            raise
        except RuntimeManagerClosed:
            logger.debug("agent %r: repair skipped, the manager is closed", agent_id)
        except Exception as exc:  # a failed rebuild: the manager evicted it and logged why
            logger.debug("agent %r: resync repair failed: %r", agent_id, exc)

    async def drain(self) -> None:
        """Wait until every queued message has been applied."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Cancel queued and running work (a cancelled rebuild evicts its entry) and wait."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


@final
class _Inbox:
    """Parses each payload, logs and counts what cannot apply, and dispatches the rest."""

    def __init__(self, dispatcher: _Dispatcher) -> None:
        self._dispatcher = dispatcher
        self.received = 0
        self.unknown_events = 0
        self.dropped: Counter[str] = Counter()

    def accept(self, data: bytes | str) -> InvalidationMessage | Dropped:
        self.received += 1
        parsed = parse_message(data)
        if isinstance(parsed, Dropped):
            self.dropped[parsed.reason.value] += 1
            logger.warning(
                "invalidation message dropped (%s): %s",
                parsed.reason.value,
                parsed.detail,
                extra={"reason": parsed.reason.value},
            )
            return parsed
        if parsed.unknown_event:
            self.unknown_events += 1
            logger.warning(
                "agent %r: unknown invalidation event %r, evicting (the safe side)",
                parsed.agent_id,
                parsed.event,
                extra={"agent_id": parsed.agent_id, "event": parsed.event},
            )
        self._dispatcher.submit(parsed)
        return parsed
