"""An admin router for FastAPI: look inside the cache and evict, behind the host's check.

The host supplies the authorization (a FastAPI dependency) and mounts the router where it
likes: ``app.include_router(admin_router(get_manager, authorize=require_admin), prefix="/admin")``.
There is no default: a router without ``authorize`` is refused, so no admin endpoint is
ever open by accident. ``authorize`` lets a request through only by returning ``True`` (an
admin of the whole cache) or an ``AdminScope`` (an admin of one user's entries); anything
else is a 403. Needs the ``admin`` extra (``pip install 'snak-runtime[admin]'``).
"""

# No ``from __future__ import annotations``: FastAPI reads the route signatures at runtime.

import asyncio
import base64
import binascii
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Annotated, Any, Final, final

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.responses import JSONResponse

from ... import AgentRuntimeManager, CacheStats, EntryInfo, RuntimeManagerClosed
from ._checks import MAX_ID_LENGTH, checked_id, unprocessable
from ._sources import ManagerSource, current_manager, manager_dependency

__all__ = ("DEFAULT_PAGE", "MAX_ID_LENGTH", "MAX_PAGE", "AdminScope", "admin_router")

logger = logging.getLogger(__name__)

DEFAULT_PAGE: Final = 100
"""Entries per page of ``GET /entries`` when ``limit`` is not given."""
MAX_PAGE: Final = 1_000
"""Largest ``limit`` of ``GET /entries``."""

# How many ids one step of the listing looks at before it yields to the event loop, and how
# many entries it describes per step: each step stays well under a millisecond.
_IDS_PER_STEP: Final = 2_048
_ENTRIES_PER_STEP: Final = 128
_MAX_CURSOR_CHARS: Final = 8_192
_ENTRY_FIELDS: Final = tuple(f.name for f in fields(EntryInfo))


@final
@dataclass(frozen=True, slots=True)
class AdminScope:
    """What ``authorize`` returns for an admin of one user's entries only.

    Every route then acts as if the cache held nothing else: another user's entry (or
    another user, in ``DELETE /users/{user_id}/entries``) is a 404, exactly as if absent;
    ``GET /entries`` lists that user's entries only; ``GET /stats`` (whole-cache counters)
    is a 403.
    """

    user_id: str

    def __post_init__(self) -> None:
        if not isinstance(self.user_id, str):
            raise TypeError(f"user_id must be a string, got {type(self.user_id).__name__}")
        if not self.user_id:
            raise ValueError("user_id must not be empty")


def admin_router(
    manager: ManagerSource = current_manager,
    *,
    authorize: Callable[..., Any] | None = None,
) -> APIRouter:
    """Routes over the current manager, every one behind ``authorize``.

    ``manager`` is where each request finds the manager: by default ``current_manager``
    (the manager of the container ``runtime_lifespan`` runs); a zero-argument callable (sync
    or async, for example the container's provider ``container.manager``) or a FastAPI
    dependency (say one that takes the ``Request``), called per request, so the router
    follows a container restart; or a manager instance, fixed for the router's life.

    ``authorize`` is a FastAPI dependency (it may take the request, headers, or other
    dependencies). Only two answers let a request through: ``True`` (an admin of the whole
    cache) and an ``AdminScope(user_id=...)`` (an admin of that user's entries only).
    Anything else, ``None``, ``False``, ``0``, ``""`` or a ``Response`` included, is a 403,
    and raising ``HTTPException`` (401 or 403) refuses as before. It runs before the route
    reads its path or looks anything up, so a refused request learns nothing about which
    agents exist.

    Routes (relative to where the router is mounted):

    - ``GET /entries?limit=&cursor=``: one page of live entries, by agent id:
      ``{"entries": [...], "next_cursor": "..." or null}``; pass ``next_cursor`` back as
      ``cursor`` for the next page (``limit`` 1 to ``MAX_PAGE``, default ``DEFAULT_PAGE``)
    - ``GET /entries/{agent_id}``: ``manager.peek()``, 404 when there is no live entry
    - ``DELETE /entries/{agent_id}``: ``manager.evict()``: ``{"agent_id", "removed"}``
    - ``DELETE /users/{user_id}/entries``: ``manager.evict_user()``: ``{"user_id", "removed"}``
    - ``GET /stats``: ``manager.stats()`` and its ``hit_rate`` (a scoped caller: 403)

    Ids that are empty, longer than ``MAX_ID_LENGTH`` or hold control characters, and a
    bad ``limit`` or ``cursor``, are a 422 whose body shows at most a short prefix of the
    value. Evicting through a closed manager is a 503.
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
    current = manager_dependency(manager)

    async def authorized(verdict: Annotated[Any, Depends(authorize)]) -> AdminScope | None:
        # issue 23: anything but the literal False let a request through (None,
        # 0, "", a JSONResponse(403)...); only an explicit grant does now.
        if verdict is True:
            return None
        if isinstance(verdict, AdminScope):
            return verdict
        raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")

    Scope = Annotated[AdminScope | None, Depends(authorized)]
    Manager = Annotated[AgentRuntimeManager[Any, Any], Depends(current)]
    router = APIRouter(dependencies=[Depends(authorized)])

    @router.get("/entries")
    async def list_entries(
        manager: Manager, scope: Scope, limit: str | None = None, cursor: str | None = None
    ) -> JSONResponse:
        page_size = _page_size(limit)
        after = _cursor_position(cursor)
        user_id = None if scope is None else scope.user_id
        entries, next_after = await _page(manager, user_id, after, page_size)
        body = {
            "entries": entries,
            "next_cursor": None if next_after is None else _encode_cursor(next_after),
        }
        return JSONResponse(body)

    @router.get("/entries/{agent_id}", response_model=EntryInfo)
    async def get_entry(agent_id: str, manager: Manager, scope: Scope) -> EntryInfo:
        info = _visible(manager, checked_id("agent_id", agent_id), scope)
        if info is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no live entry")
        return info

    @router.delete("/entries/{agent_id}")
    async def evict_entry(agent_id: str, manager: Manager, scope: Scope) -> dict[str, Any]:
        agent_id = checked_id("agent_id", agent_id)
        if scope is not None and _visible(manager, agent_id, scope) is None:
            # Another user's entry and no entry answer alike. (An entry that changes owner
            # between this check and the eviction is not a case snak has: an agent's owner
            # does not change.)
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no live entry")
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
    async def evict_user(user_id: str, manager: Manager, scope: Scope) -> dict[str, Any]:
        user_id = checked_id("user_id", user_id)
        if scope is not None and user_id != scope.user_id:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "no live entry")
        try:
            removed = await manager.evict_user(user_id)
        except RuntimeManagerClosed:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "closed") from None
        return {"user_id": user_id, "removed": removed}

    @router.get("/stats")
    async def get_stats(manager: Manager, scope: Scope) -> dict[str, Any]:
        if scope is not None:
            # Cache-wide counters tell one tenant about the others' traffic (size, misses,
            # evictions move with their requests): for an unscoped admin only.
            raise HTTPException(status.HTTP_403_FORBIDDEN, "Forbidden")
        return _stats_json(manager.stats())

    return router


def _page_size(raw: str | None) -> int:
    if raw is None:
        return DEFAULT_PAGE
    text = raw.strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 7) or not (
        1 <= int(text) <= MAX_PAGE
    ):
        raise unprocessable("query", "limit", f"an integer from 1 to {MAX_PAGE}", raw)
    return int(text)


def _encode_cursor(agent_id: str) -> str:
    return base64.urlsafe_b64encode(agent_id.encode("utf-8")).decode("ascii").rstrip("=")


def _cursor_position(raw: str | None) -> str | None:
    """The agent id a cursor continues after; None for the first page."""
    if raw is None or raw == "":
        return None
    if len(raw) > _MAX_CURSOR_CHARS:
        raise unprocessable("query", "cursor", "not a cursor from this API", raw)
    try:
        decoded = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("utf-8")
    except (binascii.Error, ValueError):
        raise unprocessable("query", "cursor", "not a cursor from this API", raw) from None
    if not decoded:
        raise unprocessable("query", "cursor", "not a cursor from this API", raw)
    return decoded


def _visible(
    manager: AgentRuntimeManager[Any, Any], agent_id: str, scope: AdminScope | None
) -> EntryInfo | None:
    """The live entry of ``agent_id`` as this caller may see it: None when absent or not in
    the caller's scope (the two are never told apart)."""
    info = manager.peek(agent_id)
    if info is None or (scope is not None and info.user_id != scope.user_id):
        return None
    return info


async def _page(
    manager: AgentRuntimeManager[Any, Any], user_id: str | None, after: str | None, limit: int
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of live entries in agent-id order after ``after``, and the id to continue
    after (None: this was the last page).

    Keyset order, not eviction order: a position in eviction order moves with every hit,
    an agent id does not, so an entry present for the whole walk is listed exactly once.
    The ids are copied at C speed, then looked at ``_IDS_PER_STEP`` at a time, yielding to
    the event loop between steps, and only the page's entries are described (``peek``), so
    no step holds the loop for long however large the cache (see docs/operating.md).
    """
    ids = manager.agent_ids(user_id)
    best: list[str] = []  # the limit + 1 smallest ids after ``after`` seen so far
    for start in range(0, len(ids), _IDS_PER_STEP):
        if start:
            await asyncio.sleep(0)
        step = ids[start:start + _IDS_PER_STEP]
        if after is not None:
            step = [agent_id for agent_id in step if agent_id > after]
        best = sorted(itertools.chain(best, step))[: limit + 1]  # C speed, unlike nsmallest
    more = len(best) > limit
    chosen = best[:limit]
    entries: list[dict[str, Any]] = []
    for start in range(0, len(chosen), _ENTRIES_PER_STEP):
        if start:
            await asyncio.sleep(0)
        for agent_id in chosen[start:start + _ENTRIES_PER_STEP]:
            info = manager.peek(agent_id)
            if info is not None and (user_id is None or info.user_id == user_id):
                entries.append({name: getattr(info, name) for name in _ENTRY_FIELDS})
    # A page may hold fewer than ``limit`` entries (some expired or left meanwhile): only a
    # missing next cursor means the end.
    return entries, (chosen[-1] if more and chosen else None)


def _stats_json(stats: CacheStats) -> dict[str, Any]:
    out = {f.name: getattr(stats, f.name) for f in fields(stats)}
    out["removals"] = dict(stats.removals)
    out["hit_rate"] = stats.hit_rate
    return out

