"""The subscriber: one connection's life (subscribe, resync, receive, notice loss, back off)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final, final

from .._config import BACKOFF_CAP, BACKOFF_CAP_VAR, environment_value, resolve_ms
from .._errors import RuntimeManagerClosed
from .._stats import RemovalCause
from . import _client
from ._bounded import finish_within
from ._client import close_quietly, make_client, redis_errors, require_redis
from ._dispatch import InvalidationTarget, _Dispatcher, _Inbox
from ._loss import LossWatch
from ._pacing import Breather, Liveness
from ._ratelog import RateLimitedLog
from ._redis_config import check_channel
from ._sentinel import SentinelEndpoint
from ._settings import InvalidationSettings, RedisEndpoint
from ._stats import InvalidationStats
from ._supervise import Run, Supervisor
from ._versions import (
    VersionCheck,
    VersionSource,
    VersionSourceFailed,
    resolve_timings,
    resync_target,
)
from ._wire import Dropped, InvalidationMessage, backoff_ms

logger = logging.getLogger(__name__)

# The longest one get_message() waits before the loop checks its deadlines again.
_POLL_S: Final = 1.0


DEFAULT_STOP_TIMEOUT_MS: Final = 5_000



# departure: the original's subscriber neither reconnected nor resynced after an outage.
@final
class InvalidationSubscriber:
    """Listens on the invalidation channel and applies each message to one manager.

    ``await start()`` never raises for an unreachable Redis: it logs a WARNING and retries in
    the background with capped exponential backoff and jitter. After every subscription that
    follows a lost connection or a failed attempt it resyncs, because pub/sub drops what was
    published meanwhile (the seed's subscriber did neither): with a ``version_source``, only
    the entries whose version changed or that were deleted are repaired; without one, or when
    the source fails, every cached entry is evicted. With a source, the same check also runs
    every ``reconcile_interval_ms`` while connected, catching publishes that never happened,
    and at once when snak's ``outbox_id`` shows a gap that stays open beyond the tolerance
    (``gap_tolerance_messages`` later messages or ``gap_tolerance_ms``, whichever first; see
    ``_gaps``). ``wall_clock`` (seconds since the epoch) measures the propagation lag from a
    message's ``processed_at``. ``client``: your Redis client, used and never closed.
    ``await stop()`` is clean at any point, also mid-reconnect. ``start()`` raises
    ``ImportError`` when the ``redis`` extra is missing.
    """

    def __init__(
        self,
        manager: InvalidationTarget,
        source: InvalidationSettings | str | None = None,
        *,
        channel: str | None = None,
        backoff_base_ms: int = 100,
        backoff_cap_ms: int | None = None,
        connect_timeout_ms: int = 2_000,
        health_check_interval_s: float = 10.0,
        rng: Callable[[], float] = random.random,
        version_source: VersionSource | None = None,
        version_source_timeout_ms: int | None = None,
        reconcile_interval_ms: int | None = None,
        stop_timeout_ms: int = DEFAULT_STOP_TIMEOUT_MS,
        gap_tolerance_messages: int | None = None,
        gap_tolerance_ms: int | None = None,
        wall_clock: Callable[[], float] = time.time,
        client: Any = None,
    ) -> None:
        if source is None:
            settings = InvalidationSettings()
        elif isinstance(source, str):
            settings = InvalidationSettings.for_url(source)
        else:
            settings = source
        self._client = client  # the application's (``_client.quiet_pubsub``): used, never closed
        self._endpoint = settings.target() if client is None else _client.endpoint_of(client)
        self._channel = check_channel("channel", channel) if channel else settings.channel
        # Keyword > AGENT_CFG_BACKOFF_CAP_MS (settings, else the environment: for_url settings
        # skip it) > default, under a built-in guard, never below the base.
        # Unset, or dropped as unparseable: the variable's text (resolve_ms warns about it).
        raw_cap: int | str | None = settings.backoff_cap_ms
        if raw_cap is None:
            raw_cap = environment_value(BACKOFF_CAP_VAR)
        backoff_cap_ms, _ = resolve_ms(
            BACKOFF_CAP, backoff_cap_ms, raw_cap, [], minimum=backoff_base_ms
        )
        backoff_ms(0, base_ms=backoff_base_ms, cap_ms=backoff_cap_ms)  # validates both
        self._backoff_base_ms = backoff_base_ms
        self._backoff_cap_ms = backoff_cap_ms
        self._connect_timeout_s = connect_timeout_ms / 1000
        if health_check_interval_s <= 0:
            raise ValueError(f"health_check_interval_s must be > 0, got {health_check_interval_s}")
        self._health_s = health_check_interval_s
        if isinstance(stop_timeout_ms, bool) or not isinstance(stop_timeout_ms, int) or (
            stop_timeout_ms <= 0
        ):
            raise ValueError(f"stop_timeout_ms must be an integer > 0, got {stop_timeout_ms!r}")
        self._stop_timeout_s = stop_timeout_ms / 1000
        self._rng = rng
        self._manager = manager
        self._log = RateLimitedLog(logger)  # bad input: one line per reason per minute
        timings = resolve_timings(
            settings,
            has_source=version_source is not None,
            source_timeout_ms=version_source_timeout_ms,
            reconcile_interval_ms=reconcile_interval_ms,
            gap_tolerance_messages=gap_tolerance_messages,
            gap_tolerance_ms=gap_tolerance_ms,
        )
        # Loss detection needs a source to reconcile with (resolve_timings gives 0 without).
        self._loss = LossWatch(timings.gap_tolerance_messages, timings.gap_tolerance_ms, wall_clock)
        self._dispatcher = _Dispatcher(manager, self._loss.applied)
        observe = None if self._loss.gaps is None else self._loss.observe
        self._inbox = _Inbox(self._dispatcher, self._log, observe)
        self._reconcile_s = timings.reconcile_interval_ms / 1000
        self._hooks = resync_target(manager)
        self._check: VersionCheck | None = None
        if version_source is not None:
            if self._hooks is None:
                raise TypeError("version_source needs an AgentRuntimeManager as the target")
            self._check = VersionCheck(
                self._hooks,
                version_source,
                timings.source_timeout_ms,
                self._dispatcher.submit_job,
                self._log,
            )
        self._run: Run | None = None
        self._supervisor = Supervisor(base_ms=backoff_base_ms, cap_ms=backoff_cap_ms, rng=rng)
        self._task: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # subscribed (and resynced) right now
        self._settled = asyncio.Event()  # the first attempt succeeded or failed: start() returns
        # Something may have been published that we did not hear (a lost connection, a failed
        # attempt, a stop): the next subscription resyncs. Not for the very first one.
        self._resync_due = False
        self._reconnects = 0
        self._resyncs = 0
        self._resync_evictions = 0  # by evicting everything (the version check counts its own)
        self._reconciliations = 0

    @property
    def channel(self) -> str:
        return self._channel

    @property
    def endpoint(self) -> RedisEndpoint | SentinelEndpoint:
        return self._endpoint

    @property
    def connected(self) -> bool:
        """Subscribed right now (and resynced, if this followed an outage)."""
        return self._connected.is_set()

    async def start(self) -> None:
        """Start listening; returns once subscribed or after the first failed attempt.

        Never raises for connection problems. A second call is a no-op.
        """
        if self._task is not None:
            return
        require_redis()  # a missing extra fails here, loudly, not in the background task
        run = self._run = Run()
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(
            self._supervisor.run(
                "listener", lambda: self._listen(run), run, self._listener_restart
            ),
            name=f"snak-invalidation:{self._channel}",
        )
        self._task.add_done_callback(_log_if_died)
        if self._check is not None and (self._reconcile_s > 0 or self._loss.gaps is not None):
            self._reconciler = loop.create_task(
                self._supervisor.run("reconciler", lambda: self._reconcile_forever(run), run),
                name=f"snak-invalidation-reconcile:{self._channel}",
            )
            self._reconciler.add_done_callback(_log_if_died)
        # Bounded even if the server accepts connections but never answers.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout_s * 3):
                await self._settled.wait()

    async def stop(self) -> None:
        """Stop listening, close the connection and cancel queued work. Idempotent.

        Returns within ``stop_timeout_ms`` (5 s by default) whatever the code it waits for
        does: a task that has not ended by then (a manager call or a version source that
        ignores its cancellation, or a listener whose cancellation Python 3.11's ``wait_for``
        lost) is abandoned with a WARNING, and its loop stops at its next turn.
        """
        run, self._run = self._run, None
        task, self._task = self._task, None
        reconciler, self._reconciler = self._reconciler, None
        if run is not None:
            run.stopped = True
        deadline = asyncio.get_running_loop().time() + self._stop_timeout_s
        tasks = [t for t in (reconciler, task) if t is not None]
        # Re-cancelled only after a listener's own bounded clean-up could have finished.
        left = await finish_within(
            tasks, deadline, "the invalidation listener", _client.RECANCEL_AFTER_S
        )
        if task is not None:
            self._resync_due = True  # deaf from now on: a later start() must resync
        self._connected.clear()
        left += await finish_within(
            self._dispatcher.cancel(), deadline, "an invalidation being applied"
        )
        if left:
            logger.warning(
                "invalidation subscriber: %d task(s) ignored their cancellation for %.1f s; "
                "stop() abandoned them (they end by themselves, or never)",
                len(left),
                self._stop_timeout_s,
            )
        if self._check is not None:
            self._check.forget_repairs()
        self._log.flush()

    async def __aenter__(self) -> InvalidationSubscriber:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_connected(self) -> None:
        """Wait until subscribed (use under ``asyncio.timeout``)."""
        await self._connected.wait()

    def submit(self, data: bytes | str) -> InvalidationMessage | Dropped:
        """Apply one payload as if it had arrived on the channel (also for other transports)."""
        return self._inbox.accept(data)

    async def drain(self) -> None:
        """Wait until every message received so far has been applied."""
        await self._dispatcher.drain()

    def stats(self) -> InvalidationStats:
        return _snapshot(self)

    # --- the connection loop -----------------------------------------------------------------

    def _listener_restart(self) -> None:
        """The listener died unexpectedly: whatever it was doing, a resync is due."""
        self._connected.clear()
        self._resync_due = True
        self._settled.set()  # start() must not wait for a listener that is backing off

    async def _listen(self, run: Run | None = None) -> None:
        """Connect, subscribe, resync if due, receive until the connection fails; back off."""
        run = run if run is not None else Run()
        errors = redis_errors()
        where = self._endpoint.describe()
        failed = 0  # attempts failed since the last subscription: the backoff exponent
        while not run.stopped:
            client = self._client or make_client(self._endpoint, timeout_s=self._connect_timeout_s)
            pubsub = _client.quiet_pubsub(client)
            try:
                await self._subscribe(pubsub)
                await self._on_subscribed(where, failed)
                failed = 0
                await self._receive(pubsub, run)
            except errors as exc:
                self._on_lost(where, failed, exc)
            except Exception:
                # A bug in the client must not end invalidation for the process. (A bad
                # message cannot get here: the inbox never raises.)
                self._on_lost(where, failed, None)
                logger.exception("invalidation subscriber: unexpected error on %s", where)
            finally:
                await close_quietly(pubsub, *(() if self._client else (client,)))
            self._settled.set()
            delay = backoff_ms(
                failed, base_ms=self._backoff_base_ms, cap_ms=self._backoff_cap_ms, rng=self._rng
            )
            failed += 1
            await asyncio.sleep(delay / 1000)

    async def _subscribe(self, pubsub: Any) -> None:
        """Subscribe and wait for the server's confirmation; ``TimeoutError`` without one."""
        self._loss.reset()  # a new connection: its resync covers what the last one lost
        limit_s = self._connect_timeout_s * 2
        async with asyncio.timeout(limit_s):
            await pubsub.subscribe(self._channel)
        loop = asyncio.get_running_loop()
        confirm_by = loop.time() + limit_s
        breather = Breather(loop)
        while loop.time() <= confirm_by:
            message = await pubsub.get_message(timeout=min(_POLL_S, self._health_s))
            if message is None:
                breather.rested()
                continue
            if message["type"] == "subscribe":
                return
            if message["type"] == "message":
                self._inbox.accept(message["data"])
            if breather.due():
                await asyncio.sleep(0)
                breather.rested()
        raise TimeoutError(f"no subscribe confirmation within {limit_s}s")

    async def _receive(self, pubsub: Any, run: Run | None = None) -> None:
        """Hand messages to the inbox until the connection fails (raises) or is cancelled.

        Yields to the event loop every ``YIELD_EVERY`` messages or ``YIELD_AFTER_S`` of work,
        whichever comes first (issue 23: a 100,000-message burst held the loop for seconds).
        """
        run = run if run is not None else Run()
        loop = asyncio.get_running_loop()
        liveness = Liveness(self._health_s, loop.time())
        breather = Breather(loop)
        while not run.stopped:
            if liveness.ping_due(loop.time()):
                await pubsub.ping()
            message = await pubsub.get_message(timeout=min(_POLL_S, self._health_s))
            if message is None:
                self._loss.poll(loop.time())  # a gap's time tolerance runs out when quiet too
                breather.rested()  # it waited for data: the loop ran meanwhile
                continue
            liveness.heard(loop.time())
            if message["type"] == "message":
                self._inbox.accept(message["data"])
                self._loss.poll(loop.time())
            if breather.due():
                await asyncio.sleep(0)
                breather.rested()

    async def _on_subscribed(self, where: str, failed: int) -> None:
        # Subscribed before resyncing: anything published from here on is in our socket, so
        # nothing falls between the resync and the first message.
        if self._resync_due:
            self._reconnects += 1
            logger.info(
                "invalidation subscriber: reconnected to %s after %d attempt(s); resyncing",
                where,
                failed,
            )
            try:
                await self._resync()
            except RuntimeManagerClosed:
                logger.debug("invalidation subscriber: no resync, the manager is closed")
            self._resync_due = False
        else:
            logger.info("invalidation subscriber: listening on %s channel %r", where, self._channel)
        self._connected.set()
        self._settled.set()

    async def _resync(self) -> None:
        """Repair what may have been missed: by version with a source, else evict everything."""
        if self._check is not None:
            try:
                repairs = await self._check.run()
            except VersionSourceFailed as exc:
                logger.warning(
                    "invalidation subscriber: the version source failed after the reconnect "
                    "(%s); evicting every cached runtime (cause resync)",
                    exc,
                )
            else:
                self._resyncs += 1
                logger.info("invalidation subscriber: resync queued %d repair(s)", repairs)
                return
        else:
            logger.warning(
                "invalidation subscriber: no version source, so every cached runtime may be "
                "stale after the reconnect; evicting them all (cause resync)"
            )
        if self._hooks is not None:
            removed = await self._hooks.evict_all(cause=RemovalCause.RESYNC)
        else:  # a target of the user's own: its evict_all() is all we know
            removed = await self._manager.evict_all()
        self._resync_evictions += removed
        self._resyncs += 1
        logger.info("invalidation subscriber: resync evicted %d runtime(s)", removed)

    async def _reconcile_forever(self, run: Run | None = None) -> None:
        """While connected, repeat the version check: catches publishes that never happened;
        at once, too, when the gap tracker gave up an outbox id as lost.

        A failing source is counted and retried at the next interval; it never empties the
        cache (only a reconnect falls back to evicting everything).
        """
        assert self._check is not None
        run = run if run is not None else Run()
        while not run.stopped:
            gap = await self._loss.next_reconciliation(self._reconcile_s)
            if run.stopped:
                return
            if not self.connected:
                continue  # the reconnect's resync will do it
            try:
                repairs = await self._check.run()
            except VersionSourceFailed as exc:
                logger.warning(
                    "invalidation subscriber: reconciliation failed, the version source %s; "
                    "cache kept, retrying in %.0f ms",
                    exc,
                    self._reconcile_s * 1000,
                )
                continue
            except RuntimeManagerClosed:
                return
            except Exception:  # a bug must not end reconciliation for the process
                logger.exception("invalidation subscriber: reconciliation failed")
                continue
            if gap:
                self._loss.gap_reconciliations += 1
            else:
                self._reconciliations += 1
            if repairs:
                logger.info("invalidation subscriber: reconciliation queued %d repair(s)", repairs)

    def _on_lost(self, where: str, failed: int, exc: BaseException | None) -> None:
        was_connected = self.connected
        self._connected.clear()
        self._resync_due = True
        if exc is None:
            return
        if was_connected or failed == 0:
            logger.warning(
                "invalidation subscriber: %s on %s (%s: %s); cached runtimes may go "
                "stale until it reconnects, retrying in the background",
                "connection lost" if was_connected else "cannot connect",
                where,
                type(exc).__name__,
                exc,
            )
        else:
            logger.debug("invalidation subscriber: retry %d failed: %r", failed, exc)


def _snapshot(sub: InvalidationSubscriber) -> InvalidationStats:
    """The subscriber's counters, read from its parts (outside the class: it only reads)."""
    inbox, dispatcher, check = sub._inbox, sub._dispatcher, sub._check
    loss, gaps = sub._loss, sub._loss.gaps
    return InvalidationStats(
        received=inbox.received,
        applied=dispatcher.applied,
        failures=dispatcher.failures,
        unknown_events=inbox.unknown_events,
        reconnects=sub._reconnects,
        resyncs=sub._resyncs,
        resync_evictions=sub._resync_evictions + (check.evictions if check else 0),
        version_checked=check.checked if check else 0,
        version_repaired=check.repaired if check else 0,
        version_unusable=check.unusable if check else 0,
        version_source_failures=check.source_failures if check else 0,
        version_source_abandoned=check.abandoned if check else 0,
        reconciliations=sub._reconciliations,
        coalesced=dispatcher.coalesced,
        restarts=sub._supervisor.restarts,
        gaps_detected=gaps.gaps_detected if gaps else 0,
        gap_reconciliations=loss.gap_reconciliations,
        gap_resets=gaps.resets if gaps else 0,
        malformed_outbox_ids=inbox.malformed_outbox_ids,
        malformed_processed_at=inbox.malformed_processed_at,
        lag_clamped=loss.lag.clamped,
        lag_buckets=tuple(loss.lag.buckets),
        lag_time_ms=loss.lag.total_ms,
        connected=sub.connected,
        pending=dispatcher.pending,
        dropped=MappingProxyType(dict(inbox.dropped)),
    )


def _log_if_died(task: asyncio.Task[None]) -> None:
    """The listener only ends when cancelled; anything else leaves the process deaf: say so."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error(
            "invalidation subscriber stopped: %r; this process no longer receives invalidations",
            exc,
            exc_info=exc,
        )
