"""The container's ``invalidation`` Resource (kept apart: the DI resources are moving together)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from ._dispatch import InvalidationTarget
from ._settings import InvalidationSettings
from ._subscriber import InvalidationSubscriber
from ._versions import VersionSource

logger = logging.getLogger(__name__)


async def run_invalidation(
    manager: InvalidationTarget,
    settings: InvalidationSettings | None = None,
    version_source: VersionSource | None = None,
    backoff_cap_ms: int | None = None,
    client: Any = None,
) -> AsyncIterator[InvalidationSubscriber | None]:
    """The container's ``invalidation`` Resource: a running subscriber, or ``None``.

    ``None`` (and no Redis import) when no Redis variable is set. Redis being down at start
    is a WARNING, never a failed start; a missing ``redis`` extra is an ``ImportError``.
    ``version_source`` (the container's provider of that name) turns on versioned resync and
    periodic reconciliation. ``client`` (the container's ``invalidation_client``): a
    ``redis.asyncio.Redis`` of the application's, which the subscriber uses and never closes
    (close it after this resource stops; a client given starts the subscriber even with no
    Redis variable set).
    """
    settings = settings if settings is not None else InvalidationSettings()
    if client is None and not settings.configured:
        logger.debug("invalidation subscriber not started: no REDIS_* variable set")
        yield None
        return
    subscriber = InvalidationSubscriber(
        manager,
        settings,
        version_source=version_source,
        backoff_cap_ms=backoff_cap_ms,
        client=client,
    )
    await subscriber.start()
    try:
        yield subscriber
    finally:
        await subscriber.stop()
