"""The FastAPI app: ``snak_runtime.contrib.fastapi`` wires the container in, no glue.

Run it with ``uvicorn examples.fastapi_app.main:app`` (install the ``examples`` extra). The
admin routes (``/admin/...``) answer the token in ``EXAMPLE_ADMIN_TOKEN`` (unset: they refuse
everyone).

- ``runtime_lifespan(container)`` starts the container's resources with the app and stops
  them with it (every cached agent disposed).
- ``lease_dependency(...)`` leases the path's agent for the request, as the caller (the
  owner check), building it on a miss; released once the response is sent, streamed
  bodies included. "No such agent" and "not yours" are the same 404.
- ``provided(AppContainer.x)`` calls the running container's provider per request: no
  ``@inject``, no wiring, and on the event loop (``Depends(Provide[...])`` is a plain
  callable that FastAPI runs in its thread pool, about 1.4x the server CPU per request,
  ``benchmarks/http_overhead.py``; an async dependency about 1.06x).
"""

import os
import secrets
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Request, Response
from fastapi.responses import StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel

from snak_runtime import AgentRuntimeManager, RuntimeLease
from snak_runtime.contrib.fastapi import (
    AdminScope,
    admin_router,
    current_manager,
    lease_dependency,
    provided,
    runtime_lifespan,
)

from .containers import AppContainer
from .services import Agent, ConfigService, Runtime

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


async def caller(x_user_id: Annotated[str, Header()]) -> str:
    """The caller's user id: a sketch, use your real authentication."""
    return x_user_id


# The path's agent, leased as the caller for the request; built by the directory on a miss.
AgentLease = Annotated[
    RuntimeLease[Runtime, Agent],
    Depends(lease_dependency(Depends(provided(AppContainer.build_agent)), user=Depends(caller))),
]
Manager = Annotated[AgentRuntimeManager[Any, Any], Depends(current_manager)]


@router.post("/agents/{agent_id}/chat")
async def chat(agent_id: str, body: ChatRequest, lease: AgentLease) -> ChatReply:
    return ChatReply(
        agent_id=agent_id, cfg_version=lease.cfg_version, reply=lease.runtime.reply(body.text)
    )


@router.get("/agents/{agent_id}/stream")
async def stream(lease: AgentLease, text: str = "hi") -> StreamingResponse:
    """The reply word by word: the lease (the pin) lasts until the last word is sent."""

    async def words() -> AsyncIterator[str]:
        for word in lease.runtime.reply(text).split():
            yield word + "\n"

    return StreamingResponse(words(), media_type="text/plain")


@router.post("/agents/{agent_id}/config")
async def change_config(
    agent_id: str,
    user_id: Annotated[str, Depends(caller)],
    service: Annotated[ConfigService, Depends(provided(AppContainer.config_service))],
) -> ConfigChanged:
    """A configuration change: a new version, applied here and published to the fleet."""
    try:
        version, published = await service.bump(agent_id, user_id)
    except KeyError:
        raise HTTPException(status_code=404, detail="agent not found") from None
    return ConfigChanged(agent_id=agent_id, cfg_version=version, published=published)


@router.get("/cache/stats")
async def cache_stats(manager: Manager) -> dict[str, int]:
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
    registry: Annotated[CollectorRegistry, Depends(provided("runtime.metrics_registry"))],
) -> Response:
    """Prometheus exposition text: the cache's counters, gauges and build histograms."""
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


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


def create_app(
    container: AppContainer | None = None, admin_tokens: Mapping[str, AdminGrant] | None = None
) -> FastAPI:
    """Build the app around ``container`` (a fresh ``AppContainer`` by default).

    ``admin_tokens`` maps each admin token to its grant; by default ``EXAMPLE_ADMIN_TOKEN``
    (if set) is an admin of the whole cache.
    """
    if admin_tokens is None:
        token = os.environ.get("EXAMPLE_ADMIN_TOKEN")
        admin_tokens = {token: True} if token else {}
    lifespan = runtime_lifespan(container or AppContainer())  # resources start and stop with it
    app = FastAPI(title="snak_runtime example", lifespan=lifespan)
    app.state.admin_tokens = dict(admin_tokens)
    app.include_router(router)
    # The admin routes over current_manager: they follow the container when it restarts.
    app.include_router(admin_router(authorize=require_admin), prefix="/admin")
    return app


app = create_app()
