"""Metrics exporters for the runtime cache: ``.prometheus`` and ``.otel`` (each needs its extra).

This package imports neither ``prometheus_client`` nor ``opentelemetry``; its submodules do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .._manager import AgentRuntimeManager
    from .prometheus import RuntimeCacheCollector

__all__ = ("prometheus_resource",)


def prometheus_resource(
    manager: AgentRuntimeManager[Any, Any],
    registry: CollectorRegistry | None = None,
    cache: str = "default",
) -> Iterator[RuntimeCacheCollector | None]:
    """A dependency-injector ``Resource``: export ``manager`` from ``registry`` while it runs.

    With ``registry=None`` metrics are off and ``prometheus_client`` is not imported.
    At resource shutdown the manager is unregistered, freeing its cache label.
    """
    if registry is None:
        yield None
        return
    from .prometheus import register, unregister

    collector = register(manager, registry=registry, cache=cache)
    try:
        yield collector
    finally:
        unregister(manager, registry=registry)
