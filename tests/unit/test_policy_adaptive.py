"""The adaptive eviction policy (issue 25): W-TinyLFU's shape with cost-aware values, the
capacity rules, its window moving with the traffic (small for a loop, large for
conversations), and bounded memory of agents it no longer caches."""

from __future__ import annotations

import random

import pytest

from snak_runtime import GuardConfig, RuntimeSeed
from snak_runtime._generation import _Generation
from snak_runtime._policies import make_policy
from snak_runtime._policies._values import MEMORY
from snak_runtime._policies.adaptive import RING, AdaptivePolicy
from snak_runtime.testing import FakeClock
from tests.helpers import MakeManager, MakeSeed, replay_requests

Gen = _Generation[str, object]
LONG_TTL = GuardConfig(max_entries=3, max_ttl_ms=10**9)  # capacity is the only reason to miss


async def _no_rebuild() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not called")


def gen(agent_id: str, user_id: str = "u1") -> Gen:
    return _Generation(RuntimeSeed(agent_id, user_id, 1, agent_id, _no_rebuild), 100)


def policy_of(capacity: int) -> AdaptivePolicy:
    policy = make_policy("adaptive", capacity)
    assert isinstance(policy, AdaptivePolicy)
    return policy


def test_never_the_new_entry_nor_a_pinned_one() -> None:
    policy = policy_of(2)
    a, b, c = gen("a"), gen("b"), gen("c")
    for g in (a, b):
        policy.inserted(g, None)
        policy.touch(g.agent_id)
    a.loose_pins = b.loose_pins = 1
    policy.inserted(c, None)
    assert policy.victim(c) is None  # the others are pinned, c was just installed
    b.loose_pins = 0
    policy.touch("b")
    assert policy.victim(c) is b
    policy.removed(b)
    assert policy.order() == [c]  # a is pinned: not a candidate


async def test_a_frequent_agent_survives_a_scan_of_agents_used_once(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    m = make_manager(eviction="adaptive", guards=LONG_TTL)

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        fake_clock.advance(100)
        return make_seed(agent_id)

    for agent_id in ["hot"] * 4 + [f"batch-{i}" for i in range(10)]:
        async with m.lease(agent_id, build=build):
            pass
    assert "hot" in m
    assert m.stats().misses == 11


def test_an_expensive_agent_outlives_a_cheap_one_used_as_often() -> None:
    policy = policy_of(3)
    dear, cheap = gen("dear"), gen("cheap")
    policy.learn_cost("dear", 3_000)
    policy.learn_cost("cheap", 10)
    for g in (dear, cheap, gen("x"), gen("y")):
        policy.inserted(g, None)
        policy.touch(g.agent_id)
    for _ in range(2):
        victim = policy.victim(None)
        assert victim is not None
        policy.removed(victim)
        assert victim is not dear


def test_quota_victim_is_one_of_the_users_entries_of_least_value() -> None:
    policy = policy_of(8)
    mine = [gen(f"m{i}", "me") for i in range(3)]
    theirs = gen("t", "them")
    for g in [*mine, theirs]:
        policy.inserted(g, None)
        policy.touch(g.agent_id)
    for _ in range(5):  # m0 and m2 are used again; m1 is not
        policy.touch("m0")
        policy.touch("m2")
    assert policy.victim_among(mine, None) is mine[1]
    mine[1].lease_pins = 1
    assert policy.victim_among(mine, None) in (mine[0], mine[2])
    assert policy.victim_among([mine[1]], None) is None  # pinned: none


def test_the_window_shrinks_on_a_loop_a_bit_larger_than_the_cache() -> None:
    """A batch job cycling over 1.1 x capacity agents: a large window makes it LRU (every
    request misses); the tuner moves the window down and main keeps most of the loop."""
    rng = random.Random(7)
    costs = {a: 100.0 * 2 ** rng.gauss(0, 1) for a in range(70)}
    policy = policy_of(64)
    start = policy.parameters["window"]
    order = list(range(70))
    misses = replay_requests(policy, order * 400, costs)
    assert policy.parameters["window"] < start / 2
    assert misses < 0.5 * 70 * 400  # LRU misses every request


def test_the_window_grows_for_concurrent_conversations() -> None:
    """Conversations on fresh agents, more of them at once than the default window holds:
    recency is all there is to learn, and the window grows."""
    rng = random.Random(3)
    active = list(range(200))
    fresh = 200
    requests = []
    for _ in range(40_000):
        slot = rng.randrange(len(active))
        requests.append(active[slot])
        if rng.random() < 1 / 20:
            active[slot] = fresh
            fresh += 1
    policy = policy_of(256)
    start = policy.parameters["window"]
    replay_requests(policy, requests)
    assert policy.parameters["window"] > 2 * start


def test_memory_of_agents_not_cached_is_bounded() -> None:
    policy = policy_of(4)
    replay_requests(policy, list(range(5_000)))  # every one new
    assert len(policy._values.counts) <= (MEMORY + 1) * 4
    assert len(policy._values.costs) <= MEMORY * 4
    assert policy._ring.maxlen == RING * 4 + 64
    assert len(policy._window) + len(policy._main) <= 4
    assert len(policy._heap) <= 2 * len(policy._main) + 64


@pytest.mark.parametrize("capacity", [1, 2, 16])
def test_parameters_stay_in_their_ranges(capacity: int) -> None:
    rng = random.Random(capacity)
    policy = policy_of(capacity)
    replay_requests(policy, [int(rng.paretovariate(1.0)) % 500 for _ in range(6_000)])
    p = policy.parameters
    assert 0 < p["window"] < 1 or capacity == 1
    assert capacity <= p["half_life"] <= 64 * capacity
    assert 0.0 <= p["cost_weight"] <= 1.0
