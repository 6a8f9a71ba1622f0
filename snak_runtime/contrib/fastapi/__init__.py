"""FastAPI integration: a lifespan, the manager and a per-request lease as dependencies, and
an admin router. Needs the ``admin`` extra (``pip install 'snak-runtime[admin]'``).

A new app wires it in a few lines::

    container = AppContainer()  # your container, embedding RuntimeContainer
    app = FastAPI(lifespan=runtime_lifespan(container))
    AgentLease = Annotated[RuntimeLease, Depends(lease_dependency(build, user=Depends(me)))]

    @app.post("/agents/{agent_id}/chat")
    async def chat(lease: AgentLease) -> str: ...

- ``runtime_lifespan(container)``: ``init_resources()``/``shutdown_resources()`` with the
  app, composable with the app's own lifespan; the container is kept on ``app.state``.
- ``current_manager``: a dependency giving the current manager (follows a restart).
- ``lease_dependency(build, user=Depends(...))``: the path's agent leased for the request,
  released after the response is sent, streaming included.
- ``provided(AppContainer.chat_service)``: a dependency calling one of the running
  container's providers.
- ``admin_router(authorize=...)``: look inside the cache and evict, behind your check.

Why not ``Depends(Provide[AppContainer.x])`` with ``@inject``: it needs the module wired
(``container.wire(modules=[...])``); a route defined inside a function (an app factory) in a
module that is not wired gets the bare marker, and fails with a 500 (``'Provide' object has no
attribute ...``). And FastAPI runs the marker, a plain callable, in its thread pool on every
request. The dependencies here need no wiring and run on the event loop.

Needs FastAPI 0.118 or newer (the lease's release after a streamed body).
"""

try:
    import fastapi  # noqa: F401
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "snak_runtime.contrib.fastapi needs FastAPI: pip install 'snak-runtime[admin]'"
    ) from exc

from ._admin import DEFAULT_PAGE, MAX_PAGE, AdminScope, admin_router
from ._checks import MAX_ID_LENGTH
from ._lease import lease_dependency
from ._lifespan import runtime_lifespan
from ._sources import ManagerSource, current_manager, provided, runtime_container

__all__ = (
    "DEFAULT_PAGE",
    "MAX_ID_LENGTH",
    "MAX_PAGE",
    "AdminScope",
    "ManagerSource",
    "admin_router",
    "current_manager",
    "lease_dependency",
    "provided",
    "runtime_container",
    "runtime_lifespan",
)
