"""The public interface between the invalidation package and the manager (issue 24):
``resync_view()``, ``evict(..., cause=)``, ``evict_all(cause=)`` and ``ResyncTarget``."""

from __future__ import annotations

import ast
import asyncio
import pathlib

import pytest

import snak_runtime.invalidation as invalidation
from snak_runtime import RemovalCause
from snak_runtime.invalidation import ResyncTarget
from snak_runtime.invalidation._versions import resync_target
from tests.helpers import MakeManager, MakeSeed, Seed, listen


async def test_the_manager_is_a_resync_target(make_manager: MakeManager) -> None:
    m = make_manager()
    assert isinstance(m, ResyncTarget)
    assert resync_target(m) is m


async def test_a_plain_invalidation_target_is_not_a_resync_target() -> None:
    class Plain:
        async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

        async def evict(self, agent_id: str) -> bool:
            return False

        async def evict_all(self) -> int:
            return 0

    assert resync_target(Plain()) is None


async def test_resync_view_lists_live_versions_and_loads_in_flight(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a", 3))
    await m.shadow_seed(make_seed("b", 7))
    release = asyncio.Event()

    async def build(agent_id: str) -> Seed:
        await release.wait()
        return make_seed(agent_id, 1)

    async def lease() -> None:
        async with m.lease("c", build=build):
            pass

    task = asyncio.create_task(lease())
    await asyncio.sleep(0)
    view = m.resync_view()
    assert view == {"a": 3, "b": 7, "c": None}
    view["a"] = 99  # a copy: changing it changes nothing
    assert m.resync_view()["a"] == 3
    release.set()
    await task
    assert m.resync_view() == {"a": 3, "b": 7, "c": 1}


async def test_evict_with_the_resync_cause_reports_it(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    removed = listen(m)
    for agent_id in ("a", "b", "c"):
        await m.shadow_seed(make_seed(agent_id))
    assert await m.evict("a", cause=RemovalCause.RESYNC)
    assert await m.evict("b")  # explicit by default
    assert await m.evict_all(cause=RemovalCause.RESYNC) == 1
    assert removed == [("a", "resync"), ("b", "explicit"), ("c", "resync")]
    removals = m.stats().removals
    assert (removals["resync"], removals["explicit"]) == (2, 1)


@pytest.mark.parametrize("cause", [RemovalCause.CAPACITY, RemovalCause.SHUTDOWN, "nonsense"])
async def test_evict_refuses_causes_that_are_not_the_callers(
    make_manager: MakeManager, make_seed: MakeSeed, cause: object
) -> None:
    m = make_manager()
    await m.shadow_seed(make_seed("a"))
    with pytest.raises(ValueError, match="cause"):
        await m.evict("a", cause=cause)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="cause"):
        await m.evict_all(cause=cause)  # type: ignore[arg-type]
    assert "a" in m


async def test_a_cause_given_as_its_string_is_accepted(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    removed = listen(m)
    await m.shadow_seed(make_seed("a"))
    assert await m.evict("a", cause="resync")  # type: ignore[arg-type]
    assert removed == [("a", "resync")]


def test_the_invalidation_package_names_no_private_member_of_the_manager() -> None:
    """No ``manager._x``/``hooks._x`` call and no ``hasattr`` on the manager: only the public
    interface above."""
    package = pathlib.Path(invalidation.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "hasattr", f"{path.name}: hasattr"
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Attribute)
                and node.value.attr in ("_hooks", "_manager", "_target")
            ):
                raise AssertionError(f"{path.name}: {ast.unparse(node)}")
