"""Versioned resync: ask the user's version source what changed, and repair only that.

Pub/sub forgets what it published while a subscriber was away, so after a reconnect (and
every ``reconcile_interval_ms`` while connected) the cached agents' versions are compared with
the truth, the user's database, through a *version source*. Newer there: the entry is
invalidated (rebuilt). Gone, or a version that is not one: the entry is evicted with cause
``resync``. The rest stays warm. Repairs go through the subscriber's per-agent FIFO, so they
are ordered with the live messages for the same agent.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Protocol, final, runtime_checkable

from .._stats import RemovalCause
from ._bounded import CallCancelled, CallTimedOut, call_bounded
from ._dispatch import Job
from ._gaps import (
    DEFAULT_TOLERANCE_MESSAGES,
    DEFAULT_TOLERANCE_MS,
    MAX_TOLERANCE_MESSAGES,
    MAX_TOLERANCE_MS,
)
from ._ratelog import RateLimitedLog, shown, shown_exc
from ._settings import (
    GAP_TOLERANCE_MESSAGES_VAR,
    GAP_TOLERANCE_MS_VAR,
    RECONCILE_INTERVAL_VAR,
    VERSION_SOURCE_TIMEOUT_VAR,
    InvalidationSettings,
)
from ._wire import MAX_CFG_VERSION

logger = logging.getLogger(__name__)

VersionSource = Callable[[Sequence[str]], Awaitable[Mapping[str, int | None]]]
"""``async (agent_ids) -> {agent_id: version}``: each agent's current configuration version in
the user's database; ``None`` or absent means deleted (or unknown)."""

Work = Callable[[], Awaitable[None]]
Enqueue = Callable[[str, Job], None]

BATCH_SIZE: Final = 256
"""Agent ids per version-source call: one query stays bounded, and the loop breathes between."""

DEFAULT_SOURCE_TIMEOUT_MS: Final = 10_000
MAX_SOURCE_TIMEOUT_MS: Final = 300_000
DEFAULT_RECONCILE_INTERVAL_MS: Final = 60_000
MAX_RECONCILE_INTERVAL_MS: Final = 86_400_000


class VersionSourceFailed(Exception):
    """Raised when the version source raised (``CancelledError`` included), timed out, or
    answered with no mapping or with one whose lookups raise."""


@runtime_checkable
class ResyncTarget(Protocol):
    """The public interface versioned resync drives (``AgentRuntimeManager`` implements it):

    - ``resync_view()``: each live entry's ``cfg_version``, ``None`` for an agent whose load
      is in flight (what it installs is checked once it has);
    - ``evict(agent_id, cause=RemovalCause.RESYNC)`` for a deleted agent or an unusable
      version, and ``evict_all(cause=RemovalCause.RESYNC)`` when there is no version source
      or it failed (removal listeners and ``stats().removals`` see the cause ``resync``);
    - ``on_invalidate(agent_id, version)`` for a newer version.
    """

    def resync_view(self) -> Mapping[str, int | None]: ...

    async def evict(self, agent_id: str, *, cause: RemovalCause = ...) -> bool: ...

    async def evict_all(self, *, cause: RemovalCause = ...) -> int: ...

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...


def resync_target(target: object) -> ResyncTarget | None:
    """``target`` when it implements ``ResyncTarget`` (the manager does), else ``None``: a
    plain ``InvalidationTarget`` gets no versioned resync and no resync cause."""
    return target if isinstance(target, ResyncTarget) else None


@final
@dataclass(frozen=True, slots=True)
class VersionCheckTimings:
    """The resolved timings: keyword, else environment, else default; capped by a ceiling."""

    source_timeout_ms: int
    reconcile_interval_ms: int  # 0: no periodic reconciliation
    gap_tolerance_messages: int = DEFAULT_TOLERANCE_MESSAGES
    gap_tolerance_ms: int = 0  # 0: no loss detection from outbox_id gaps


def resolve_timings(
    settings: InvalidationSettings,
    *,
    has_source: bool,
    source_timeout_ms: int | None,
    reconcile_interval_ms: int | None,
    gap_tolerance_messages: int | None = None,
    gap_tolerance_ms: int | None = None,
) -> VersionCheckTimings:
    """Keyword > environment > default, each capped; a bad keyword is a ``ValueError``; a bad
    variable (dropped when the settings read it) is a WARNING naming it, then the default.

    Every timing of the version check is resolved here (the gap tolerances of ``_gaps`` too).
    """
    for fmt, args in getattr(settings, "rejected_environment", ()):
        if args[0] in (
            VERSION_SOURCE_TIMEOUT_VAR, RECONCILE_INTERVAL_VAR, GAP_TOLERANCE_MESSAGES_VAR,
            GAP_TOLERANCE_MS_VAR,
        ):
            logger.warning(fmt, *args)
    timeout = _resolve(
        "version_source_timeout_ms", source_timeout_ms, VERSION_SOURCE_TIMEOUT_VAR,
        settings.version_source_timeout_ms, DEFAULT_SOURCE_TIMEOUT_MS, 1, MAX_SOURCE_TIMEOUT_MS,
    )
    if not has_source:
        if reconcile_interval_ms:
            raise ValueError("reconcile_interval_ms needs a version_source to compare against")
        if gap_tolerance_ms:
            raise ValueError("gap_tolerance_ms needs a version_source to reconcile with")
        return VersionCheckTimings(timeout, 0)
    interval = _resolve(
        "reconcile_interval_ms", reconcile_interval_ms, RECONCILE_INTERVAL_VAR,
        settings.reconcile_interval_ms, DEFAULT_RECONCILE_INTERVAL_MS, 0,
        MAX_RECONCILE_INTERVAL_MS,
    )
    gap_messages = _resolve(
        "gap_tolerance_messages", gap_tolerance_messages, GAP_TOLERANCE_MESSAGES_VAR,
        settings.gap_tolerance_messages, DEFAULT_TOLERANCE_MESSAGES, 1, MAX_TOLERANCE_MESSAGES,
        unit="messages",
    )
    gap_ms = _resolve(
        "gap_tolerance_ms", gap_tolerance_ms, GAP_TOLERANCE_MS_VAR,
        settings.gap_tolerance_ms, DEFAULT_TOLERANCE_MS, 0, MAX_TOLERANCE_MS,
    )
    return VersionCheckTimings(timeout, interval, gap_messages, gap_ms)


def _resolve(
    keyword: str, value: int | None, var: str, raw: int | None, default: int, low: int, cap: int,
    unit: str = "ms",
) -> int:
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{keyword} must be an integer >= {low}, got {value!r}")
        given = f"{keyword}={value}"
    else:
        value = default if raw is None else raw  # parsed (>= its row's minimum) when read
        given = f"{var}={value}"
    if value > cap:
        logger.warning("%s is above the ceiling %d %s; capped to %d", given, cap, unit, cap)
        return cap
    return value


def usable_version(value: object) -> int | None:
    """``value`` when it is a version (an int in 0..2**63-1, not a bool), else ``None``."""
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value if 0 <= value <= MAX_CFG_VERSION else None


@final
class VersionCheck:
    """One comparison of the cached versions with the source's, and the repairs it queues.

    Counters (cumulative): ``checked`` agents compared; ``repaired`` stale, gone or unusable
    ones queued for repair; ``unusable`` values that were not versions; ``source_failures``
    calls that raised, timed out or gave no mapping; ``evictions`` entries removed (``resync``).
    """

    def __init__(
        self,
        hooks: ResyncTarget,
        source: VersionSource,
        timeout_ms: int,
        enqueue: Enqueue,
        log: RateLimitedLog | None = None,
    ) -> None:
        self._hooks = hooks
        self._source = source
        self._timeout_s = timeout_ms / 1000
        self._enqueue = enqueue
        self._log = log if log is not None else RateLimitedLog(logger)
        self.checked = 0
        self.repaired = 0
        self.unusable = 0
        self.source_failures = 0
        self.abandoned = 0
        self.evictions = 0
        # Agents with a repair queued and not yet applied: a check that runs again meanwhile
        # (a slow rebuild, a short interval) does not queue or count it twice.
        self._repairing: set[str] = set()

    async def run(self) -> int:
        """Check every cached agent, batch by batch; return how many repairs were queued.

        Raises ``VersionSourceFailed`` (counted) at the first batch the source failed; the
        repairs of earlier batches stay queued.
        """
        view = self._hooks.resync_view()
        ids = list(view)
        queued = 0
        for start in range(0, len(ids), BATCH_SIZE):
            batch = ids[start : start + BATCH_SIZE]
            answer = await self._ask(batch)
            for agent_id in batch:
                queued += self._compare(agent_id, view[agent_id], answer[agent_id])
            await asyncio.sleep(0)  # many batches never stall the loop
        return queued

    async def _ask(self, batch: list[str]) -> dict[str, object]:
        """The source's answer for ``batch``, read into a plain dict, or ``VersionSourceFailed``.

        The call is bounded by the timeout even if the source ignores cancellation (it runs in
        a task of its own, abandoned past the bound). Reading the answer is guarded too: a
        mapping whose lookups raise is a failed call, never an error escaping the check.
        """
        try:
            answer: object = await call_bounded(
                lambda: _awaited(self._source, batch), self._timeout_s, "the version source"
            )
        except CallTimedOut:
            self.source_failures += 1
            self.abandoned += 1
            raise VersionSourceFailed(
                f"no answer within {self._timeout_s * 1000:.0f} ms for {len(batch)} agent(s)"
            ) from None
        except CallCancelled:
            self.source_failures += 1
            raise VersionSourceFailed("it raised CancelledError") from None
        except Exception as exc:
            self.source_failures += 1
            raise VersionSourceFailed(f"it raised {shown_exc(exc)}") from exc
        try:
            values = (
                {agent_id: answer.get(agent_id) for agent_id in batch}
                if isinstance(answer, Mapping)
                else None
            )
        except Exception as exc:
            self.source_failures += 1
            raise VersionSourceFailed(
                f"reading its answer raised {shown_exc(exc)}"
            ) from exc
        if values is None:
            self.source_failures += 1
            raise VersionSourceFailed(f"it returned {type(answer).__name__}, not a mapping")
        return values

    def forget_repairs(self) -> None:
        """The queued repairs were dropped (the subscriber stopped): check those agents again."""
        self._repairing.clear()

    def _compare(self, agent_id: str, cached: int | None, raw: object) -> int:
        """Queue the repair ``agent_id`` needs, if any; return 1 if it was stale or gone."""
        self.checked += 1
        if agent_id in self._repairing:
            return 0
        if raw is None:
            self._enqueue(agent_id, self._evict_work(agent_id))
            self.repaired += 1
            return 1
        version = usable_version(raw)
        if version is None:
            self.unusable += 1
            self._log.warning(
                "unusable_version",
                "agent %s: version source gave %s, not a version; evicting (cause resync)",
                shown(agent_id),
                shown(raw),
                extra={"agent_id": agent_id},
            )
            self._enqueue(agent_id, self._evict_work(agent_id))
            self.repaired += 1
            return 1
        if cached is None:  # a load in flight: check what it installs, once it has
            self._enqueue(agent_id, self._invalidate_work(agent_id, version))
            return 0
        if version > cached:
            self._enqueue(agent_id, self._invalidate_work(agent_id, version))
            self.repaired += 1
            return 1
        return 0

    def _evict_work(self, agent_id: str) -> Job:
        async def evict() -> None:
            if await self._hooks.evict(agent_id, cause=RemovalCause.RESYNC):
                self.evictions += 1

        return self._tracked(agent_id, Job(True, 0, work=evict))

    def _invalidate_work(self, agent_id: str, version: int) -> Job:
        async def invalidate() -> None:
            await self._hooks.on_invalidate(agent_id, version)

        return self._tracked(agent_id, Job(False, version, work=invalidate))

    def _tracked(self, agent_id: str, job: Job) -> Job:
        """Mark ``agent_id`` as being repaired until ``job`` leaves the dispatcher (it ran, a
        newer job superseded it, or the subscriber stopped)."""
        self._repairing.add(agent_id)
        job.on_done = lambda: self._repairing.discard(agent_id)
        return job


async def _awaited(source: VersionSource, batch: list[str]) -> object:
    """Call the source; a source that is not async (returns no awaitable) fails the call."""
    result: object = source(batch)
    if not inspect.isawaitable(result):
        raise TypeError(f"the version source returned {type(result).__name__}, not an awaitable")
    return await result
