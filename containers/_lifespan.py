"""The manager's lifecycle as a dependency-injector Resource: start on init, aclose on shutdown."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from snak_runtime import AgentRuntimeManager


async def run_manager(
    manager: AgentRuntimeManager[Any, Any],
) -> AsyncIterator[AgentRuntimeManager[Any, Any]]:
    """Start the expiry sweeper, hand the manager out, and close it at resource shutdown.

    The Python counterpart of NestJS ``OnModuleInit`` / ``OnModuleDestroy``: ``aclose()``
    disposes every cached agent.
    """
    await manager.start()
    try:
        yield manager
    finally:
        await manager.aclose()
