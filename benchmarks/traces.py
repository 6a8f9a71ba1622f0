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
