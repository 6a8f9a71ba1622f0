"""Loss detection while connected (issue 26): a gap in snak's ``outbox_id`` that stays open
beyond the tolerance reconciles the cache at once, through the version source.

The listener runs over ``FakeBus`` (no Redis); the periodic reconciliation interval is a day,
so a repair seen here came from the gap. Waits poll the subscriber's counters under a hang
guard; nothing depends on elapsed time (the time tolerance is an hour unless a test says so).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import pytest

from snak_runtime import GuardConfig, RuntimeSeed
from snak_runtime.invalidation import InvalidationSettings, InvalidationSubscriber, _subscriber
from snak_runtime.invalidation._versions import resolve_timings
from tests.helpers import MakeManager, Manager, Seed, settle
from tests.unit.invalidation_fakes import FakeBus, RecordingTarget

URL = "redis://127.0.0.1:1/0"  # never connected to: FakeBus stands in
DAY_MS = 86_400_000
HOUR_MS = 3_600_000


class Database:
    """The configuration versions (the truth) and the version source reading them."""

    def __init__(self, versions: dict[str, int]) -> None:
        self.versions = dict(versions)
        self.calls = 0

    async def source(self, agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        self.calls += 1
        return {a: self.versions.get(a) for a in agent_ids}

    def seed(self, agent_id: str) -> Seed:
        version = self.versions[agent_id]

        async def rebuild() -> Seed | None:
            return self.seed(agent_id)

        return RuntimeSeed(agent_id, "u", version, f"{agent_id}@{version}", rebuild)


def message(agent_id: str, version: int, outbox_id: int | None) -> str:
    body: dict[str, object] = {"agent_id": agent_id, "cfg_version": version}
    if outbox_id is not None:
        body["outbox_id"] = outbox_id
    return json.dumps(body)


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(120):  # hang guard only
        while not predicate():
            await asyncio.sleep(0.001)


async def started(
    monkeypatch: pytest.MonkeyPatch, manager: Manager, db: Database | None, **kw: Any
) -> tuple[InvalidationSubscriber, FakeBus]:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    if db is not None:
        kw.setdefault("reconcile_interval_ms", DAY_MS)
        kw.setdefault("gap_tolerance_ms", HOUR_MS)
    sub = InvalidationSubscriber(
        manager, URL, version_source=None if db is None else db.source, **kw
    )
    await sub.start()
    await until(lambda: sub.connected)
    return sub, bus


@pytest.fixture
async def fleet(make_manager: MakeManager) -> tuple[Manager, Database]:
    manager = make_manager(guards=GuardConfig(max_entries=100, max_ttl_ms=600_000))
    db = Database({f"a{i}": 1 for i in range(20)})
    for agent_id in db.versions:
        await manager.shadow_seed(db.seed(agent_id))
    return manager, db


async def test_a_dropped_publish_is_repaired_within_the_tolerance_not_the_interval(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[Manager, Database]
) -> None:
    manager, db = fleet
    sub, bus = await started(monkeypatch, manager, db, gap_tolerance_messages=3)
    try:
        db.versions["a1"] = 2
        bus.push(message("a0", 1, 1))
        # outbox row 2 (a1 -> 2) was committed, but its publish never reached us
        db.versions["a3"] = 2
        bus.push(message("a3", 2, 3), message("a4", 1, 4))
        await until(lambda: sub.stats().received == 3)
        await settle()
        assert manager.version_of("a1") == 1  # within the tolerance: still a hint
        assert sub.stats().gap_reconciliations == 0
        bus.push(message("a5", 1, 5))  # the third message after the gap: given up
        await until(lambda: manager.version_of("a1") == 2)
        s = sub.stats()
        assert (s.gaps_detected, s.gap_reconciliations, s.reconciliations) == (1, 1, 0)
        assert s.version_repaired == 1
        assert db.calls == 1
    finally:
        await sub.stop()


async def test_reordered_but_complete_delivery_never_reconciles(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[Manager, Database]
) -> None:
    manager, db = fleet
    sub, bus = await started(monkeypatch, manager, db, gap_tolerance_messages=3)
    try:
        order = [1, 3, 2, 4, 7, 5, 6, 8, 10, 9, *range(11, 200)]
        bus.push(*(message(f"a{i % 20}", 1, i) for i in order))
        await until(lambda: sub.stats().received == len(order))
        await sub.drain()
        await settle()
        s = sub.stats()
        assert (s.gaps_detected, s.gap_reconciliations, s.gap_resets) == (0, 0, 0)
        assert db.calls == 0
    finally:
        await sub.stop()


async def test_one_reconciliation_per_window_under_a_flood_of_gaps(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[Manager, Database]
) -> None:
    manager, db = fleet
    sub, bus = await started(monkeypatch, manager, db, gap_tolerance_messages=2)
    try:
        ids = range(0, 4_000, 2)  # every other publish lost
        bus.push(*(message(f"a{i % 20}", 1, i) for i in ids))
        await until(lambda: sub.stats().received == len(ids))
        await until(lambda: sub.stats().gap_reconciliations == 1)
        await sub.drain()
        await settle()
        s = sub.stats()
        assert s.gaps_detected >= 1_990
        assert s.gap_reconciliations == 1  # the window is an hour: the rest wait for its end
        assert db.calls == 1
    finally:
        await sub.stop()


async def test_a_bogus_huge_outbox_id_resets_tracking_and_is_not_chased(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[Manager, Database]
) -> None:
    manager, db = fleet
    sub, bus = await started(monkeypatch, manager, db, gap_tolerance_messages=2)
    try:
        bus.push(message("a0", 1, 1), message("a1", 1, 2**63 - 1), message("a2", 1, 3))
        bus.push(*(message("a3", 1, i) for i in range(4, 10)))
        await until(lambda: sub.stats().received == 9)
        await sub.drain()
        await settle()
        s = sub.stats()
        assert (s.gap_resets, s.gaps_detected, s.gap_reconciliations) == (2, 0, 0)
        assert db.calls == 0
    finally:
        await sub.stop()


async def test_without_outbox_id_or_without_a_version_source_nothing_changes(
    monkeypatch: pytest.MonkeyPatch, fleet: tuple[Manager, Database]
) -> None:
    manager, db = fleet
    sub, bus = await started(monkeypatch, manager, db, gap_tolerance_messages=1)
    try:
        bus.push(*(message(f"a{i}", 1, None) for i in range(10)))
        await until(lambda: sub.stats().received == 10)
        await sub.drain()
        await settle()
        assert (sub.stats().gaps_detected, db.calls) == (0, 0)
    finally:
        await sub.stop()

    target = RecordingTarget()
    plain, bus = await started(monkeypatch, target, None)  # type: ignore[arg-type]
    try:
        bus.push(*(message(f"a{i}", 1, i) for i in range(0, 100, 3)))
        await until(lambda: plain.stats().received == 34)
        await plain.drain()
        s = plain.stats()
        assert (s.gaps_detected, s.gap_reconciliations, s.applied) == (0, 0, 34)
        assert plain._loss.gaps is None
    finally:
        await plain.stop()


def test_gap_tolerances_come_from_keyword_then_environment_then_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def timings(**kw: int | None) -> tuple[int, int]:
        t = resolve_timings(
            InvalidationSettings(), has_source=True, source_timeout_ms=None,
            reconcile_interval_ms=None, **kw,
        )
        return t.gap_tolerance_messages, t.gap_tolerance_ms

    assert timings() == (64, 2_000)
    monkeypatch.setenv("AGENT_CFG_GAP_TOLERANCE_MESSAGES", "16")
    monkeypatch.setenv("AGENT_CFG_GAP_TOLERANCE_MS", "0")  # 0: loss detection off
    assert timings() == (16, 0)
    assert timings(gap_tolerance_messages=8, gap_tolerance_ms=500) == (8, 500)
    monkeypatch.setenv("AGENT_CFG_GAP_TOLERANCE_MS", "soon")
    assert timings() == (16, 2_000)
    assert "AGENT_CFG_GAP_TOLERANCE_MS='soon' ignored" in caplog.text
    monkeypatch.setenv("AGENT_CFG_GAP_TOLERANCE_MS", "99999999")
    assert timings() == (16, 3_600_000)  # capped to the ceiling, with a warning
    with pytest.raises(ValueError, match="gap_tolerance_messages"):
        timings(gap_tolerance_messages=0)
    with pytest.raises(ValueError, match="needs a version_source"):
        resolve_timings(
            InvalidationSettings(), has_source=False, source_timeout_ms=None,
            reconcile_interval_ms=None, gap_tolerance_ms=100,
        )
