"""Every dependency-injector Resource of the runtime container, in one place.

A Resource owns what starts and stops with ``init_resources()`` / ``shutdown_resources()``:
the manager's lifecycle, the Prometheus export, and the Redis invalidation subscriber.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from dependency_injector import providers

from snak_runtime import AgentRuntimeManager
from snak_runtime.invalidation import run_invalidation

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from snak_runtime.metrics.prometheus import RuntimeCacheCollector

__all__ = ("prometheus_resource", "run_invalidation", "run_manager")


async def run_manager(
    manager: AgentRuntimeManager[Any, Any],
    provider: providers.Singleton[AgentRuntimeManager[Any, Any]] | None = None,
) -> AsyncIterator[AgentRuntimeManager[Any, Any]]:
    """Start the expiry sweeper, hand the manager out, and close it at resource shutdown.

    The Python counterpart of NestJS ``OnModuleInit`` / ``OnModuleDestroy``: ``aclose()``
    disposes every cached agent. A closed manager cannot start again, so shutdown also resets
    ``provider`` (the ``Singleton`` that built it): the next ``init_resources()`` builds a
    fresh manager, bound to whichever event loop runs then (a second ``with TestClient(app)``
    runs a new loop). The manager arrives built, so a bad configuration fails the
    ``init_resources()`` call itself and leaves no half-started resource behind.
    """
    await manager.start()
    try:
        yield manager
    finally:
        try:
            await manager.aclose()
        finally:
            if provider is not None:
                provider.reset()


def prometheus_resource(
    manager: AgentRuntimeManager[Any, Any],
    registry: CollectorRegistry | None = None,
    cache: str = "default",
) -> Iterator[RuntimeCacheCollector | None]:
    """Export ``manager`` from ``registry`` while resources run.

    With ``registry=None`` metrics are off and ``prometheus_client`` is not imported.
    At resource shutdown the manager is unregistered, freeing its cache label.
    """
    if registry is None:
        yield None
        return
    from snak_runtime.metrics.prometheus import register, unregister

    collector = register(manager, registry=registry, cache=cache)
    try:
        yield collector
    finally:
        unregister(manager, registry=registry)
