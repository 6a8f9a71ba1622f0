"""``runtime_lifespan``: the container's resources start and stop with the app."""

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from ._sources import CONTAINER_STATE, MANAGER_STATE, manager_provider

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


async def _awaited(result: object) -> None:
    """``init_resources()``/``shutdown_resources()`` return an awaitable only when some
    resource is async (and ``None`` otherwise): await what there is to await."""
    if inspect.isawaitable(result):
        await result


def runtime_lifespan(
    container: Any,
    lifespan: Lifespan | None = None,
    *,
    manager: Callable[[], Any] | None = None,
) -> Lifespan:
    """A FastAPI lifespan that runs ``container``'s resources for as long as the app runs.

    ``FastAPI(lifespan=runtime_lifespan(container))``: at start-up
    ``container.init_resources()`` (the manager starts, and the Redis subscriber and metrics
    export when configured), at shutdown ``container.shutdown_resources()`` (every cached
    agent is disposed). ``container`` is a ``RuntimeContainer`` or your own container that
    embeds one (``providers.Container(RuntimeContainer)``).

    ``lifespan``: your app's own lifespan, run inside this one: it starts after the resources
    and stops before them, and whatever it yields (Starlette's lifespan state) is passed on.

    ``manager``: the provider of the manager the dependencies hand out (``current_manager``,
    ``lease_dependency``, ``admin_router``). By default the container's ``manager``, else the
    ``manager`` of the one container it embeds.

    The container and that provider are kept on ``app.state`` (``snak_runtime_container``,
    ``snak_runtime_manager``); the dependencies read them per request, so one app can run
    its lifespan again (a second ``with TestClient(app)``) and get a fresh manager. If the
    start-up fails half-way, what did start is shut down before the error propagates.
    """
    if not callable(getattr(container, "init_resources", None)):
        raise TypeError(
            f"runtime_lifespan() needs a dependency-injector container, got "
            f"{type(container).__name__}"
        )
    provider = manager if manager is not None else manager_provider(container)
    if not callable(provider):
        raise TypeError(f"manager must be a provider (callable), got {type(provider).__name__}")

    @asynccontextmanager
    async def run(app: FastAPI) -> AsyncIterator[Any]:
        setattr(app.state, CONTAINER_STATE, container)
        setattr(app.state, MANAGER_STATE, provider)
        try:
            await _awaited(container.init_resources())
        except BaseException:
            logger.error("the runtime container did not start; shutting down what did")
            await _awaited(container.shutdown_resources())
            raise
        try:
            if lifespan is None:
                yield None
            else:
                async with lifespan(app) as state:
                    yield state
        finally:
            await _awaited(container.shutdown_resources())

    return run
