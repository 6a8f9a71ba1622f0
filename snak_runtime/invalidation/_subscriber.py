"""The subscriber: one connection's life (subscribe, resync, receive, notice loss, back off)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from types import MappingProxyType
from typing import Any, Final, final

from .._errors import RuntimeManagerClosed
from ._client import cancel_and_wait, close_quietly, make_client, redis_errors, require_redis
from ._dispatch import InvalidationTarget, _Dispatcher, _Inbox
from ._sentinel import SentinelEndpoint
from ._settings import InvalidationSettings, RedisEndpoint
from ._stats import InvalidationStats
from ._wire import Dropped, InvalidationMessage, backoff_ms

logger = logging.getLogger(__name__)

# The longest one get_message() waits before the loop checks its deadlines again.
_POLL_S: Final = 1.0


@final
class _Liveness:
    """Our own liveness check: a silent server is PINGed, and must answer in time.

    A server that stops answering (a frozen process, a half-open TCP connection) keeps the
    connection open; without this the process would stay deaf without knowing.
    """

    def __init__(self, interval_s: float, now: float) -> None:
        self._interval_s = interval_s
        self._quiet_until = now + interval_s  # silence after this: PING
        self._pong_by: float | None = None

    def heard(self, now: float) -> None:
        """Anything arrived: the server is alive."""
        self._quiet_until, self._pong_by = now + self._interval_s, None

    def ping_due(self, now: float) -> bool:
        """Silent for a whole interval; raises ``TimeoutError`` if a PING went unanswered."""
        if self._pong_by is not None:
            if now > self._pong_by:
                raise TimeoutError(f"no reply to PING within {self._interval_s}s")
            return False
        if now < self._quiet_until:
            return False
        self._pong_by = now + self._interval_s
        return True


# departure: the original's subscriber neither reconnected nor resynced after an outage.
@final
class InvalidationSubscriber:
    """Listens on the invalidation channel and applies each message to one manager.

    ``await start()`` never raises for an unreachable Redis: it logs a WARNING and retries in
    the background with capped exponential backoff and jitter. After every subscription that
    follows a lost connection or a failed attempt, it calls ``manager.evict_all()``: pub/sub
    drops what was published meanwhile, so every cached entry may be stale (the seed's
    subscriber did neither). ``await stop()`` is clean at any point, also mid-reconnect.
    ``start()`` raises ``ImportError`` when the ``redis`` extra is missing.
    """

    def __init__(
        self,
        manager: InvalidationTarget,
        source: InvalidationSettings | str | None = None,
        *,
        channel: str | None = None,
        backoff_base_ms: int = 100,
        backoff_cap_ms: int = 5_000,
        connect_timeout_ms: int = 2_000,
        health_check_interval_s: float = 10.0,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if source is None:
            settings = InvalidationSettings()
        elif isinstance(source, str):
            settings = InvalidationSettings.for_url(source)
        else:
            settings = source
        self._endpoint = settings.target()
        self._channel = channel or settings.channel
        backoff_ms(0, base_ms=backoff_base_ms, cap_ms=backoff_cap_ms)  # validates both
        self._backoff_base_ms = backoff_base_ms
        self._backoff_cap_ms = backoff_cap_ms
        self._connect_timeout_s = connect_timeout_ms / 1000
        if health_check_interval_s <= 0:
            raise ValueError(f"health_check_interval_s must be > 0, got {health_check_interval_s}")
        self._health_s = health_check_interval_s
        self._rng = rng
        self._manager = manager
        self._dispatcher = _Dispatcher(manager)
        self._inbox = _Inbox(self._dispatcher)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()  # subscribed (and resynced) right now
        self._settled = asyncio.Event()  # the first attempt succeeded or failed: start() returns
        # Something may have been published that we did not hear (a lost connection, a failed
        # attempt, a stop): the next subscription resyncs. Not for the very first one.
        self._resync_due = False
        self._reconnects = 0
        self._resyncs = 0
        self._resync_evictions = 0

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
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"snak-invalidation:{self._channel}"
        )
        self._task.add_done_callback(_log_if_died)
        # Bounded even if the server accepts connections but never answers.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout_s * 3):
                await self._settled.wait()

    async def stop(self) -> None:
        """Stop listening, close the connection and cancel queued work. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)  # not task.cancel(): Python 3.11 can lose one
            self._resync_due = True  # deaf from now on: a later start() must resync
        self._connected.clear()
        await self._dispatcher.aclose()

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
        inbox, dispatcher = self._inbox, self._dispatcher
        return InvalidationStats(
            received=inbox.received,
            applied=dispatcher.applied,
            failures=dispatcher.failures,
            unknown_events=inbox.unknown_events,
            reconnects=self._reconnects,
            resyncs=self._resyncs,
            resync_evictions=self._resync_evictions,
            connected=self.connected,
            pending=dispatcher.pending,
            dropped=MappingProxyType(dict(inbox.dropped)),
        )

    # --- the connection loop -----------------------------------------------------------------

    async def _listen(self) -> None:
        """Connect, subscribe, resync if due, receive until the connection fails; back off."""
        errors = redis_errors()
        where = self._endpoint.describe()
        failed = 0  # attempts failed since the last subscription: the backoff exponent
        while True:
            client = make_client(self._endpoint, timeout_s=self._connect_timeout_s)
            pubsub = client.pubsub()
            try:
                await self._subscribe(pubsub)
                await self._on_subscribed(where, failed)
                failed = 0
                await self._receive(pubsub)
            except errors as exc:
                self._on_lost(where, failed, exc)
            except Exception:
                # A bug in a parser or client must not end invalidation for the process.
                self._on_lost(where, failed, None)
                logger.exception("invalidation subscriber: unexpected error on %s", where)
            finally:
                await close_quietly(pubsub, client)
            self._settled.set()
            delay = backoff_ms(
                failed, base_ms=self._backoff_base_ms, cap_ms=self._backoff_cap_ms, rng=self._rng
            )
            failed += 1
            await asyncio.sleep(delay / 1000)

    async def _subscribe(self, pubsub: Any) -> None:
        """Subscribe and wait for the server's confirmation; ``TimeoutError`` without one."""
        limit_s = self._connect_timeout_s * 2
        async with asyncio.timeout(limit_s):
            await pubsub.subscribe(self._channel)
        loop = asyncio.get_running_loop()
        confirm_by = loop.time() + limit_s
        while loop.time() <= confirm_by:
            message = await pubsub.get_message(timeout=min(_POLL_S, self._health_s))
            if message is None:
                continue
            if message["type"] == "subscribe":
                return
            if message["type"] == "message":
                self._inbox.accept(message["data"])
        raise TimeoutError(f"no subscribe confirmation within {limit_s}s")

    async def _receive(self, pubsub: Any) -> None:
        """Hand messages to the inbox until the connection fails (raises) or is cancelled."""
        loop = asyncio.get_running_loop()
        liveness = _Liveness(self._health_s, loop.time())
        while True:
            if liveness.ping_due(loop.time()):
                await pubsub.ping()
            message = await pubsub.get_message(timeout=min(_POLL_S, self._health_s))
            if message is None:
                continue
            liveness.heard(loop.time())
            if message["type"] == "message":
                self._inbox.accept(message["data"])

    async def _on_subscribed(self, where: str, failed: int) -> None:
        # Subscribed before resyncing: anything published from here on is in our socket, so
        # nothing falls between the eviction and the first message.
        if self._resync_due:
            self._reconnects += 1
            removed = await self._resync()
            self._resync_due = False
            logger.info(
                "invalidation subscriber: reconnected to %s after %d attempt(s); "
                "evicted %d possibly stale runtime(s)",
                where,
                failed,
                removed,
            )
        else:
            logger.info("invalidation subscriber: listening on %s channel %r", where, self._channel)
        self._connected.set()
        self._settled.set()

    async def _resync(self) -> int:
        """Forget what may have been missed: evict every cached entry; return how many."""
        try:
            removed = await self._manager.evict_all()
        except RuntimeManagerClosed:
            return 0
        self._resyncs += 1
        self._resync_evictions += removed
        return removed

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


def _log_if_died(task: asyncio.Task[None]) -> None:
    """The listener only ends when cancelled; anything else leaves the process deaf: say so."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.error(
            "invalidation subscriber stopped: %r; this process no longer receives invalidations",
            exc,
            exc_info=exc,
        )
