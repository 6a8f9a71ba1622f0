"""Re-entry under ``stale_while_rebuilding`` (issue 23, finding 8; CONTRACT §6): a rebuild
that reads its own agent id from the task running it gets the documented RuntimeError, not
the runtime it is replacing; reads from other tasks are served the stale entry as before."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from tests.helpers import MakeManager, MakeSeed, Manager, Seed

HANG_GUARD_S = 30


async def read_acquire(m: Manager) -> Any:
    got = await m.acquire("a")
    if got is not None:
        m.release("a")
    return got


async def read_acquire_with_agent(m: Manager) -> Any:
    got = await m.acquire_with_agent("a")
    if got is not None:
        m.release("a")
    return got


async def read_lease(m: Manager) -> Any:
    async with m.lease("a") as lease:
        return lease.runtime


async def read_lease_with_build(m: Manager) -> Any:
    async def build(agent_id: str) -> Seed | None:
        raise AssertionError("not a miss")

    async with m.lease("a", build=build) as lease:
        return lease.runtime


READS: dict[str, Callable[[Manager], Coroutine[Any, Any, Any]]] = {
    "acquire": read_acquire,
    "acquire_with_agent": read_acquire_with_agent,
    "lease": read_lease,
    "lease-with-build": read_lease_with_build,
}


@pytest.mark.parametrize("read", READS)
async def test_rebuild_reading_its_own_id_raises_with_stale_serving(
    make_manager: MakeManager, make_seed: MakeSeed, read: str
) -> None:
    m = make_manager(stale_while_rebuilding=True)
    seen: list[BaseException | object] = []
    v2 = make_seed("a", 2)
    from_elsewhere: list[object] = []

    async def rebuild() -> Seed | None:
        # another task may be served the stale entry meanwhile
        from_elsewhere.append(await asyncio.create_task(READS[read](m)))
        try:
            seen.append(await READS[read](m))
        except BaseException as exc:
            seen.append(exc)
        return v2

    v1 = make_seed("a", 1, rebuild=rebuild)
    await m.shadow_seed(v1)
    async with asyncio.timeout(HANG_GUARD_S):
        await m.on_invalidate("a", 2)
    assert len(seen) == 1 and type(seen[0]) is RuntimeError, seen
    assert "'a'" in str(seen[0])
    assert [getattr(x, "runtime", x) for x in from_elsewhere] == [v1.runtime]
    assert m.version_of("a") == 2
