"""Where a request finds the manager and the container: the app's state, set by the lifespan.

``runtime_lifespan`` stores the container and its manager provider on ``app.state``;
``current_manager`` and ``provided(...)`` read them per request, so they follow a container
restart (``shutdown_resources()`` then ``init_resources()`` builds a fresh manager).
"""

import inspect
from collections.abc import Awaitable, Callable
from typing import Any, Final

from dependency_injector import providers as di
from fastapi import Depends, Request
from starlette.datastructures import State

from ... import AgentRuntimeManager

CONTAINER_STATE: Final = "snak_runtime_container"
"""The ``app.state`` attribute that holds the container ``runtime_lifespan`` runs."""
MANAGER_STATE: Final = "snak_runtime_manager"
"""The ``app.state`` attribute that holds the zero-argument callable giving the manager."""

ManagerSource = AgentRuntimeManager[Any, Any] | Callable[..., Any]
"""A manager, a zero-argument callable returning the current one (sync or async: a
dependency-injector provider fits), or a FastAPI dependency returning it."""

_NOT_INSTALLED: Final = (
    "no runtime container on this app: pass lifespan=runtime_lifespan(container) to FastAPI() "
    "(or give the dependency its manager explicitly)"
)


def _state_value(state: State, name: str) -> Any:
    try:
        return getattr(state, name)
    except AttributeError:
        raise RuntimeError(_NOT_INSTALLED) from None


async def current_manager(request: Request) -> AgentRuntimeManager[Any, Any]:
    """A FastAPI dependency: the manager of the container ``runtime_lifespan`` runs.

    Asks the container's provider on every request, so after a restart of the resources it
    is the fresh manager. Async on purpose: FastAPI runs a plain-function dependency in its
    thread pool.
    """
    found = _state_value(request.app.state, MANAGER_STATE)()
    if inspect.isawaitable(found):
        found = await found
    return checked_manager(found)


async def runtime_container(request: Request) -> Any:
    """A FastAPI dependency: the container ``runtime_lifespan`` runs (yours, as you gave it)."""
    return _state_value(request.app.state, CONTAINER_STATE)


def provided(provider: Any) -> Callable[..., Awaitable[Any]]:
    """A FastAPI dependency that calls one of the running container's providers per request.

    ``Depends(provided(AppContainer.chat_service))``: the provider as written in your
    container class (nested ones too, ``AppContainer.runtime.manager``), or a dotted name
    (``"runtime.manager"``). It is found by name on the container ``runtime_lifespan`` runs,
    and an awaitable result (an async Resource) is awaited. No ``@inject``, no wiring, and it
    runs on the event loop, not in the thread pool (``Provide[...]`` markers are plain
    callables, which FastAPI runs there).
    """
    path: tuple[str, ...] | None = tuple(provider.split(".")) if isinstance(provider, str) else None
    if path is not None and not all(part.isidentifier() for part in path):
        raise ValueError(f"not a provider path: {provider!r}")

    async def dependency(container: Any = Depends(runtime_container)) -> Any:  # noqa: B008
        nonlocal path
        if path is None:
            path = _path_of(container, provider)
        target = container
        for name in path:
            target = getattr(target, name)
        found = target()
        if inspect.isawaitable(found):
            found = await found
        return found

    return dependency


def _path_of(container: Any, provider: Any) -> tuple[str, ...]:
    """The names leading from ``container`` (or its declarative class) to ``provider``."""
    for root in (getattr(container, "declarative_parent", None), container):
        if root is not None and (found := _search(root, provider, ())) is not None:
            return found
    raise LookupError(f"{provider!r} is not a provider of the running container {container!r}")


def _search(container: Any, provider: Any, prefix: tuple[str, ...]) -> tuple[str, ...] | None:
    providers: dict[str, Any] = getattr(container, "providers", {})
    for name, candidate in providers.items():
        if candidate is provider:
            return (*prefix, name)
    for name, candidate in providers.items():
        if isinstance(candidate, di.Container) and len(prefix) < 8:
            found = _search(candidate.container, provider, (*prefix, name))
            if found is not None:
                return found
    return None


def manager_provider(container: Any) -> tuple[Callable[[], Any], Any]:
    """The container's manager provider, and the container that declares it: its own
    ``manager``, else the ``manager`` of the one container it embeds
    (``providers.Container(RuntimeContainer)``)."""
    own = getattr(container, "providers", {}).get("manager")
    if own is not None:
        return own, container
    embedded = [
        p.container for p in getattr(container, "providers", {}).values()
        if isinstance(p, di.Container)
    ]
    found = [(c.providers["manager"], c) for c in embedded if "manager" in c.providers]
    if len(found) != 1:
        raise TypeError(
            f"cannot tell which manager {type(container).__name__} provides "
            f"({len(found)} embedded containers have one): pass manager=<its provider>, "
            "for example manager=container.runtime.manager"
        )
    return found[0]


def manager_dependency(source: ManagerSource) -> Callable[..., Any]:
    """A FastAPI dependency that gives the current manager, checked, from ``source``."""
    if isinstance(source, AgentRuntimeManager):
        fixed = source

        async def fixed_manager() -> AgentRuntimeManager[Any, Any]:
            return fixed

        return fixed_manager
    if not callable(source):
        raise TypeError(
            "manager must be an AgentRuntimeManager, a zero-argument callable returning one, "
            f"or a FastAPI dependency returning one; got {type(source).__name__}"
        )
    if source is current_manager:
        return current_manager
    if _takes_arguments(source):
        async def from_dependency(
            found: Any = Depends(source),  # noqa: B008
        ) -> AgentRuntimeManager[Any, Any]:
            return checked_manager(found)

        return from_dependency

    async def from_callable() -> AgentRuntimeManager[Any, Any]:
        # Called on the loop (a plain function would run in FastAPI's thread pool).
        found = source()
        if inspect.isawaitable(found):
            found = await found
        return checked_manager(found)

    return from_callable


def _takes_arguments(source: Callable[..., Any]) -> bool:
    """Whether FastAPI must supply ``source``'s parameters (a dependency), or it is called
    bare. A callable without a signature (a dependency-injector provider) is called bare."""
    try:
        parameters = inspect.signature(source).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(
        p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        for p in parameters
    )


def checked_manager(found: object) -> AgentRuntimeManager[Any, Any]:
    if not isinstance(found, AgentRuntimeManager):
        raise TypeError(
            f"the manager source returned {type(found).__name__}, not an AgentRuntimeManager"
        )
    return found
