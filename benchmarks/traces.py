"""Synthetic agent-request traces for the hit-ratio benchmark (issue 13).

A trace is a list of agent numbers (one request each) plus every agent's build cost in
milliseconds. Costs are lognormal (median 300 ms, sigma 1.0) and independent of popularity:
building an agent means fetching its configuration and opening its LLM client and tool
connections, and an agent with many tools is not more or less popular for it. Popularity
ranks are shuffled, so agent 0 is not the most popular one.

Families (each a function ``(seed, length) -> Trace``):

1. ``zipf-0.9`` / ``zipf-1.1``: the original's defaults, 10,000 agents with Zipf popularity.
2. ``one-hit``: a Zipf(1.0) core of 10,000 agents; 30% of requests are for an agent seen
   once and never again (a trial, a typo, a crawler).
3. ``scans``: the Zipf(1.0) core; every 10,000 requests a batch job (an evaluation suite)
   walks 2,000 cold agents once each, the same suite every time.
4. ``shifting``: the Zipf(1.0) core whose popularity ranking is redrawn every 25,000
   requests (yesterday's popular agents are not today's).
5. ``sessions``: conversations. A conversation picks its agent by Zipf(0.8) popularity and
   lasts a geometric number of turns (mean 6); 32 conversations run at once, interleaved.
   Recency matters here as much as frequency.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

AGENTS = 10_000
COST_MEDIAN_MS = 300.0
COST_SIGMA = 1.0


@dataclass(frozen=True, slots=True)
class Trace:
    """Requests (agent numbers, ``0 <= a < len(costs_ms)``) and each agent's build cost."""

    family: str
    seed: int
    requests: list[int]
    costs_ms: list[int]

    @property
    def agents(self) -> int:
        return len(self.costs_ms)


def _costs(rng: np.random.Generator, n: int) -> list[int]:
    draws = COST_MEDIAN_MS * np.exp(rng.normal(0.0, COST_SIGMA, size=n))
    return [max(1, round(float(c))) for c in draws]


def _zipf(rng: np.random.Generator, n: int, s: float, length: int) -> np.ndarray:
    """``length`` draws of Zipf(s) over ``n`` agents; rank r is a random agent number."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** s
    ranks = rng.choice(n, size=length, p=weights / weights.sum())
    return rng.permutation(n)[ranks]


def zipf_09(seed: int, length: int) -> Trace:
    rng = np.random.default_rng(seed)
    requests = _zipf(rng, AGENTS, 0.9, length)
    return Trace("zipf-0.9", seed, requests.tolist(), _costs(rng, AGENTS))


def zipf_11(seed: int, length: int) -> Trace:
    rng = np.random.default_rng(seed)
    requests = _zipf(rng, AGENTS, 1.1, length)
    return Trace("zipf-1.1", seed, requests.tolist(), _costs(rng, AGENTS))


def one_hit(seed: int, length: int, share: float = 0.3) -> Trace:
    rng = np.random.default_rng(seed)
    core = _zipf(rng, AGENTS, 1.0, length)
    once = rng.random(length) < share
    requests = core.copy()
    fresh = int(once.sum())
    requests[once] = AGENTS + np.arange(fresh)  # each a new agent
    return Trace("one-hit", seed, requests.tolist(), _costs(rng, AGENTS + fresh))


def scans(seed: int, length: int, every: int = 10_000, width: int = 2_000) -> Trace:
    rng = np.random.default_rng(seed)
    core = _zipf(rng, AGENTS, 1.0, length).tolist()
    suite = list(range(AGENTS, AGENTS + width))
    requests: list[int] = []
    for start in range(0, length, every):
        requests.extend(core[start:start + every - width])
        requests.extend(suite)
    return Trace("scans", seed, requests[:length], _costs(rng, AGENTS + width))


def shifting(seed: int, length: int, phase: int = 25_000) -> Trace:
    rng = np.random.default_rng(seed)
    requests: list[int] = []
    for start in range(0, length, phase):
        requests.extend(_zipf(rng, AGENTS, 1.0, min(phase, length - start)).tolist())
    return Trace("shifting", seed, requests, _costs(rng, AGENTS))


def sessions(seed: int, length: int, concurrent: int = 32, mean_turns: float = 6.0) -> Trace:
    rng = np.random.default_rng(seed)
    starts = iter(_zipf(rng, AGENTS, 0.8, length).tolist())  # at most one start per request
    active = [next(starts) for _ in range(concurrent)]
    slots = rng.integers(0, concurrent, size=length)
    ends = rng.random(length) < 1.0 / mean_turns
    requests: list[int] = []
    for slot, end in zip(slots.tolist(), ends.tolist(), strict=True):
        requests.append(active[slot])
        if end:
            active[slot] = next(starts)
    return Trace("sessions", seed, requests, _costs(rng, AGENTS))


FAMILIES: dict[str, Callable[[int, int], Trace]] = {
    "zipf-0.9": zipf_09,
    "zipf-1.1": zipf_11,
    "one-hit": one_hit,
    "scans": scans,
    "shifting": shifting,
    "sessions": sessions,
}


# ------------------------------------------------------------------ issue 25's grid
#
# Families of ``(seed, length, capacity) -> Trace`` (the loop's size depends on the cache's),
# and the three cost models. Held-out variants (other exponents, loop ratios, session
# lengths) are the same functions with other parameters: ``HELD_OUT``.


def zipf(s: float, agents: int = AGENTS) -> Callable[[int, int, int], Trace]:
    def make(seed: int, length: int, capacity: int) -> Trace:
        rng = np.random.default_rng(seed)
        requests = _zipf(rng, agents, s, length)
        return Trace(f"zipf-{s}", seed, requests.tolist(), _costs(rng, agents))

    return make


def conversations(
    mean_turns: float = 20.0, agents: int = 5_000, low: int = 50, high: int = 500,
    phase: int = 10_000,
) -> Callable[[int, int, int], Trace]:
    """Concurrent conversations: each picks its agent by Zipf(0.8) popularity and lasts a
    geometric number of turns (mean ``mean_turns``); between ``low`` and ``high`` run at
    once (drawn log-uniformly every ``phase`` requests), their turns interleaved."""

    def make(seed: int, length: int, capacity: int) -> Trace:
        rng = np.random.default_rng(seed)
        starts = iter(_zipf(rng, agents, 0.8, 2 * length + high).tolist())
        active = [next(starts) for _ in range(high)]
        ends = rng.random(length) < 1.0 / mean_turns
        picks = rng.random(length)
        requests: list[int] = []
        concurrent = low
        for i in range(length):
            if i % phase == 0:
                concurrent = round(math.exp(rng.uniform(math.log(low), math.log(high))))
            slot = int(picks[i] * concurrent)
            requests.append(active[slot])
            if ends[i]:
                active[slot] = next(starts)
        return Trace("conversations", seed, requests, _costs(rng, agents))

    return make


def loop(ratio: float = 1.1) -> Callable[[int, int, int], Trace]:
    """A batch job cycling over ``ratio`` x capacity agents, in the same order every pass."""

    def make(seed: int, length: int, capacity: int) -> Trace:
        rng = np.random.default_rng(seed)
        n = max(2, round(ratio * capacity))
        order = rng.permutation(n).tolist()
        requests = (order * (length // n + 1))[:length]
        return Trace(f"loop-{ratio}", seed, requests, _costs(rng, n))

    return make


def libcachesim_synthetic(dist: str, alpha: float = 1.0, objects: int = AGENTS
                          ) -> Callable[[int, int, int], Trace]:
    """libCacheSim's synthetic reader (``SyntheticReader``): ``dist`` is "zipf" or "uniform"."""

    def make(seed: int, length: int, capacity: int) -> Trace:
        import libcachesim as lcs

        reader = lcs.SyntheticReader(num_of_req=length, num_objects=objects, alpha=alpha,
                                     dist=dist, seed=seed, obj_size=1)
        ids: dict[int, int] = {}
        requests = [ids.setdefault(int(r.obj_id), len(ids)) for r in reader]
        rng = np.random.default_rng(seed)
        return Trace(f"lcs-{dist}", seed, requests, _costs(rng, len(ids)))

    return make


def _keep_capacity(family: Callable[[int, int], Trace]) -> Callable[[int, int, int], Trace]:
    return lambda seed, length, capacity: family(seed, length)


GRID: dict[str, Callable[[int, int, int], Trace]] = {
    "zipf-0.7": zipf(0.7),
    "zipf-0.9": zipf(0.9),
    "zipf-1.1": zipf(1.1),
    "one-hit": _keep_capacity(one_hit),
    "scans": _keep_capacity(scans),
    "shifting": _keep_capacity(shifting),
    "conversations": conversations(),
    "loop-1.1x": loop(1.1),
    "lcs-zipf": libcachesim_synthetic("zipf"),
    "lcs-uniform": libcachesim_synthetic("uniform"),
}
# Same families, parameters the policy was never measured on while it was designed.
HELD_OUT: dict[str, Callable[[int, int, int], Trace]] = {
    "zipf-0.8": zipf(0.8),
    "zipf-1.0": zipf(1.0),
    "shifting-10k": _keep_capacity(lambda seed, length: shifting(seed, length, phase=10_000)),
    "conversations-10": conversations(mean_turns=10.0),
    "conversations-40": conversations(mean_turns=40.0),
    "loop-1.05x": loop(1.05),
    "loop-1.3x": loop(1.3),
}


def cost_model(trace: Trace, model: str) -> list[int]:
    """The trace's costs under ``model``: "lognormal" (independent of popularity, as drawn),
    "cheap-popular" (the same costs, the most requested agents the cheapest) or
    "dear-popular" (the most requested the most expensive)."""
    if model == "lognormal":
        return trace.costs_ms
    counts = np.bincount(np.asarray(trace.requests), minlength=trace.agents)
    by_popularity = np.argsort(-counts, kind="stable")
    ordered = sorted(trace.costs_ms, reverse=model == "dear-popular")
    costs = [0] * trace.agents
    for agent, cost in zip(by_popularity.tolist(), ordered, strict=True):
        costs[agent] = cost
    return costs


COST_MODELS = ("lognormal", "cheap-popular", "dear-popular")
