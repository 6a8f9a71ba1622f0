"""The adaptive policy's tuner (issue 25): its shadow caches follow the policy's own rules,
stay bounded, and move the parameters the way each kind of traffic wants."""

from __future__ import annotations

import random

import pytest

from snak_runtime._policies import make_policy
from snak_runtime._policies._shadows import Shadow
from snak_runtime._policies._tuner import (
    BACKLOG,
    BUDGET,
    EPOCH,
    MINI,
    SHARES,
    Tuner,
    sampled,
)
from snak_runtime._policies._values import MEMORY, Values
from snak_runtime._policies.adaptive import AdaptivePolicy
from tests.helpers import replay_requests


def zipf_requests(rng: random.Random, agents: int, n: int, s: float = 1.0) -> list[int]:
    weights = [1.0 / (rank + 1) ** s for rank in range(agents)]
    return rng.choices(range(agents), weights=weights, k=n)


class _Frozen:
    """A tuner that never moves (the policy then runs the tuner's starting parameters)."""

    def __init__(self, capacity: int, costs: Values) -> None:
        start = Tuner(capacity, costs)
        self.share, self.weight, self.memory = start.share, start.weight, start.memory

    def feed(self, agent_ids: object) -> bool:
        return False


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_shadow_misses_exactly_as_the_policy_with_the_same_parameters(
    monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The shadows judge parameters by simulating the policy: a full-size shadow with the
    policy's parameters must have the policy's misses, request for request."""
    monkeypatch.setattr("snak_runtime._policies.adaptive.Tuner", _Frozen)
    rng = random.Random(seed)
    costs = {a: 10.0 * 2 ** rng.gauss(0, 2) for a in range(400)}
    requests = zipf_requests(rng, 400, 6_000, 0.9)
    requests += list(range(300, 340)) * 20  # a loop, then Zipf again
    requests += zipf_requests(rng, 400, 3_000, 0.9)
    policy = make_policy("adaptive", 32)
    assert isinstance(policy, AdaptivePolicy)
    share, weight, memory = (policy._tuner.share, policy._tuner.weight, policy._tuner.memory)
    misses = replay_requests(policy, requests, costs)
    shadow = Shadow(32, share, memory, Values(32, weight, costs=policy._values))
    paid = 0.0
    for a in requests:
        before = shadow.misses
        shadow.request(f"agent-{a}", costs[a])
        paid += costs[a] if shadow.misses > before else 0.0
    assert shadow.misses == misses
    assert shadow.cost == pytest.approx(paid)


def test_shadows_are_bounded_and_a_large_cache_is_simulated_on_a_sample() -> None:
    capacity = 4 * MINI
    is_sampled = sampled(capacity)
    ids = [f"agent-{i}" for i in range(20_000)]
    share = sum(map(is_sampled, ids)) / len(ids)
    assert share == pytest.approx(MINI / capacity, rel=0.1)
    assert all(sampled(MINI)(agent_id) for agent_id in ids[:1000])  # small: every agent
    tuner = Tuner(capacity, Values(capacity, 0.75))
    tuner.feed(ids)  # every one new
    for shadow in tuner._windows + [s for _, _, s in tuner._alternatives]:
        assert shadow.capacity == MINI
        assert len(shadow.window) + len(shadow.main) <= MINI
        assert len(shadow.values.counts) <= (MEMORY + 1) * MINI
        assert len(shadow._heap) <= 2 * len(shadow.main) + 64


def test_the_weight_of_cost_falls_where_the_popular_agents_are_the_cheap_ones() -> None:
    """Cheap popular agents: keeping expensive rare ones (a high weight) costs more build
    time than it saves; the tuner lowers the weight. Dear popular ones: it keeps it."""
    rng = random.Random(5)
    requests = zipf_requests(rng, 2_000, 40_000, 1.0)
    ranked = sorted(range(2_000), key=requests.count, reverse=True)
    draws = sorted(100.0 * 2 ** rng.gauss(0, 1.5) for _ in range(2_000))
    cheap_popular = dict(zip(ranked, draws, strict=True))
    dear_popular = dict(zip(ranked, reversed(draws), strict=True))
    low, high = make_policy("adaptive", 64), make_policy("adaptive", 64)
    assert isinstance(low, AdaptivePolicy) and isinstance(high, AdaptivePolicy)
    replay_requests(low, requests, cheap_popular)
    replay_requests(high, requests, dear_popular)
    assert low.parameters["cost_weight"] < 0.5
    assert high.parameters["cost_weight"] >= 0.75


def test_a_move_never_trades_many_misses_for_build_time() -> None:
    """Every shadow the tuner chose was, when chosen, within 1% of the fewest misses: on a
    loop where keeping the dear agents would miss far more, it keeps the loop."""
    rng = random.Random(9)
    costs = {a: 100.0 * 2 ** rng.gauss(0, 3) for a in range(70)}
    policy = make_policy("adaptive", 64)
    assert isinstance(policy, AdaptivePolicy)
    misses = replay_requests(policy, list(range(70)) * 300, costs)
    assert misses < 1.3 * (70 - 63) * 300  # Bélády: about 7 a pass
    assert policy.parameters["window"] <= SHARES[1]


def test_an_install_after_many_hits_simulates_a_bounded_number_of_requests() -> None:
    """The ring can hold 8 x capacity releases; an install simulates at most BUDGET of them
    (one install never holds the event loop for long), the next installs the rest, in
    order, up to BACKLOG (beyond, the oldest are forgotten)."""
    assert max(EPOCH, MINI) > BUDGET  # no epoch ends here: the scores are not decayed yet
    tuner = Tuner(MINI, Values(MINI, 0.5))
    shadows = tuner._windows + [s for _, _, s in tuner._alternatives]
    ids = [f"agent-{i}" for i in range(BACKLOG + 100)]  # every one new: a miss in every shadow
    tuner.feed(ids)
    assert all(s.misses == BUDGET for s in shadows)
    first = ids[100:100 + BUDGET]  # the oldest 100 were forgotten
    assert all(set(s.window) | s.main <= set(first) for s in shadows)
    assert len(tuner._backlog) == BACKLOG - BUDGET
    tuner.feed([])  # the next install simulates the next BUDGET
    assert len(tuner._backlog) == BACKLOG - 2 * BUDGET
