"""``runtime_lifespan``: the container's resources start and stop with the app."""

import inspect
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from dependency_injector import providers
from fastapi import FastAPI

from ._sources import CONTAINER_STATE, MANAGER_STATE, manager_provider

logger = logging.getLogger(__name__)

Lifespan = Callable[[FastAPI], AbstractAsyncContextManager[Any]]


async def _awaited(result: object) -> None:
    """``init_resources()``/``shutdown_resources()`` return an awaitable only when some
    resource is async (and ``None`` otherwise): await what there is to await."""
    if inspect.isawaitable(result):
        await result


async def _stop_own_resources(container: Any) -> None:
    """Shut down the Resources ``container`` itself declares, dependents first.

    Run on the runtime's container before the host's ``shutdown_resources()``: the
    subscriber and the manager stop (agents disposed) while the host's own resources, a Redis
    client the subscriber shares or a database a disposer needs, still run.
    dependency-injector orders a shutdown by direct dependencies only, and a host's provider
    given to an embedded container is not one, so without this step the host's client could
    be closed under a running subscriber.
    """
    own = [p for p in container.providers.values() if isinstance(p, providers.Resource)]
    while running := [p for p in own if p.initialized]:
        free = [p for p in running if not any(p in o.related for o in running if o is not p)]
        for resource in free or running:
            await _awaited(resource.shutdown())


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

    Shutdown order: the embedded runtime container's resources stop first (the subscriber,
    then the manager, disposing every agent), then the rest of yours, so a disposer or the
    subscriber never finds a client of yours already closed.
    """
    if not callable(getattr(container, "init_resources", None)):
        raise TypeError(
            f"runtime_lifespan() needs a dependency-injector container, got "
            f"{type(container).__name__}"
        )
    if manager is None:
        provider, runtime = manager_provider(container)
    else:
        provider, runtime = manager, container
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
            try:
                if runtime is not container:
                    await _stop_own_resources(runtime)
            finally:
                await _awaited(container.shutdown_resources())

    return run
