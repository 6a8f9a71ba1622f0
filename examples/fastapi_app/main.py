"""The FastAPI app: resources start and stop in the lifespan, routes get services by ``@inject``.

Run it with ``uvicorn examples.fastapi_app.main:app`` (install the ``examples`` extra).
"""

# No `from __future__ import annotations` here: @inject reads the Annotated markers at runtime.
import sys
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Annotated, Any

from dependency_injector.wiring import Provide, inject
from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from snak_runtime import AgentRuntimeManager, RuntimeNotCached

from .containers import AppContainer
from .services import ChatService

router = APIRouter()


class ChatRequest(BaseModel):
    text: str


class ChatReply(BaseModel):
    agent_id: str
    cfg_version: int
    reply: str


@router.post("/agents/{agent_id}/chat")
@inject
async def chat(
    agent_id: str,
    body: ChatRequest,
    x_user_id: Annotated[str, Header()],
    service: Annotated[ChatService, Depends(Provide[AppContainer.chat_service])],
) -> ChatReply:
    try:
        version, reply = await service.chat(agent_id, x_user_id, body.text)
    except RuntimeNotCached:
        # Same answer for "no such agent" and "not yours": existence is not revealed.
        raise HTTPException(status_code=404, detail="agent not found") from None
    return ChatReply(agent_id=agent_id, cfg_version=version, reply=reply)


@router.get("/cache/stats")
@inject
async def cache_stats(
    manager: Annotated[
        AgentRuntimeManager[Any, Any], Depends(Provide[AppContainer.runtime.manager])
    ],
) -> dict[str, int]:
    stats = manager.stats()
    return {
        "hits": stats.hits,
        "misses": stats.misses,
        "denied": stats.denied,
        "loads": stats.loads,
        "size": stats.size,
    }


@router.get("/metrics")
@inject
async def metrics(
    registry: Annotated[
        CollectorRegistry, Depends(Provide[AppContainer.runtime.metrics_registry])
    ],
) -> Response:
    """Prometheus exposition text: the cache's counters, gauges and build histograms."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def _resources(pending: Awaitable[None] | None) -> None:
    if pending is not None:
        await pending


def create_app(container: AppContainer | None = None) -> FastAPI:
    """Build the app around ``container`` (a fresh ``AppContainer`` by default)."""
    container = container or AppContainer()
    container.wire(modules=[sys.modules[__name__]])

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await _resources(container.init_resources())  # starts the manager (OnModuleInit)
        try:
            yield
        finally:
            await _resources(container.shutdown_resources())  # aclose(): agents disposed

    app = FastAPI(title="snak_runtime example", lifespan=lifespan)
    app.state.container = container
    app.include_router(router)
    return app


app = create_app()
