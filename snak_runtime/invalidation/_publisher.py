"""The publishing side: send snak's invalidation messages on the channel."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Self, final

from ._client import close_quietly, make_client
from ._redis_config import check_channel
from ._settings import InvalidationSettings
from ._wire import encode_message

if TYPE_CHECKING:
    from redis.asyncio import Redis

_PUBLISH_TIMEOUT_S = 2.0


@final
class InvalidationPublisher:
    """Publishes invalidations as snak does, on one client and one channel.

    Build it with ``from_client`` (a client you own and close), ``from_url`` or
    ``from_settings`` (a client it opens and closes in ``aclose()``/``async with``).
    """

    def __init__(self, client: Redis, channel: str, *, owns_client: bool = False) -> None:
        self._client = client
        self._channel = channel
        self._owns_client = owns_client

    @classmethod
    def from_client(cls, client: Redis, *, channel: str | None = None) -> Self:
        """Publish on your client; the channel from ``channel``, else the environment.

        A malformed channel raises ``RedisConfigError`` naming ``channel`` or the variable.
        """
        if channel:
            return cls(client, check_channel("channel", channel))
        return cls(client, InvalidationSettings().checked_channel())

    @classmethod
    def from_settings(
        cls, settings: InvalidationSettings | None = None, *, channel: str | None = None
    ) -> Self:
        """Connect where ``settings`` (default: the environment) say.

        Raises ``RuntimeError`` when no Redis is configured, ``RedisConfigError`` naming a
        malformed variable (or ``channel``), and ``ImportError`` naming the extra to install
        when ``redis`` is missing.
        """
        settings = settings if settings is not None else InvalidationSettings()
        if not settings.configured:
            raise RuntimeError(
                "Redis is not configured: set REDIS_URL, REDIS_HOST/REDIS_PORT or "
                "REDIS_SENTINELS/REDIS_SENTINEL_MASTER to publish invalidations (a single "
                "process calls manager.on_invalidate() directly)"
            )
        target = settings.target()
        channel = check_channel("channel", channel) if channel else settings.channel
        client = make_client(target, timeout_s=_PUBLISH_TIMEOUT_S)
        return cls(client, channel, owns_client=True)

    @classmethod
    def from_url(cls, url: str, *, channel: str | None = None) -> Self:
        """Connect to ``url``; the channel from ``channel``, else the environment."""
        return cls.from_settings(InvalidationSettings.for_url(url), channel=channel)

    @property
    def channel(self) -> str:
        return self._channel

    async def publish(
        self,
        agent_id: str,
        cfg_version: int,
        event: str | None = None,
        *,
        outbox_id: int | None = None,
        processed_at: float | datetime | None = None,
    ) -> int:
        """Publish one invalidation; returns how many subscribers received it.

        ``outbox_id`` (an id that increases with each change published: subscribers detect a
        lost message from a gap) and ``processed_at`` (seconds since the epoch or an aware
        ``datetime``: subscribers measure the propagation lag from it) are optional, as snak's
        outbox worker sends them. Raises ``ValueError``/``TypeError`` for a message
        subscribers would drop (before anything is sent), and redis-py's errors when the
        server is unreachable.
        """
        payload = encode_message(
            agent_id, cfg_version, event, outbox_id=outbox_id, processed_at=processed_at
        )
        return int(await self._client.publish(self._channel, payload))

    async def aclose(self) -> None:
        """Close the client if this publisher opened it."""
        if self._owns_client:
            await close_quietly(self._client)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


async def publish_invalidation(
    agent_id: str,
    cfg_version: int,
    *,
    event: str | None = None,
    redis: Redis | InvalidationSettings | str | None = None,
    channel: str | None = None,
    outbox_id: int | None = None,
    processed_at: float | datetime | None = None,
) -> int:
    """Publish one invalidation as snak does; returns how many subscribers received it.

    A one-shot shortcut over ``InvalidationPublisher``: ``redis`` is a client (used as is,
    ``from_client``), a URL (``from_url``), settings or ``None`` for the environment
    (``from_settings``). Raises ``ValueError``/``TypeError`` for a message subscribers would
    drop, ``RuntimeError`` when no Redis is configured, and redis-py's errors when the server
    is unreachable. ``outbox_id``/``processed_at``: as ``InvalidationPublisher.publish``.
    """
    # a bad message fails before any connection
    encode_message(agent_id, cfg_version, event, outbox_id=outbox_id, processed_at=processed_at)
    if isinstance(redis, str):
        publisher = InvalidationPublisher.from_url(redis, channel=channel)
    elif redis is None or isinstance(redis, InvalidationSettings):
        publisher = InvalidationPublisher.from_settings(redis, channel=channel)
    else:
        publisher = InvalidationPublisher.from_client(redis, channel=channel)
    async with publisher:
        return await publisher.publish(
            agent_id, cfg_version, event, outbox_id=outbox_id, processed_at=processed_at
        )
