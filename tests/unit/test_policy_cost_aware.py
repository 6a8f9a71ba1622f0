"""The cost-aware eviction policy (issue 13): it keeps expensive and frequently used agents
that LRU would evict, follows recency, gives a never-built agent a neutral cost, keeps the
capacity rules, and bounds what it remembers about agents it no longer caches."""

from __future__ import annotations

import math

import pytest

from snak_runtime import GuardConfig, RuntimeSeed
from snak_runtime._generation import _Generation
from snak_runtime._policies import make_policy
from snak_runtime._policies.cost_aware import MEMORY, CostAwarePolicy
from snak_runtime.testing import FakeClock
from tests.helpers import MakeManager, MakeSeed, Manager

Gen = _Generation[str, object]
LONG_TTL = GuardConfig(max_entries=3, max_ttl_ms=10**9)  # capacity is the only reason to miss


async def _no_rebuild() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not called")


def gen(agent_id: str) -> Gen:
    return _Generation(RuntimeSeed(agent_id, "u1", 1, agent_id, _no_rebuild), 100)


def policy_of(capacity: int) -> CostAwarePolicy:
    policy = make_policy("cost-aware", capacity)
    assert isinstance(policy, CostAwarePolicy)
    return policy


def fill(policy: CostAwarePolicy, gens: list[Gen], capacity: int) -> list[Gen]:
    """Install and release each generation as a lease would (evicting while above
    capacity); return the victims in order."""
    cached: list[Gen] = []
    victims: list[Gen] = []
    for g in gens:
        policy.inserted(g, None)
        cached.append(g)
        while len(cached) > capacity:
            victim = policy.victim(g)
            assert victim is not None and victim is not g
            cached.remove(victim)
            policy.removed(victim)
            victims.append(victim)
        policy.touch(g.agent_id)  # the lease's release
    return victims


async def replay(
    m: Manager, clock: FakeClock, make_seed: MakeSeed, requests: list[str],
    costs: dict[str, int],
) -> None:
    """Sequential leases; each build advances the clock by that agent's cost."""

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        clock.advance(costs.get(agent_id, 100))
        return make_seed(agent_id)

    for agent_id in requests:
        async with m.lease(agent_id, build=build):
            pass


@pytest.mark.parametrize(("eviction", "kept"), [("lru", False), ("cost-aware", True)])
async def test_an_expensive_agent_outlives_cheap_ones_used_as_often(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    eviction: str, kept: bool,
) -> None:
    m = make_manager(eviction=eviction, guards=LONG_TTL)
    others = [f"x{i}" for i in range(8)]
    await replay(m, fake_clock, make_seed, ["dear", *others], {"dear": 3_000})
    assert ("dear" in m) is kept  # each was requested once; "dear" costs 30x a rebuild
    assert m.stats().misses == 9


@pytest.mark.parametrize(("eviction", "kept"), [("lru", False), ("cost-aware", True)])
async def test_a_frequent_agent_survives_a_scan_of_agents_used_once(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
    eviction: str, kept: bool,
) -> None:
    m = make_manager(eviction=eviction, guards=LONG_TTL)
    scan = [f"batch-{i}" for i in range(10)]
    await replay(m, fake_clock, make_seed, ["hot"] * 4 + scan, {})  # all cost the same
    assert ("hot" in m) is kept


async def test_recency_window_keeps_the_agents_of_ongoing_conversations(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock,
) -> None:
    """Two conversations alternate turns while one-off agents pass by: the window grows
    (ARC's rule) until both conversation agents stay cached between their turns."""
    m = make_manager(eviction="cost-aware", guards=GuardConfig(max_entries=4, max_ttl_ms=10**9))
    requests: list[str] = []
    for turn in range(60):
        requests += ["chat-a", f"once-{turn}-a", "chat-b", f"once-{turn}-b"]
    await replay(m, fake_clock, make_seed, requests, {})
    assert ("chat-a" in m, "chat-b" in m) == (True, True)
    # the conversations miss a few times while the window learns, then hit
    assert m.stats().hits >= 100


def test_a_never_built_agent_counts_the_geometric_mean_cost() -> None:
    policy = policy_of(3)
    policy.learn_cost("cheap", 50)
    policy.learn_cost("dear", 800)  # neutral: sqrt(50 x 800) = 200 ms
    cheap, dear, neutral = gen("cheap"), gen("dear"), gen("never-built")
    victims = fill(policy, [cheap, dear, neutral, gen("new-1"), gen("new-2")], 3)
    # each requested once: the never-built agent outlives the cheap one, not the dear one
    assert victims == [cheap, neutral]
    assert policy._values.log_cost("never-built") == pytest.approx(math.log2(200))
    policy.learn_cost("built-at-200", 200)  # the mean stays 200 ms
    values = policy._values
    assert values.log_cost("never-built") == pytest.approx(values.log_cost("built-at-200"))


def test_pinned_entries_and_the_new_entry_are_never_victims() -> None:
    policy = policy_of(3)
    a, b, c, d = gen("a"), gen("b"), gen("c"), gen("d")
    for g in (a, b, c, d):
        policy.inserted(g, None)
    a.lease_pins = b.loose_pins = c.lease_pins = 1
    assert policy.victim(d) is None  # every other entry is pinned
    assert policy.order() == [d]
    b.loose_pins = 0
    policy.touch("b")  # the release hot path: back as a candidate
    assert policy.victim(d) is b
    policy.removed(b)
    a.lease_pins = 0
    policy.idle(a)  # the store's slow path says the same
    victim = policy.victim(None)
    assert victim in (a, d)
    policy.removed(victim)
    c.lease_pins = 0
    policy.touch("c")
    assert set(policy.order()) == {a, c, d} - {victim}


def test_a_release_forgotten_by_the_ring_still_brings_the_entry_back() -> None:
    policy = policy_of(2)
    a, b, c = gen("a"), gen("b"), gen("c")
    policy.inserted(a, None)
    policy.inserted(b, None)
    a.lease_pins = 1
    policy.inserted(c, None)
    assert policy.victim(c) is b  # "a" is set aside while pinned
    policy.removed(b)
    a.lease_pins = 0
    for i in range(10_000):  # its release is pushed out of the ring by later ones
        policy.touch(f"other-{i}")
    policy.touch("c")
    d = gen("d")
    policy.inserted(d, None)
    # back in turn (one entry set aside is checked per victim), and the least used
    assert policy.victim(d) is a


def test_a_new_generation_of_a_cached_agent_keeps_its_place() -> None:
    policy = policy_of(2)
    a, b = gen("a"), gen("b")
    policy.inserted(a, None)
    policy.inserted(b, None)
    a2 = gen("a")
    policy.inserted(a2, a)  # a rebuild or refresh: not a new request
    assert set(policy.order()) == {a2, b}
    c = gen("c")
    policy.inserted(c, None)
    victim = policy.victim(c)
    assert victim in (a2, b) and victim is not a


def test_memory_about_agents_not_cached_is_bounded_by_the_capacity() -> None:
    capacity = 4
    policy = policy_of(capacity)
    gens = [gen(f"agent-{i}") for i in range(20 * MEMORY * capacity)]
    for i, g in enumerate(gens):
        policy.learn_cost(g.agent_id, 10 + i % 500)
    victims = fill(policy, gens, capacity)
    assert len(victims) == len(gens) - capacity
    assert len(policy._values.counts) <= (MEMORY + 1) * capacity
    assert len(policy._values.costs) <= MEMORY * capacity
    assert len(policy._recent_window) <= capacity and len(policy._recent_main) <= capacity
    assert len(policy._heap) <= 2 * capacity + 64
    assert policy._ring.maxlen is not None and policy._ring.maxlen <= 8 * capacity + 64


def test_the_hit_path_calls_no_python_code() -> None:
    """``touch`` runs on every last release: it must be a C-level callable (a Python call
    there costs the hot path 10-30%)."""
    policy = policy_of(8)
    assert type(policy.touch).__name__ == "builtin_function_or_method"
    assert policy.wants_idle
