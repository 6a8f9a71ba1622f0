"""The synchronous store: generations, idle recency, expiry heap, agent ownership (CONTRACT §3,
§5 capacity, §7 cost, §8 exactly once)."""

from __future__ import annotations

from typing import Any

import pytest

from snak_runtime import RemovalCause, RuntimeSeed
from snak_runtime._store import _Store
from snak_runtime.testing import lru_order, queued_expiries
from tests.helpers import Seed


async def _rebuild() -> Seed | None:
    return None


def seed(agent_id: str, version: int = 1, agent: object | None = None) -> Seed:
    return RuntimeSeed(agent_id, "u1", version, f"{agent_id}@{version}", _rebuild, agent)


class Recorder:
    def __init__(self) -> None:
        self.removed: list[tuple[str, RemovalCause]] = []
        self.orphaned: list[tuple[str, object]] = []
        self.store: _Store[str, object] = _Store(self.on_removed, self.on_orphaned)

    def lru_order(self) -> list[str]:
        return lru_order(self.store.policy)

    def queued_expiries(self) -> int:
        return queued_expiries(self.store)

    def on_removed(self, agent_id: str, cause: RemovalCause) -> None:
        self.removed.append((agent_id, cause))

    def on_orphaned(self, agent_id: str, agent: Any) -> None:
        self.orphaned.append((agent_id, agent))


@pytest.fixture
def rec() -> Recorder:
    return Recorder()


def test_install_makes_current_and_idle(rec: Recorder) -> None:
    gen = rec.store.install(seed("a"), 100, RemovalCause.REPLACED)
    assert rec.store.current == {"a": gen}
    assert rec.lru_order() == ["a"]
    assert (gen.cfg_version, gen.expires_at, gen.pins, gen.current) == (1, 100, 0, True)
    assert (rec.removed, rec.orphaned) == ([], [])


@pytest.mark.parametrize("cause", list(RemovalCause))
def test_replacing_reports_cause_and_orphans_the_old_agent(
    rec: Recorder, cause: RemovalCause
) -> None:
    old_agent, new_agent = object(), object()
    old = rec.store.install(seed("a", 1, old_agent), 100, RemovalCause.REPLACED)
    new = rec.store.install(seed("a", 2, new_agent), 200, cause)
    assert rec.store.current == {"a": new}
    assert (old.current, old.finished) == (False, True)
    assert rec.removed == [("a", cause)]
    assert rec.orphaned == [("a", old_agent)]


def test_silent_supersede_reports_nothing(rec: Recorder) -> None:
    agent = object()
    rec.store.install(seed("a", 1, agent), 100, RemovalCause.REPLACED)
    rec.store.install(seed("a", 1, agent), 200, None)
    assert (rec.removed, rec.orphaned) == ([], [])
    assert rec.store.owns(agent)


def test_pinned_generation_detaches_and_orphans_at_last_pin(rec: Recorder) -> None:
    agent = object()
    old = rec.store.install(seed("a", 1, agent), 100, RemovalCause.REPLACED)
    old.lease_pins = 1
    rec.store.install(seed("a", 2), 200, RemovalCause.REPLACED)
    assert rec.store.detached == {"a": [old]}
    assert rec.orphaned == []
    old.lease_pins = 0
    rec.store.drop_detached(old)
    assert rec.store.detached == {}
    assert rec.orphaned == [("a", agent)]


def test_agent_shared_by_generations_is_orphaned_once_after_the_last(rec: Recorder) -> None:
    agent = object()
    g1 = rec.store.install(seed("a", 1, agent), 100, RemovalCause.REPLACED)
    g1.lease_pins = 1
    g2 = rec.store.install(seed("a", 2, agent), 200, RemovalCause.REPLACED)
    rec.store.detach(g2, RemovalCause.EXPLICIT)
    assert rec.orphaned == []
    g1.lease_pins = 0
    rec.store.drop_detached(g1)
    rec.store.finish(g1)  # finishing twice is harmless
    assert rec.orphaned == [("a", agent)]
    assert not rec.store.owns(agent)


def test_agentless_seed_is_never_orphaned(rec: Recorder) -> None:
    gen = rec.store.install(seed("a"), 100, RemovalCause.REPLACED)
    rec.store.detach(gen, RemovalCause.EXPLICIT)
    assert (rec.removed, rec.orphaned) == ([("a", RemovalCause.EXPLICIT)], [])


def test_pop_expired_removes_due_idle_entries_soonest_first(rec: Recorder) -> None:
    for agent_id, expires in (("c", 30), ("a", 10), ("d", 40), ("b", 20)):
        rec.store.install(seed(agent_id), expires, RemovalCause.REPLACED)
    assert rec.store.pop_expired(25, 100) == 2
    assert rec.removed == [("a", RemovalCause.EXPIRED), ("b", RemovalCause.EXPIRED)]
    assert sorted(rec.store.current) == ["c", "d"]


def test_pop_expired_at_exact_deadline(rec: Recorder) -> None:
    rec.store.install(seed("a"), 10, RemovalCause.REPLACED)
    assert rec.store.pop_expired(9, 100) == 0
    assert rec.store.pop_expired(10, 100) == 1
    assert rec.store.current == {}


def test_pop_expired_respects_the_limit(rec: Recorder) -> None:
    for i in range(5):
        rec.store.install(seed(f"k{i}"), i, RemovalCause.REPLACED)
    assert rec.store.pop_expired(100, 2) == 2
    assert len(rec.store.current) == 3
    assert rec.store.pop_expired(100, 10) == 3
    assert rec.store.current == {}


def test_pop_expired_leaves_pinned_entries_to_their_release(rec: Recorder) -> None:
    gen = rec.store.install(seed("a"), 10, RemovalCause.REPLACED)
    gen.lease_pins = 1
    assert rec.store.pop_expired(50, 10) == 1
    assert (rec.store.current, rec.removed, gen.in_expiry) == ({"a": gen}, [], False)


def test_pop_expired_skips_stale_heap_items(rec: Recorder) -> None:
    rec.store.install(seed("a", 1), 10, RemovalCause.REPLACED)
    live = rec.store.install(seed("a", 2), 20, RemovalCause.REPLACED)
    rec.removed.clear()
    assert rec.store.pop_expired(15, 10) == 1  # the superseded generation's item
    assert (rec.store.current, rec.removed) == ({"a": live}, [])


def test_lru_victim_is_least_recently_used_idle_unless_kept(rec: Recorder) -> None:
    assert rec.store.victim(None) is None
    a = rec.store.install(seed("a"), 100, RemovalCause.REPLACED)
    rec.store.install(seed("b"), 100, RemovalCause.REPLACED)
    assert rec.store.victim(None) is a
    assert rec.store.victim(rec.store.current["b"]) is a
    assert rec.store.victim(rec.store.current["a"]) is None


def test_lru_victim_drops_pinned_entries_from_the_order(rec: Recorder) -> None:
    a = rec.store.install(seed("a"), 100, RemovalCause.REPLACED)
    b = rec.store.install(seed("b"), 100, RemovalCause.REPLACED)
    a.lease_pins = 1
    assert rec.store.victim(None) is b
    assert rec.lru_order() == ["b"]  # "a" goes back when its last pin is released
    b.lease_pins = 1
    assert rec.store.victim(None) is None
    assert rec.lru_order() == []


def test_heap_is_compacted_when_mostly_stale(rec: Recorder) -> None:
    for version in range(1, 300):
        rec.store.install(seed("a", version), 1_000 + version, RemovalCause.REPLACED)
    assert rec.queued_expiries() < 150
    assert len(rec.store.current) == 1


def test_unfinished_pinned_lists_current_and_detached_pinned(rec: Recorder) -> None:
    g1 = rec.store.install(seed("a", 1), 100, RemovalCause.REPLACED)
    g1.lease_pins = 1
    g2 = rec.store.install(seed("a", 2), 100, RemovalCause.REPLACED)
    g2.lease_pins = 1
    rec.store.install(seed("b", 1), 100, RemovalCause.REPLACED)
    assert set(map(id, rec.store.unfinished_pinned())) == {id(g1), id(g2)}


def test_in_order_entries_and_heap_entries_expire_soonest_first(rec: Recorder) -> None:
    """Default-TTL entries queue in a FIFO, others in a heap; expiry merges both."""
    rec.store.install(seed("f1"), 10, RemovalCause.REPLACED, in_order=True)
    rec.store.install(seed("h1"), 5, RemovalCause.REPLACED)
    rec.store.install(seed("f2"), 20, RemovalCause.REPLACED, in_order=True)
    rec.store.install(seed("h2"), 15, RemovalCause.REPLACED)
    rec.store.install(seed("f3"), 30, RemovalCause.REPLACED, in_order=True)
    assert rec.store.pop_expired(20, 100) == 4
    assert [a for a, _ in rec.removed] == ["h1", "f1", "h2", "f2"]
    assert list(rec.store.current) == ["f3"]
    assert rec.store.pop_expired(29, 100) == 0


def test_fifo_is_compacted_when_mostly_stale(rec: Recorder) -> None:
    for version in range(1, 400):
        rec.store.install(seed("a", version), 1_000 + version, RemovalCause.REPLACED, in_order=True)
    assert rec.queued_expiries() < 150
    rec.store.pop_expired(10_000, 1_000)
    assert rec.store.current == {} and rec.queued_expiries() == 0
    assert rec.removed[-1] == ("a", RemovalCause.EXPIRED)
