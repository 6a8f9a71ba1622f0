"""Fleet-wide invalidation over Redis pub/sub, wire-compatible with snak (the `redis` extra).

``redis`` is imported only when something connects: with no Redis variable set, importing this
module, building its settings or running the container's ``invalidation`` resource never needs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final, Protocol, final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from ._errors import RuntimeManagerClosed
from ._sentinel import (
    DIRECT_VARS,
    SENTINEL_MASTER_VAR,
    SENTINELS_VAR,
    RedisConfigError,
    SentinelAddress,
    SentinelEndpoint,
    master_from_keyword,
    sentinel_endpoint_from_env,
    sentinels_from_keyword,
)
from ._wire import (
    MAX_AGENT_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    Action,
    Dropped,
    DropReason,
    InvalidationMessage,
    backoff_ms,
    encode_message,
    parse_message,
)

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = (
    "DEFAULT_CHANNEL",
    "MAX_AGENT_ID_CHARS",
    "MAX_PAYLOAD_BYTES",
    "Action",
    "DropReason",
    "Dropped",
    "InvalidationMessage",
    "InvalidationSettings",
    "InvalidationStats",
    "InvalidationSubscriber",
    "InvalidationTarget",
    "RedisConfigError",
    "RedisEndpoint",
    "SentinelEndpoint",
    "backoff_ms",
    "encode_message",
    "parse_message",
    "publish_invalidation",
    "run_invalidation",
)

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL: Final = "agent_cfg_invalidate"
_DEFAULT_HOST: Final = "localhost"
_DEFAULT_PORT: Final = 6379
# The longest one get_message() waits before the loop checks its deadlines again.
_POLL_S: Final = 1.0
_CLOSE_TIMEOUT_S: Final = 2.0


class InvalidationTarget(Protocol):
    """What the subscriber drives: ``AgentRuntimeManager`` fits without inheriting."""

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

    async def evict(self, agent_id: str) -> bool: ...

    async def evict_all(self) -> int: ...


# ---------------------------------------------------------------------------------------------
# Settings


@final
@dataclass(frozen=True, slots=True, repr=False)
class RedisEndpoint:
    """Where to connect: a URL (``REDIS_URL``) or host/port/password/db, resolved once."""

    url: str | None = None
    host: str = _DEFAULT_HOST
    port: int = _DEFAULT_PORT
    password: str | None = None
    db: int = 0

    def __repr__(self) -> str:
        return f"RedisEndpoint({self.describe()!r})"  # never the password

    def describe(self) -> str:
        """The location for logs, without credentials."""
        if self.url is not None:
            parts = urlsplit(self.url)
            netloc = parts.hostname or ""
            if parts.port is not None:
                netloc = f"{netloc}:{parts.port}"
            return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return f"redis://{self.host}:{self.port}/{self.db}"


class InvalidationSettings(BaseSettings):
    """Redis connection and channel, from snak's environment variables.

    ``REDIS_URL`` wins over ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``.
    With none of them set, ``configured`` is false and nothing connects. Fields hold raw text:
    a bad port or db is ignored with a WARNING when the endpoint is resolved (never at load).
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str | None = Field(default=None, validation_alias="REDIS_HOST")
    redis_port: str | None = Field(default=None, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    redis_db: str | None = Field(default=None, validation_alias="REDIS_DB")
    # Redis Sentinel (issue 17): the sentinels name the master; REDIS_PASSWORD/REDIS_DB apply to it.
    redis_sentinels: str | None = Field(default=None, validation_alias=SENTINELS_VAR)
    redis_sentinel_master: str | None = Field(default=None, validation_alias=SENTINEL_MASTER_VAR)
    channel: str = Field(default=DEFAULT_CHANNEL, validation_alias="AGENT_CFG_INVALIDATE_CHANNEL")

    @classmethod
    def for_url(cls, url: str, *, channel: str | None = None) -> InvalidationSettings:
        """Settings for this URL; the channel from ``channel``, else the environment."""
        # An explicit URL replaces Sentinel variables from the environment (keyword > environment).
        values: dict[str, Any] = {"REDIS_URL": url, SENTINELS_VAR: None, SENTINEL_MASTER_VAR: None}
        if channel is not None:
            values["AGENT_CFG_INVALIDATE_CHANNEL"] = channel
        return cls.model_validate(values)

    @classmethod
    def for_sentinels(
        cls,
        sentinels: str | Iterable[str | SentinelAddress],
        master: str,
        *,
        password: str | None = None,
        db: int | None = None,
        channel: str | None = None,
    ) -> InvalidationSettings:
        """Settings that find the master through Redis Sentinel.

        ``sentinels`` is ``"host:port,..."`` or an iterable of ``"host:port"`` / ``(host, port)``;
        ``master`` is the service name the sentinels monitor; ``password``/``db`` are the
        master's. A bad value is a ``ValueError``. These replace the environment's addresses
        (``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT`` are not read); what is left ``None``
        (``password``, ``db``, ``channel``) comes from the environment.
        """
        found = sentinels_from_keyword(sentinels)
        if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
            raise ValueError(f"db must be an integer >= 0, got {db!r}")
        values: dict[str, Any] = {
            SENTINELS_VAR: ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in found),
            SENTINEL_MASTER_VAR: master_from_keyword(master),
            **dict.fromkeys(DIRECT_VARS),
        }
        if db is not None:
            values["REDIS_DB"] = str(db)
        if password is not None:
            values["REDIS_PASSWORD"] = password
        if channel is not None:
            values["AGENT_CFG_INVALIDATE_CHANNEL"] = channel
        return cls.model_validate(values)

    @property
    def configured(self) -> bool:
        """Whether any Redis variable is set (else the embedded default: nothing connects)."""
        return any(
            v is not None
            for v in (
                self.redis_url,
                self.redis_host,
                self.redis_port,
                self.redis_password,
                self.redis_db,
                self.redis_sentinels,
                self.redis_sentinel_master,
            )
        )

    def target(self) -> RedisEndpoint | SentinelEndpoint:
        """Where to connect: a ``SentinelEndpoint`` when ``REDIS_SENTINELS`` or
        ``REDIS_SENTINEL_MASTER`` is set, else ``endpoint()``.

        Sentinel beside ``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT`` raises ``RedisConfigError``
        (a start-up error saying which to drop); every other fault is a WARNING (issue 17).
        """
        password = self.redis_password
        direct = (self.redis_url, self.redis_host, self.redis_port)
        sentinel = sentinel_endpoint_from_env(
            self.redis_sentinels,
            self.redis_sentinel_master,
            password=None if password is None else password.get_secret_value(),
            db=_int_var("REDIS_DB", self.redis_db, 0, 0, 1_000_000),
            direct_vars=[n for n, raw in zip(DIRECT_VARS, direct, strict=True) if raw is not None],
        )
        return self.endpoint() if sentinel is None else sentinel

    def endpoint(self) -> RedisEndpoint:
        """Resolve the direct connection target; unparseable port/db fall back with a WARNING."""
        if self.redis_url is not None:
            return RedisEndpoint(url=self.redis_url.get_secret_value())
        return RedisEndpoint(
            host=(self.redis_host or "").strip() or _DEFAULT_HOST,
            port=_int_var("REDIS_PORT", self.redis_port, _DEFAULT_PORT, 1, 65_535),
            password=None
            if self.redis_password is None
            else self.redis_password.get_secret_value(),
            db=_int_var("REDIS_DB", self.redis_db, 0, 0, 1_000_000),
        )


def _int_var(name: str, raw: str | None, default: int, low: int, high: int) -> int:
    if raw is None:
        return default
    text = raw.strip()
    if text.lstrip("+-").isdigit() and text.isascii():
        value = int(text)
        if low <= value <= high:
            return value
    logger.warning(
        "%s=%r ignored: not an integer in %d..%d; using %d", name, raw, low, high, default
    )
    return default


def _make_client(endpoint: RedisEndpoint | SentinelEndpoint, *, timeout_s: float) -> Redis:
    """A client that never retries or reconnects behind our back.

    redis-py's retry layer would reconnect a pub/sub connection and resubscribe silently, and
    whatever was published in between would be lost without the subscriber knowing: every
    error must reach our loop so it can resync.
    """
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,  # commands; pub/sub reads pass their own timeout
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
    }
    if isinstance(endpoint, SentinelEndpoint):
        from ._sentinel_client import sentinel_master_client

        return sentinel_master_client(endpoint, options)
    if endpoint.url is not None:
        client: Redis = Redis.from_url(endpoint.url, **options)
        return client
    return Redis(
        host=endpoint.host,
        port=endpoint.port,
        password=endpoint.password,
        db=endpoint.db,
        **options,
    )


def _redis_errors() -> tuple[type[BaseException], ...]:
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


# ---------------------------------------------------------------------------------------------
# Stats


@final
@dataclass(frozen=True, slots=True)
class InvalidationStats:
    """A snapshot of the subscriber's counters.

    ``received``: payloads handed to the dispatcher (valid or not); ``applied``: messages whose
    ``on_invalidate``/``evict`` returned; ``failures``: those that raised (a failed rebuild
    already evicted the entry); ``dropped``: invalid payloads by ``DropReason`` value;
    ``unknown_events``: valid messages with an unknown ``event`` (evicted);
    ``reconnects``: subscriptions established after a lost connection or a failed attempt;
    ``resyncs`` / ``resync_evictions``: ``evict_all()`` calls after those, and entries they removed.
    """

    received: int = 0
    applied: int = 0
    failures: int = 0
    unknown_events: int = 0
    reconnects: int = 0
    resyncs: int = 0
    resync_evictions: int = 0
    connected: bool = False
    pending: int = 0
    dropped: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def dropped_total(self) -> int:
        return sum(self.dropped.values())


# ---------------------------------------------------------------------------------------------
# Dispatch: per-agent FIFO, agents independent


@final
class _Dispatcher:
    """Applies messages to the target: in arrival order per agent, agents in parallel.

    One task per agent id with work queued; it exits when its queue is empty, so idle agents
    cost nothing. The check "queue empty, so leave" and "worker present, so append" never
    straddle an ``await``, so no message is stranded.
    """

    def __init__(self, target: InvalidationTarget) -> None:
        self._target = target
        self._queues: dict[str, deque[InvalidationMessage]] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self.received = 0
        self.applied = 0
        self.failures = 0
        self.unknown_events = 0
        self.dropped: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def submit(self, data: bytes | str) -> InvalidationMessage | Dropped:
        """Parse one payload and queue it for its agent; drops are logged and counted here."""
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
        queue = self._queues.get(parsed.agent_id)
        if queue is not None:
            queue.append(parsed)
        else:
            self._queues[parsed.agent_id] = deque((parsed,))
            self._idle.clear()
            task = asyncio.get_running_loop().create_task(
                self._run(parsed.agent_id), name=f"snak-invalidate:{parsed.agent_id}"
            )
            self._tasks[parsed.agent_id] = task
        return parsed

    async def _run(self, agent_id: str) -> None:
        queue = self._queues[agent_id]
        try:
            while queue:
                await self._apply(queue[0])
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

    async def drain(self) -> None:
        """Wait until every queued message has been applied."""
        await self._idle.wait()

    async def aclose(self) -> None:
        """Cancel queued and running work (a cancelled rebuild evicts its entry) and wait."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# ---------------------------------------------------------------------------------------------
# Subscriber


# departure: the original's subscriber neither reconnected nor resynced after an outage.
@final
class InvalidationSubscriber:
    """Listens on the invalidation channel and applies each message to one manager.

    ``await start()`` never raises for an unreachable Redis: it logs a WARNING and retries in
    the background with capped exponential backoff and jitter. After every subscription that
    follows a lost connection or a failed attempt, it calls ``manager.evict_all()``: pub/sub
    drops what was published meanwhile, so every cached entry may be stale (the seed's
    subscriber did neither). ``await stop()`` is clean at any point, also mid-reconnect.
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
        self._dispatcher = _Dispatcher(manager)
        self._manager = manager
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._first_attempt = asyncio.Event()
        self._lost = False  # a connection was lost or an attempt failed since the last resync
        self._failed_attempts = 0  # since the last subscription; drives the backoff
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
        self._task = asyncio.get_running_loop().create_task(
            self._listen(), name=f"snak-invalidation:{self._channel}"
        )
        # Bounded even if the server accepts connections but never answers.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self._connect_timeout_s * 3):
                await self._first_attempt.wait()

    async def stop(self) -> None:
        """Stop listening, close the connection and cancel queued work. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            self._lost = True  # deaf from now on: a later start() must resync
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
        return self._dispatcher.submit(data)

    async def drain(self) -> None:
        """Wait until every message received so far has been applied."""
        await self._dispatcher.drain()

    def stats(self) -> InvalidationStats:
        d = self._dispatcher
        return InvalidationStats(
            received=d.received,
            applied=d.applied,
            failures=d.failures,
            unknown_events=d.unknown_events,
            reconnects=self._reconnects,
            resyncs=self._resyncs,
            resync_evictions=self._resync_evictions,
            connected=self.connected,
            pending=d.pending,
            dropped=MappingProxyType(dict(d.dropped)),
        )

    async def _listen(self) -> None:
        errors = _redis_errors()
        where = self._endpoint.describe()
        while True:
            client = _make_client(self._endpoint, timeout_s=self._connect_timeout_s)
            pubsub = client.pubsub()
            try:
                async with asyncio.timeout(self._connect_timeout_s * 2):
                    await pubsub.subscribe(self._channel)
                await self._receive(pubsub, where)
            except errors as exc:
                was_connected = self.connected
                self._connected.clear()
                self._lost = True
                if was_connected or self._failed_attempts == 0:
                    logger.warning(
                        "invalidation subscriber: %s on %s (%s: %s); cached runtimes may go "
                        "stale until it reconnects, retrying in the background",
                        "connection lost" if was_connected else "cannot connect",
                        where,
                        type(exc).__name__,
                        exc,
                    )
                else:
                    logger.debug(
                        "invalidation subscriber: retry %d failed: %r", self._failed_attempts, exc
                    )
            except Exception:
                # A bug in a parser or client must not end invalidation for the process.
                self._connected.clear()
                self._lost = True
                logger.exception("invalidation subscriber: unexpected error on %s", where)
            finally:
                await _close_quietly(pubsub, client)
            self._first_attempt.set()
            delay = backoff_ms(
                self._failed_attempts,
                base_ms=self._backoff_base_ms,
                cap_ms=self._backoff_cap_ms,
                rng=self._rng,
            )
            self._failed_attempts += 1
            await asyncio.sleep(delay / 1000)

    async def _receive(self, pubsub: Any, where: str) -> None:
        """Hand messages to the dispatcher until the connection fails (raises) or is cancelled.

        Liveness is ours, not redis-py's: a server that stops answering (a frozen process, a
        half-open TCP connection) must surface as an error, or this process would stay deaf
        without knowing. So: no subscribe confirmation within the deadline, or no reply to a
        PING sent after ``health_check_interval_s`` of silence, raises ``TimeoutError``.
        """
        loop = asyncio.get_running_loop()
        confirm_by: float | None = loop.time() + self._connect_timeout_s * 2
        quiet_until = loop.time() + self._health_s  # silence after this: PING
        pong_by: float | None = None
        while True:
            now = loop.time()
            if confirm_by is not None and now > confirm_by:
                raise TimeoutError(
                    f"no subscribe confirmation within {self._connect_timeout_s * 2}s"
                )
            if pong_by is not None and now > pong_by:
                raise TimeoutError(f"no reply to PING within {self._health_s}s")
            if confirm_by is None and pong_by is None and now >= quiet_until:
                await pubsub.ping()
                pong_by = now + self._health_s
            message = await pubsub.get_message(timeout=min(_POLL_S, self._health_s))
            if message is None:
                continue
            quiet_until, pong_by = loop.time() + self._health_s, None  # the server is alive
            kind = message["type"]
            if kind == "message":
                self._dispatcher.submit(message["data"])
            elif kind == "subscribe":
                confirm_by = None
                await self._on_subscribed(where)

    async def _on_subscribed(self, where: str) -> None:
        # Subscribed before resyncing: anything published from here on is in our socket, so
        # nothing falls between the eviction and the first message.
        if self._lost:
            self._reconnects += 1
            try:
                removed = await self._manager.evict_all()
            except RuntimeManagerClosed:
                removed = 0
            else:
                self._resyncs += 1
                self._resync_evictions += removed
            self._lost = False
            logger.info(
                "invalidation subscriber: reconnected to %s after %d attempt(s); "
                "evicted %d possibly stale runtime(s)",
                where,
                self._failed_attempts,
                removed,
            )
        else:
            logger.info("invalidation subscriber: listening on %s channel %r", where, self._channel)
        self._failed_attempts = 0
        self._connected.set()
        self._first_attempt.set()


async def _close_quietly(*resources: Any) -> None:
    for resource in resources:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await resource.aclose()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # closing a dead connection may fail; nothing to do about it
            logger.debug("invalidation subscriber: close failed: %r", exc)


# ---------------------------------------------------------------------------------------------
# Publisher and container resource


async def publish_invalidation(
    agent_id: str,
    cfg_version: int,
    *,
    event: str | None = None,
    redis: Redis | InvalidationSettings | str | None = None,
    channel: str | None = None,
) -> int:
    """Publish one invalidation as snak does; returns how many subscribers received it.

    ``redis`` is a client (used as is), settings, a URL, or ``None`` for the environment.
    Raises ``ValueError``/``TypeError`` for a message subscribers would drop, ``RuntimeError``
    when no Redis is configured, and redis-py's errors when the server is unreachable.
    """
    payload = encode_message(agent_id, cfg_version, event)
    if redis is not None and not isinstance(redis, InvalidationSettings | str):
        return int(await redis.publish(channel or InvalidationSettings().channel, payload))
    if isinstance(redis, str):
        settings = InvalidationSettings.for_url(redis)
    else:
        settings = redis if redis is not None else InvalidationSettings()
    if not settings.configured:
        raise RuntimeError(
            "Redis is not configured: set REDIS_URL or REDIS_HOST/REDIS_PORT to publish "
            "invalidations (a single process calls manager.on_invalidate() directly)"
        )
    client = _make_client(settings.target(), timeout_s=2.0)
    try:
        return int(await client.publish(channel or settings.channel, payload))
    finally:
        await _close_quietly(client)


async def run_invalidation(
    manager: InvalidationTarget,
    settings: InvalidationSettings | None = None,
) -> AsyncIterator[InvalidationSubscriber | None]:
    """The container's ``invalidation`` Resource: a running subscriber, or ``None``.

    ``None`` (and no Redis import) when no Redis variable is set. Redis being down at start
    is a WARNING, never a failed start.
    """
    settings = settings if settings is not None else InvalidationSettings()
    if not settings.configured:
        logger.debug("invalidation subscriber not started: no REDIS_* variable set")
        yield None
        return
    subscriber = InvalidationSubscriber(manager, settings)
    await subscriber.start()
    try:
        yield subscriber
    finally:
        await subscriber.stop()
