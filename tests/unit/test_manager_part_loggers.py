"""Each part of the manager logs under its own module's name (issue 24), or to the
``logger=`` the user injected."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import MakeManager, Seed


async def test_each_part_logs_under_its_module(
    make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    m = make_manager()

    async def build(agent_id: str) -> Seed | None:
        raise LookupError(agent_id)  # the loads part logs the failed build

    with caplog.at_level(logging.DEBUG, logger="snak_runtime"):
        m.release("nothing")  # the cache part
        with pytest.raises(LookupError):
            async with m.lease("a", build=build):  # the loads part
                pass
    names = {r.name for r in caplog.records}
    assert "snak_runtime._cache" in names and "snak_runtime._loads" in names
    assert "snak_runtime._manager" not in names


async def test_an_injected_logger_receives_every_part(
    make_manager: MakeManager, caplog: pytest.LogCaptureFixture
) -> None:
    custom = logging.getLogger("host.parts")
    m = make_manager(logger=custom)

    async def build(agent_id: str) -> Seed | None:
        raise LookupError(agent_id)  # the loads part logs the failed build

    with caplog.at_level(logging.DEBUG):
        m.release("nothing")
        with pytest.raises(LookupError):
            async with m.lease("a", build=build):
                pass
    assert {r.name for r in caplog.records} == {"host.parts"}
