"""``lease_dependency``: a route's agent runtime, leased for the whole response."""

import contextlib
import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, HTTPException, Path, status
from fastapi.params import Depends as DependsMarker

from ... import RuntimeLease, RuntimeManagerClosed, RuntimeNotCached, RuntimeSeed
from ._checks import checked_id
from ._sources import ManagerSource, current_manager, manager_dependency

Build = Callable[[str], Awaitable[RuntimeSeed[Any, Any] | None]]

_MANAGER = "snak_runtime_manager_"
_USER = "snak_runtime_user_"
_BUILD = "snak_runtime_build_"


def lease_dependency(
    build: Build | DependsMarker | None = None,
    *,
    agent_id_param: str = "agent_id",
    user: DependsMarker | None = None,
    manager: ManagerSource = current_manager,
) -> Callable[..., AsyncIterator[RuntimeLease[Any, Any]]]:
    """A FastAPI dependency that leases the agent named in the path, for one request.

    ``lease: Annotated[RuntimeLease, Depends(lease_dependency(build, user=Depends(me)))]``
    on a route whose path holds ``{agent_id}`` (or the name given as ``agent_id_param``):
    the route gets a ``RuntimeLease`` (``lease.runtime``, ``lease.cfg_version``,
    ``lease.agent``). The pin is released when the response is done, after the last byte
    of a ``StreamingResponse`` too (FastAPI 0.118 or newer runs a yield dependency's exit
    after the response is sent), also when the route raises or the client goes away.

    - ``build``: ``async (agent_id) -> RuntimeSeed | None``, called on a miss (single
      flight), or ``Depends(...)`` of a dependency that returns one (say from your
      container). Without it, a miss is a 404.
    - ``user``: ``Depends(...)`` of your dependency that returns the caller's user id (a
      non-empty ``str``); the lease then checks the entry's owner. It returning ``None`` is
      a 401. Without ``user``, nobody's ownership is checked.
    - ``manager``: where the manager comes from (as for ``admin_router``); by default
      ``current_manager``, the manager of the container ``runtime_lifespan`` runs.

    Answers: a miss with no ``build`` (or ``build`` returning ``None``) and another user's
    agent are the same 404 ``{"detail": "agent not found"}`` (existence is not revealed); a
    closed manager (the app shutting down) is a 503; an invalid id (empty, longer than
    ``MAX_ID_LENGTH``, control characters) a 422. An exception from ``build`` (or a build
    timeout) propagates as it is: FastAPI makes it a 500 unless your app handles it.
    """
    if not agent_id_param.isidentifier():
        raise ValueError(f"agent_id_param must be a parameter name, got {agent_id_param!r}")
    if user is not None and not isinstance(user, DependsMarker):
        raise TypeError("user must be Depends(<your dependency returning the user id>)")
    fixed_build: Build | None = None
    if build is not None and not isinstance(build, DependsMarker):
        if not callable(build):
            raise TypeError(f"build must be an async loader or Depends(...), got {build!r}")
        fixed_build = build

    async def lease_for_request(**values: Any) -> AsyncIterator[RuntimeLease[Any, Any]]:
        agent_id = checked_id(agent_id_param, values[agent_id_param])
        user_id = _user_id(values[_USER]) if user is not None else None
        loader = values[_BUILD] if isinstance(build, DependsMarker) else fixed_build
        async with contextlib.AsyncExitStack() as stack:
            try:
                lease = await stack.enter_async_context(
                    values[_MANAGER].lease(agent_id, user_id=user_id, build=loader)
                )
            except RuntimeNotCached:
                raise HTTPException(status.HTTP_404_NOT_FOUND, "agent not found") from None
            except RuntimeManagerClosed:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "closed") from None
            yield lease

    parameters = [
        _keyword(agent_id_param, Annotated[str, Path()]),
        _keyword(_MANAGER, Annotated[Any, Depends(manager_dependency(manager))]),
    ]
    if user is not None:
        parameters.append(_keyword(_USER, Annotated[Any, user]))
    if isinstance(build, DependsMarker):
        parameters.append(_keyword(_BUILD, Annotated[Any, build]))
    # FastAPI reads the parameters from the signature: the path's id and the sub-dependencies.
    lease_for_request.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=AsyncIterator[RuntimeLease[Any, Any]]
    )
    return lease_for_request


def _keyword(name: str, annotation: Any) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation)


def _user_id(found: object) -> str:
    if found is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, "Unauthorized", headers={"WWW-Authenticate": "Bearer"}
        )
    if not isinstance(found, str) or not found:
        raise TypeError(
            f"lease_dependency's user dependency must return a user id (a non-empty str), "
            f"got {type(found).__name__}"
        )
    return found
