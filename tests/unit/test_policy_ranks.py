"""The policy interface's per-user choice (issue 19): ``victim_among`` and ``keep_ranks``."""

from __future__ import annotations

from typing import Any

from snak_runtime import RuntimeSeed
from snak_runtime._generation import _Generation
from snak_runtime._policies import EvictionPolicy, LruPolicy, make_policy
from snak_runtime._policies.lru import RING

Gen = _Generation[str, object]


async def _no_rebuild() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not called")


def gen(agent_id: str, user_id: str = "u1") -> Gen:
    return _Generation(RuntimeSeed(agent_id, user_id, 1, agent_id, _no_rebuild), 100)


class _OrderOnly(EvictionPolicy):
    """A policy that only knows its order: the interface's default ``victim_among``."""

    name = "order-only"

    def __init__(self) -> None:
        super().__init__(8)
        self.gens: list[Any] = []

    def inserted(self, gen: Any, previous: Any) -> None:
        self.gens.append(gen)

    def removed(self, gen: Any) -> None:
        self.gens.remove(gen)

    def idle(self, gen: Any) -> None:
        pass

    def victim(self, keep: Any) -> Any:
        return next((g for g in self.gens if g is not keep and not g.pins), None)

    def order(self) -> list[Any]:
        return [g for g in self.gens if not g.pins]


def test_default_victim_among_follows_order_and_skips_pinned_and_keep() -> None:
    policy = _OrderOnly()
    a, b, c, d = gen("a"), gen("b"), gen("c"), gen("d")
    for g in (a, b, c, d):
        policy.inserted(g, None)
    assert policy.victim_among([d, c, b], None) is b
    b.loose_pins = 1
    assert policy.victim_among([d, c, b], None) is c
    assert policy.victim_among([d, c, b], c) is d
    assert policy.victim_among([b], None) is None
    assert policy.victim_among([], None) is None


def test_lru_ranks_give_the_least_recent_candidate_through_the_release_ring() -> None:
    policy = make_policy("lru", 8)
    a, b, c, other = gen("a"), gen("b"), gen("c"), gen("z", "u2")
    policy.keep_ranks()
    for g in (other, a, b, c):
        policy.inserted(g, None)
    assert policy.victim_among([c, b, a], None) is a
    policy.touch("a")  # the release hot path: a C-level append, applied on the next call
    assert policy.victim_among([c, b, a], None) is b
    policy.touch("b")
    assert policy.victim_among([a, b, c], c) is a
    assert [g.agent_id for g in policy.order()] == ["z", "c", "a", "b"]
    assert policy.victim(None) is other  # the global order is still exact LRU


def test_lru_ranks_without_ranking_fall_back_to_the_order() -> None:
    policy = make_policy("lru", 8)
    a, b = gen("a"), gen("b")
    policy.inserted(a, None)
    policy.inserted(b, None)
    policy.idle(a)
    assert policy.victim_among([a, b], None) is b


def test_lru_keep_ranks_after_installs_ranks_the_existing_order() -> None:
    policy = make_policy("lru", 8)
    a, b = gen("a"), gen("b")
    policy.inserted(a, None)
    policy.inserted(b, None)
    policy.keep_ranks()
    assert policy.victim_among([b, a], None) is a


def test_lru_pinned_entry_dropped_from_the_order_comes_back_at_its_release() -> None:
    policy = make_policy("lru", 8)
    assert isinstance(policy, LruPolicy)
    policy.keep_ranks()
    a, b = gen("a"), gen("b")
    policy.inserted(a, None)
    policy.inserted(b, None)
    a.loose_pins = 1
    assert policy.victim(None) is b  # a dropped from the order while pinned
    a.loose_pins = 0
    policy.touch("a")
    assert [g.agent_id for g in policy.order()] == ["b", "a"]


def test_lru_a_release_the_full_ring_forgot_does_not_strand_a_dropped_entry() -> None:
    policy = make_policy("lru", 1)
    assert isinstance(policy, LruPolicy)
    policy.keep_ranks()
    a, b = gen("a"), gen("b")
    policy.inserted(a, None)
    policy.inserted(b, None)
    a.loose_pins = 1
    b.loose_pins = 1
    assert policy.victim(None) is None  # both dropped while pinned
    a.loose_pins = b.loose_pins = 0
    policy.touch("b")
    policy.touch("a")
    for _ in range(RING + 1024):  # releases of other ids push a's and b's out of the ring
        policy.touch("x")
    # nothing else to evict: both come back, in the order last known (a installed first)
    assert policy.victim(None) is a
    assert [g.agent_id for g in policy.order()] == ["a", "b"]
    assert policy.victim_among([b, a], None) is a


def test_cost_aware_victim_among_takes_the_least_valued_candidate() -> None:
    policy = make_policy("cost-aware", 8)
    hot, cold, pinned = gen("hot"), gen("cold"), gen("pinned")
    for g in (hot, cold, pinned):
        policy.inserted(g, None)
    for _ in range(5):
        policy.touch("hot")  # released often: a higher decayed count
    policy.touch("pinned")
    policy.learn_cost("hot", 100.0)
    policy.learn_cost("cold", 100.0)
    assert policy.victim_among([hot, cold], None) is cold
    assert policy.victim_among([hot, cold], cold) is hot
    pinned.loose_pins = 1
    assert policy.victim_among([pinned], None) is None
