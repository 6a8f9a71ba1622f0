"""Issue 23, finding 4: invalidations for one agent coalesce in the dispatcher.

At most one job runs and one waits per agent; a newer one replaces the waiting one by the
rule in ``snak_runtime/invalidation/_dispatch.py`` (an eviction absorbs what follows it and
replaces a waiting invalidation; of two invalidations the higher version stays).
"""

from __future__ import annotations

import asyncio

import pytest

from snak_runtime import RuntimeSeed
from snak_runtime.invalidation import InvalidationSubscriber, encode_message
from tests.helpers import MakeManager, settle
from tests.unit.invalidation_fakes import RecordingTarget

URL = "redis://127.0.0.1:1"  # never connected: submit() drives the dispatcher directly


class Config:
    """The configuration database of one agent, and a rebuild held at a gate."""

    def __init__(self, version: int) -> None:
        self.version = version
        self.gate = asyncio.Event()
        self.rebuilds: list[int] = []
        self.rebuilt_version: int | None = None  # what rebuild() returns; None: the current

    def seed(self, version: int) -> RuntimeSeed[str, object]:
        return RuntimeSeed("a", "u1", version, f"a@{version}", self.rebuild)

    async def rebuild(self) -> RuntimeSeed[str, object] | None:
        version = self.version if self.rebuilt_version is None else self.rebuilt_version
        self.rebuilds.append(version)
        await self.gate.wait()
        return self.seed(version)


async def test_a_burst_of_100000_versions_runs_one_rebuild_and_one_more(
    make_manager: MakeManager,
) -> None:
    manager = make_manager()
    db = Config(1)
    await manager.shadow_seed(db.seed(1))
    sub = InvalidationSubscriber(manager, URL)
    db.version = 2
    sub.submit(encode_message("a", 2))
    await settle()
    assert db.rebuilds == [2]  # running, held at the gate
    for version in range(3, 100_002):
        db.version = version
        sub.submit(encode_message("a", version))
    # Before: 100,000 queued, 99,999 on_invalidate calls ahead of the agent.
    assert sub.stats().pending == 2  # the running one and one waiting
    db.gate.set()
    await sub.drain()
    assert db.rebuilds == [2, 100_001]
    assert manager.version_of("a") == 100_001
    st = sub.stats()
    assert (st.received, st.applied, st.failures, st.coalesced, st.pending) == (
        100_000, 2, 0, 99_998, 0,
    )
    assert manager.stats().invalidations == 2
    await sub.stop()


async def test_the_same_huge_version_200_times_is_one_rebuild(make_manager: MakeManager) -> None:
    # The rebuild returns an older version, so each duplicate would be "newer" again.
    manager = make_manager()
    db = Config(1)
    db.rebuilt_version = 1
    db.gate.set()
    await manager.shadow_seed(db.seed(1))
    sub = InvalidationSubscriber(manager, URL)
    for _ in range(200):
        sub.submit(encode_message("a", 2**63 - 1))
    await sub.drain()
    assert db.rebuilds == [1]  # before: 200
    assert (sub.stats().applied, sub.stats().coalesced) == (1, 199)
    await sub.stop()


async def test_an_eviction_absorbs_later_invalidations_and_replaces_earlier_ones() -> None:
    target = RecordingTarget()
    sub = InvalidationSubscriber(target, URL)
    sub.submit(encode_message("a", 5))
    sub.submit(encode_message("a", 6, "cfg_deleted"))  # replaces the waiting 5
    sub.submit(encode_message("a", 7))  # absorbed: after the eviction it would find nothing
    sub.submit(encode_message("b", 3))
    sub.submit(encode_message("b", 2))  # older than the waiting 3: absorbed
    await sub.drain()
    assert sorted(target.calls) == [("evict", "a", None), ("invalidate", "b", 3)]
    assert (sub.stats().applied, sub.stats().coalesced) == (2, 3)


@pytest.mark.parametrize(
    ("pending", "new", "kept"),
    [
        ((False, 3), (False, 4), "new"),
        ((False, 4), (False, 3), "pending"),
        ((False, 4), (False, 4), "pending"),
        ((False, 9), (True, 1), "new"),
        ((True, 1), (False, 9), "pending"),
        ((True, 1), (True, 2), "pending"),
    ],
)
def test_merge_rule(pending: tuple[bool, int], new: tuple[bool, int], kept: str) -> None:
    from snak_runtime.invalidation._dispatch import Job, merge

    a, b = Job(*pending), Job(*new)
    assert merge(a, b) == ((a, b) if kept == "pending" else (b, a))


async def test_a_superseded_job_is_released_so_its_repair_can_be_queued_again() -> None:
    from snak_runtime.invalidation._dispatch import Job

    target = RecordingTarget()
    sub = InvalidationSubscriber(target, URL)
    released: list[str] = []
    sub._dispatcher.submit_job("a", Job(False, 2, work=_noop, on_done=lambda: released.append("r")))
    sub.submit(encode_message("a", 3, "cfg_deleted"))  # supersedes the repair
    assert released == ["r"]
    await sub.drain()
    assert target.calls == [("evict", "a", None)]
    # Dropped at stop: released too.
    sub._dispatcher.submit_job("b", Job(False, 2, work=_noop, on_done=lambda: released.append("s")))
    await sub.stop()
    assert released == ["r", "s"] and sub.stats().pending == 0


async def _noop() -> None:
    return None
