"""The redis-py client as the invalidation code needs it: imported late, never retrying by itself.

``redis`` is imported only when something connects: with no Redis variable set, importing the
package, building its settings or running the container's resource never needs it.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from typing import TYPE_CHECKING, Any, Final

from ._sentinel import SentinelEndpoint
from ._settings import RedisEndpoint

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

REDIS_EXTRA_HINT: Final = 'pip install "snak-runtime[redis]"'
_CLOSE_TIMEOUT_S: Final = 2.0
# How long stop() waits before cancelling the listener again: on Python 3.11, asyncio.wait_for
# (which redis-py wraps around every socket write when socket_timeout is set) returns normally
# when a cancellation lands just as the write completes, so one can be lost (fixed in 3.12).
# Longer than a listener's own clean-up (two bounded closes), so a re-cancel never cuts it short.
RECANCEL_AFTER_S: float = 5.0


def require_redis() -> None:
    """Import redis-py now, so that a missing extra fails at start-up, saying what to install.

    Called where Redis is configured and about to be used (``start()``, the publisher): without
    it the import would fail inside the background task, where nobody sees it.
    """
    try:
        import redis.asyncio  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "Redis invalidation is configured (REDIS_URL or REDIS_HOST/REDIS_PORT/...) but the "
            f"'redis' package is not installed: {REDIS_EXTRA_HINT} "
            '(from a clone: pip install -e ".[redis]")',
            name="redis",
        ) from exc


def make_client(endpoint: RedisEndpoint | SentinelEndpoint, *, timeout_s: float) -> Redis:
    """A client that never retries or reconnects behind our back.

    redis-py's retry layer would reconnect a pub/sub connection and resubscribe silently, and
    whatever was published in between would be lost without the subscriber knowing: every
    error must reach our loop so it can resync.
    """
    require_redis()
    from redis.asyncio import Redis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    options: dict[str, Any] = {
        "socket_connect_timeout": timeout_s,
        "socket_timeout": timeout_s,  # commands; pub/sub reads pass their own timeout
        "socket_keepalive": True,
        "retry": Retry(NoBackoff(), 0),
    }
    if isinstance(endpoint, SentinelEndpoint):  # issue 17: the sentinels name the master
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


def endpoint_of(client: Any) -> RedisEndpoint:
    """Where an application's client connects, for logs (host, port and db; never a password)."""
    kwargs = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    host, port, db = kwargs.get("host"), kwargs.get("port"), kwargs.get("db")
    if isinstance(host, str) and isinstance(port, int) and isinstance(db, int):
        return RedisEndpoint(host=host, port=port, db=db)
    return RedisEndpoint(url="redis://(the application's client)")


def quiet_pubsub(client: Any) -> Any:
    """``client.pubsub()``, on a connection that raises every error instead of retrying.

    An application's client may retry (redis-py's ``Redis(...)`` does by default), and a
    retried pub/sub read reconnects and resubscribes silently, losing what was published
    meanwhile with no resync. The subscription borrows its connection from the client's pool
    with retries off, and puts the pool's policy back when it hands the connection back.
    """
    pubsub = client.pubsub()
    pool = getattr(pubsub, "connection_pool", None)  # (a test's fake client has none)
    if pool is not None:
        pubsub.connection_pool = _QuietPool(pool)
    return pubsub


class _QuietPool:
    """A connection pool's view that lends connections with retries off (``quiet_pubsub``)."""

    def __init__(self, pool: Any) -> None:
        self._pool = pool
        self._retries: dict[Any, Any] = {}

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        connection = await self._pool.get_connection(*args, **kwargs)
        self._retries.setdefault(connection, connection.retry)
        connection.retry = Retry(NoBackoff(), 0)
        return connection

    async def release(self, connection: Any) -> None:
        connection.retry = self._retries.pop(connection, connection.retry)
        released = self._pool.release(connection)
        if inspect.isawaitable(released):
            await released

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def redis_errors() -> tuple[type[BaseException], ...]:
    """What a lost or unreachable server raises: the loop retries these, nothing else."""
    from redis.exceptions import RedisError

    return (RedisError, OSError, TimeoutError)


async def close_quietly(*resources: Any) -> None:
    """``aclose()`` each, bounded; closing a dead connection may fail and that is fine.

    A cancellation (``stop()``) does not cut the closing short: a close interrupted half-way
    leaves sockets open, found later by the garbage collector. The closing finishes (each
    close is bounded), then the cancellation propagates.
    """
    closing = asyncio.get_running_loop().create_task(_close_each(resources))
    _closing.add(closing)
    closing.add_done_callback(_closing.discard)
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        await asyncio.wait({closing})
        raise


_closing: set[asyncio.Task[None]] = set()  # closings running on after their caller was cancelled


async def _close_each(resources: tuple[Any, ...]) -> None:
    for resource in resources:
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await resource.aclose()
        except Exception as exc:
            logger.debug("invalidation: closing %r failed: %r", type(resource).__name__, exc)
