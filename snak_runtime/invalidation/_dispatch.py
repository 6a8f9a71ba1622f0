"""From payload to manager call: parse and count (the inbox), then apply per agent, coalesced.

The coalescing rule (issue 23). Per agent there is at most one job running and one pending.
A job is an invalidation to a version or an eviction, from a message or from a repair of the
version check (see ``_versions``). A new job for an agent with a pending one is merged into it:

- a pending eviction absorbs whatever comes after it: once the entry is evicted, a later
  ``on_invalidate`` finds nothing to rebuild (it never builds an uncached agent), so running
  it would change nothing;
- an eviction replaces a pending invalidation: rebuilding an entry about to be evicted is
  wasted work;
- of two invalidations the higher version stays (ties keep the older job): ``on_invalidate``
  ignores a version at or below the cached one, so the lower one would be a no-op after it.

The outcome is the one the messages would have had one by one, in arrival order; the work is
at most one running and one pending call per agent, whatever the burst. The job that is
running is never touched. Superseded messages are counted in ``coalesced``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Protocol, final

from .._errors import RuntimeManagerClosed
from ._ratelog import RateLimitedLog, shown
from ._wire import Action, Dropped, DropReason, InvalidationMessage, parse_message

logger = logging.getLogger(__name__)


class InvalidationTarget(Protocol):
    """What the subscriber drives: ``AgentRuntimeManager`` fits without inheriting."""

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

    async def evict(self, agent_id: str) -> bool: ...

    async def evict_all(self) -> int: ...


Work = Callable[[], Awaitable[None]]


@final
@dataclass(slots=True, eq=False)
class Job:
    """One thing to do for an agent: evict it, or invalidate it to ``version``.

    ``message`` is the message it came from (counted applied or failed), ``None`` for a repair,
    whose ``work`` runs instead. ``on_done`` is called once the job leaves: run, superseded
    by a newer job, or dropped at stop.
    """

    evicts: bool
    version: int
    message: InvalidationMessage | None = None
    work: Work | None = None
    on_done: Callable[[], None] | None = None

    def done(self) -> None:
        on_done, self.on_done = self.on_done, None
        if on_done is not None:
            on_done()


# departure: the original ran one onInvalidate per message, one after the other per agent, so a
# burst of N versions queued N rebuilds behind each other; here at most one runs and one waits.
def merge(pending: Job, new: Job) -> tuple[Job, Job]:
    """``(kept, superseded)`` for a ``new`` job arriving while ``pending`` waits (module doc)."""
    if pending.evicts:
        return pending, new
    if new.evicts or new.version > pending.version:
        return new, pending
    return pending, new


@final
class _Dispatcher:
    """Applies jobs to the target: per agent one at a time, coalesced; agents in parallel.

    One task per agent id with work; it exits when nothing is pending, so idle agents cost
    nothing. The check "nothing pending, so leave" and "worker present, so just set pending"
    never straddle an ``await``, so no job is stranded.
    """

    def __init__(
        self,
        target: InvalidationTarget,
        on_applied: Callable[[InvalidationMessage], None] | None = None,
    ) -> None:
        self._target = target
        self._on_applied = on_applied  # after each message's call returned (the lag)
        self._running: dict[str, Job] = {}
        self._next: dict[str, Job] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.applied = 0
        self.failures = 0
        self.coalesced = 0

    @property
    def pending(self) -> int:
        """Jobs running or waiting (at most two per agent)."""
        return len(self._running) + len(self._next)

    def submit(self, message: InvalidationMessage) -> None:
        """Queue one valid message for its agent (merged with a pending one)."""
        evicts = message.action is Action.EVICT
        self._enqueue(message.agent_id, Job(evicts, message.cfg_version, message=message))

    def submit_job(self, agent_id: str, job: Job) -> None:
        """Queue a repair for ``agent_id``; it counts neither as applied nor as failed."""
        self._enqueue(agent_id, job)

    def _enqueue(self, agent_id: str, job: Job) -> None:
        pending = self._next.get(agent_id)
        if pending is None:
            self._next[agent_id] = job
        else:
            kept, superseded = merge(pending, job)
            self._next[agent_id] = kept
            if superseded.message is not None:
                self.coalesced += 1
            superseded.done()
        if agent_id not in self._tasks:
            self._idle.clear()
            self._tasks[agent_id] = asyncio.get_running_loop().create_task(
                self._run(agent_id), name=f"snak-invalidate:{agent_id[:64]}"
            )

    async def _run(self, agent_id: str) -> None:
        me = asyncio.current_task()
        try:
            # A worker abandoned at stop that comes back later takes no new work.
            while self._tasks.get(agent_id) is me and (job := self._next.pop(agent_id, None)):
                self._running[agent_id] = job
                try:
                    await self._execute(agent_id, job)
                finally:
                    if self._running.get(agent_id) is job:
                        del self._running[agent_id]
                    job.done()
        finally:
            if self._tasks.get(agent_id) is me:
                del self._tasks[agent_id]
                if (left := self._next.pop(agent_id, None)) is not None:  # cancelled
                    left.done()
            if not self._tasks:
                self._idle.set()

    async def _execute(self, agent_id: str, job: Job) -> None:
        message = job.message
        try:
            if job.work is not None:
                await job.work()
            elif job.evicts:
                await self._target.evict(agent_id)
            else:
                await self._target.on_invalidate(agent_id, job.version)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is None or task.cancelling():
                raise  # ours: stop() cancelled the worker
            # A CancelledError the target raised by itself: that call's failure, not our end.
            self._failed(agent_id, job, "it raised CancelledError")
        except RuntimeManagerClosed:
            if message is not None:
                self.failures += 1
            logger.debug("agent %r: invalidation skipped, the manager is closed", agent_id)
        except Exception as exc:
            self._failed(agent_id, job, repr(exc), exc)
        else:
            if message is not None:
                self.applied += 1
                if self._on_applied is not None:
                    self._on_applied(message)

    def _failed(
        self, agent_id: str, job: Job, why: str, exc: BaseException | None = None
    ) -> None:
        if job.message is None:  # a failed repair: the manager evicted it and logged why
            logger.debug("agent %r: resync repair failed: %s", agent_id, why)
            return
        self.failures += 1
        logger.warning(
            "agent %r: invalidation to cfg_version %d failed (entry evicted): %s",
            agent_id,
            job.version,
            why,
            exc_info=exc,
            extra={"agent_id": agent_id, "cfg_version": job.version},
        )

    async def drain(self) -> None:
        """Wait until every queued job has been applied."""
        await self._idle.wait()

    def cancel(self) -> list[asyncio.Task[None]]:
        """Cancel queued and running work (a cancelled rebuild evicts its entry).

        Returns the workers to wait for; forgets them and drops what was pending, so the
        dispatcher is empty at once even if one of them ignores its cancellation.
        """
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        dropped = list(self._next.values())
        self._next.clear()
        self._running.clear()
        for job in dropped:
            job.done()
        self._idle.set()
        return tasks


@final
class _Inbox:
    """Parses each payload, logs (rate-limited) and counts what cannot apply, dispatches the rest.

    Never raises: an exception while handling one payload (a bug) is counted under
    ``internal_error`` and logged, and the next payload is handled as usual. It is never taken
    for a lost connection, whose resync would evict what is cached.
    """

    def __init__(
        self,
        dispatcher: _Dispatcher,
        log: RateLimitedLog | None = None,
        on_outbox_id: Callable[[int], None] | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self.log = log if log is not None else RateLimitedLog(logger)
        self._on_outbox_id = on_outbox_id  # loss detection (``_gaps``), when enabled
        self.received = 0
        self.unknown_events = 0
        self.malformed_outbox_ids = 0
        self.malformed_processed_at = 0
        self.dropped: Counter[str] = Counter()

    def accept(self, data: bytes | str) -> InvalidationMessage | Dropped:
        self.received += 1
        try:
            return self._accept(data)
        except Exception as exc:
            reason = DropReason.INTERNAL_ERROR
            self.dropped[reason.value] += 1
            self.log.log(
                logging.ERROR,
                reason.value,
                "invalidation message dropped: handling it raised %s (a bug); the subscriber "
                "goes on",
                type(exc).__name__,
                exc_info=exc,
                extra={"reason": reason.value},
            )
            return Dropped(reason, f"handling raised {type(exc).__name__}")

    def _accept(self, data: bytes | str) -> InvalidationMessage | Dropped:
        parsed = parse_message(data)
        if isinstance(parsed, Dropped):
            self.dropped[parsed.reason.value] += 1
            self.log.warning(
                parsed.reason.value,
                "invalidation message dropped (%s): %s",
                parsed.reason.value,
                parsed.detail,
                extra={"reason": parsed.reason.value},
            )
            return parsed
        if parsed.unknown_event:
            self.unknown_events += 1
            self.log.warning(
                "unknown_event",
                "agent %s: unknown invalidation event %s, evicting (the safe side)",
                shown(parsed.agent_id),
                shown(parsed.event),
                extra={"agent_id": parsed.agent_id, "event": parsed.event},
            )
        if parsed.bad_outbox_id or parsed.bad_processed_at:
            self._malformed_field(parsed)
        self._dispatcher.submit(parsed)
        if parsed.outbox_id is not None and self._on_outbox_id is not None:
            self._on_outbox_id(parsed.outbox_id)
        return parsed

    def _malformed_field(self, parsed: InvalidationMessage) -> None:
        """Count (and log, rate-limited) an ``outbox_id``/``processed_at`` that was ignored."""
        for bad, reason, field in (
            (parsed.bad_outbox_id, "malformed_outbox_id", "outbox_id"),
            (parsed.bad_processed_at, "malformed_processed_at", "processed_at"),
        ):
            if not bad:
                continue
            if field == "outbox_id":
                self.malformed_outbox_ids += 1
            else:
                self.malformed_processed_at += 1
            self.log.warning(
                reason,
                "agent %s: malformed %s ignored (the invalidation applies all the same)",
                shown(parsed.agent_id),
                field,
                extra={"agent_id": parsed.agent_id, "reason": reason},
            )
