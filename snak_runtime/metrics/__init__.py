"""Metrics exporters for the runtime cache: ``.prometheus`` and ``.otel`` (each needs its extra).

This package imports neither ``prometheus_client`` nor ``opentelemetry``; its submodules do.
``prometheus_resource`` (the container's Resource) lives with the other Resources in
``snak_runtime.containers.resources``; this name for it loads that module on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..containers.resources import prometheus_resource as prometheus_resource

__all__ = ("prometheus_resource",)


def __getattr__(name: str) -> Any:
    if name == "prometheus_resource":
        from ..containers.resources import prometheus_resource

        return prometheus_resource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
