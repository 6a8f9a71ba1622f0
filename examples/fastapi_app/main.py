"""The FastAPI app: resources start and stop in the lifespan, routes get services by dependency.

Run it with ``uvicorn examples.fastapi_app.main:app`` (install the ``examples`` extra). The
admin routes (``/admin/...``, ``snak_runtime.contrib.fastapi``) answer the token in
``EXAMPLE_ADMIN_TOKEN`` (unset: they refuse everyone).

The wiring: each route takes its service through an ``async def`` dependency that calls the
container's provider. FastAPI awaits an async dependency on the event loop; a plain function
(``Depends(Provide[...])`` with ``@inject`` is one, the marker is a plain callable) runs in
its thread pool on every request, which costs about 1.4x the server CPU per request of the
same route without it; the async dependency about 1.06x (``benchmarks/http_overhead.py``).
"""

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Mapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from snak_runtime import AgentRuntimeManager, RuntimeNotCached
from snak_runtime.contrib.fastapi import AdminScope, admin_router

from .containers import AppContainer
from .services import ChatService, ConfigService

router = APIRouter()


class ChatRequest(BaseModel):
    text: str


class ChatReply(BaseModel):
    agent_id: str
    cfg_version: int
    reply: str


class ConfigChanged(BaseModel):
    agent_id: str
    cfg_version: int
    published: bool  # sent to the fleet over Redis (false: one process, applied here only)


def _container(request: Request) -> AppContainer:
    container: AppContainer = request.app.state.container
    return container


async def chat_service(request: Request) -> ChatService:
    """Async on purpose: FastAPI runs a plain-function dependency in its thread pool."""
    return _container(request).chat_service()


async def config_service(request: Request) -> ConfigService:
    return _container(request).config_service()


async def runtime_manager(request: Request) -> AgentRuntimeManager[Any, Any]:
    manager: AgentRuntimeManager[Any, Any] = _container(request).runtime.manager()
    return manager


AdminGrant = bool | AdminScope


async def require_admin(
    request: Request, x_admin_token: Annotated[str | None, Header()] = None
) -> AdminGrant:
    """The admin router's ``authorize``: a sketch, use your real authentication.

    It must *return* the grant: ``True`` for the whole cache, ``AdminScope(user_id=...)`` for
    one user's agents (a support engineer helping that user). Anything else is refused.
    """
    if x_admin_token is None:
        raise HTTPException(
            status_code=401, detail="Unauthorized", headers={"WWW-Authenticate": "Token"}
        )
    tokens: Mapping[str, AdminGrant] = request.app.state.admin_tokens
    for token, grant in tokens.items():
        if secrets.compare_digest(x_admin_token.encode(), token.encode()):
            return grant
    raise HTTPException(status_code=403, detail="Forbidden")


async def metrics_registry(request: Request) -> CollectorRegistry:
    registry: CollectorRegistry = _container(request).runtime.metrics_registry()
    return registry


@router.post("/agents/{agent_id}/chat")
async def chat(
    agent_id: str,
    body: ChatRequest,
    x_user_id: Annotated[str, Header()],
    service: Annotated[ChatService, Depends(chat_service)],
) -> ChatReply:
    try:
        version, reply = await service.chat(agent_id, x_user_id, body.text)
    except RuntimeNotCached:
        # Same answer for "no such agent" and "not yours": existence is not revealed.
        raise HTTPException(status_code=404, detail="agent not found") from None
    return ChatReply(agent_id=agent_id, cfg_version=version, reply=reply)


@router.post("/agents/{agent_id}/config")
async def change_config(
    agent_id: str,
    x_user_id: Annotated[str, Header()],
    service: Annotated[ConfigService, Depends(config_service)],
) -> ConfigChanged:
    """A configuration change: a new version, applied here and published to the fleet."""
    try:
        version, published = await service.bump(agent_id, x_user_id)
    except KeyError:
        raise HTTPException(status_code=404, detail="agent not found") from None
    return ConfigChanged(agent_id=agent_id, cfg_version=version, published=published)


@router.get("/cache/stats")
async def cache_stats(
    manager: Annotated[AgentRuntimeManager[Any, Any], Depends(runtime_manager)],
) -> dict[str, int]:
    stats = manager.stats()
    return {
        "hits": stats.hits,
        "misses": stats.misses,
        "denied": stats.denied,
        "loads": stats.loads,
        "rebuilds": stats.rebuilds,
        "size": stats.size,
    }


@router.get("/metrics")
async def metrics(
    registry: Annotated[CollectorRegistry, Depends(metrics_registry)],
) -> Response:
    """Prometheus exposition text: the cache's counters, gauges and build histograms."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _resources(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


def create_app(
    container: AppContainer | None = None, admin_tokens: Mapping[str, AdminGrant] | None = None
) -> FastAPI:
    """Build the app around ``container`` (a fresh ``AppContainer`` by default).

    ``admin_tokens`` maps each admin token to its grant; by default ``EXAMPLE_ADMIN_TOKEN``
    (if set) is an admin of the whole cache.
    """
    container = container or AppContainer()
    if admin_tokens is None:
        token = os.environ.get("EXAMPLE_ADMIN_TOKEN")
        admin_tokens = {token: True} if token else {}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _resources(container.init_resources())  # starts the manager (OnModuleInit)
        try:
            yield
        finally:
            await _resources(container.shutdown_resources())  # aclose(): agents disposed

    app = FastAPI(title="snak_runtime example", lifespan=lifespan)
    app.state.container = container
    app.state.admin_tokens = dict(admin_tokens)
    app.include_router(router)
    # The manager through the `runtime_manager` dependency: each request gets the current one,
    # so the routes follow the container when its resources restart.
    app.include_router(admin_router(runtime_manager, authorize=require_admin), prefix="/admin")
    return app


app = create_app()
