"""An admin router for FastAPI: look inside the cache and evict, behind the host's check.

The host supplies the authorization (a FastAPI dependency) and mounts the router where it
likes: ``app.include_router(admin_router(manager, authorize=require_admin), prefix="/admin")``.
There is no default: a router without ``authorize`` is refused, so no admin endpoint is
ever open by accident. Needs the ``admin`` extra (``pip install 'snak-runtime[admin]'``).
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at runtime.

import logging
from collections.abc import Callable
from dataclasses import fields
from typing import Annotated, Any

try:
    from fastapi import APIRouter, Depends, HTTPException, Path, status
except ImportError as exc:  # pragma: no cover - only without the extra
    raise ImportError(
        "snak_runtime.contrib.fastapi needs FastAPI: pip install 'snak-runtime[admin]'"
    ) from exc

from .. import AgentRuntimeManager, CacheStats, EntryInfo, RuntimeManagerClosed

__all__ = ("MAX_ID_LENGTH", "admin_router")

logger = logging.getLogger(__name__)

MAX_ID_LENGTH = 512
"""Longest agent or user id a route accepts (longer ones are a 422, not a lookup)."""

# Printable ids only: a control character in an id is a client bug or an attack on logs.
_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"

AgentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN)]
UserId = Annotated[str, Path(min_length=1, max_length=MAX_ID_LENGTH, pattern=_ID_PATTERN)]


def admin_router(
    manager: AgentRuntimeManager[Any, Any],
    *,
    authorize: Callable[..., Any] | None = None,
) -> APIRouter:
    """Routes over ``manager``, every one behind ``authorize``.

    ``authorize`` is a FastAPI dependency (it may take the request, headers, or other
    dependencies). It refuses by raising ``HTTPException`` (401 or 403); returning
    ``False`` is refused too (403), anything else lets the request through. It runs
    before the route reads its path or looks anything up, so a refused request learns
    nothing about which agents exist.

    Routes (relative to where the router is mounted):

    - ``GET /entries``: ``manager.snapshot()``, next to be evicted first
    - ``GET /entries/{agent_id}``: ``manager.peek()``, 404 when there is no live entry
    - ``DELETE /entries/{agent_id}``: ``manager.evict()``: ``{"agent_id", "removed"}``
    - ``DELETE /users/{user_id}/entries``: ``manager.evict_user()``: ``{"user_id", "removed"}``
    - ``GET /stats``: ``manager.stats()`` and its ``hit_rate``

    Ids that are empty, longer than ``MAX_ID_LENGTH`` or hold control characters are a
    422. Evicting through a closed manager is a 503.
    """
    if authorize is None:
        raise TypeError(
            "admin_router() needs authorize=<a FastAPI dependency that refuses "
            "unauthorized requests>; the admin routes are never built open"
        )
    if not callable(authorize):
        raise TypeError(
            f"authorize must be a FastAPI dependency (a callable), got {type(authorize).__name__}"
        )
    if not isinstance(manager, AgentRuntimeManager):
        raise TypeError(f"expected an AgentRuntimeManager, got {type(manager).__name__}")

    async def authorized(verdict: Annotated[Any, Depends(authorize)]) -> None:
        # a dependency that answers False instead of raising must not open the door
        if verdict is False:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")

    router = APIRouter(dependencies=[Depends(authorized)])

    @router.get("/entries", response_model=list[EntryInfo])
    async def list_entries() -> list[EntryInfo]:
        return manager.snapshot()

    @router.get("/entries/{agent_id}", response_model=EntryInfo)
    async def get_entry(agent_id: AgentId) -> EntryInfo:
        info = manager.peek(agent_id)
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no live entry")
        return info

    @router.delete("/entries/{agent_id}")
    async def evict_entry(agent_id: AgentId) -> dict[str, Any]:
        try:
            removed = await manager.evict(agent_id)
        except RuntimeManagerClosed:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "closed") from None
        logger.info(
            "admin evicted agent %r: %s", agent_id, removed,
            extra={"agent_id": agent_id, "removed": removed},
        )
        return {"agent_id": agent_id, "removed": removed}

    @router.delete("/users/{user_id}/entries")
    async def evict_user(user_id: UserId) -> dict[str, Any]:
        try:
            removed = await manager.evict_user(user_id)
        except RuntimeManagerClosed:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "closed") from None
        return {"user_id": user_id, "removed": removed}

    @router.get("/stats")
    async def get_stats() -> dict[str, Any]:
        return _stats_json(manager.stats())

    return router


def _stats_json(stats: CacheStats) -> dict[str, Any]:
    out = {f.name: getattr(stats, f.name) for f in fields(stats)}
    out["removals"] = dict(stats.removals)
    out["hit_rate"] = stats.hit_rate
    return out
