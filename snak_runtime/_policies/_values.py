"""What the adaptive policy knows of each agent: a decayed request count and a build cost.

A part with its own state (STYLE §11): the policy asks it for values and tells it of
requests, builds and installs; it never sees the window or main.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from typing import final

MEMORY = 64  # agents remembered (counts, costs), x capacity


@final
class Values:
    """value = log2(decayed count) + weight x log2(cost).

    Counts use forward decay on a clock that advances by ``rate`` (1 / half-life) per
    install of a new agent, kept in log2 form: values never need rescaling and their order
    does not change with time, only with new counts, even when the half-life changes.
    Agents not cached keep their count (bounded: the table keeps the ``MEMORY`` / 2 x
    capacity highest), so a returning agent is recognised. Cost is the agent's last build
    time (bounded memory); an agent never built counts the geometric mean of those seen.
    """

    __slots__ = ("_clock", "_cost_of", "_log_cost_sum", "_memory", "_seen", "costs", "counts",
                 "rate", "weight")

    def __init__(self, capacity: int, weight: float, costs: Values | None = None) -> None:
        """``costs``: another table whose build costs this one values by (the adaptive
        policy's shadows share the cache's: they never build anything)."""
        self.weight = weight
        self.rate = 0.0  # the decay clock's advance per install: 1 / half-life
        self._clock = 0.0
        self._memory = MEMORY * capacity
        self.counts: dict[str, float] = {}  # log2 of the forward-decayed count
        self.costs: OrderedDict[str, float] = OrderedDict()  # log2 ms, most recent last
        self._log_cost_sum = 0.0
        self._seen = 0
        self._cost_of = (costs or self).log_cost

    def value(self, agent_id: str) -> float:
        return self.counts.get(agent_id, -math.inf) + self.weight * self._cost_of(agent_id)

    def copy(self) -> Values:
        """The same counts and clock, its own from now on (costs stay shared)."""
        twin = Values.__new__(Values)
        for name in Values.__slots__:
            setattr(twin, name, getattr(self, name))
        twin.counts = dict(self.counts)
        twin.costs = OrderedDict(self.costs)
        if self._cost_of == self.log_cost:
            twin._cost_of = twin.log_cost
        return twin

    def log_cost(self, agent_id: str) -> float:
        """log2 of the last build time of the agent, or of the geometric mean of all the
        build times seen (a neutral cost) when it was never built."""
        log_cost = self.costs.get(agent_id)
        if log_cost is None:
            return self._log_cost_sum / self._seen if self._seen else 0.0
        return log_cost

    def learn_cost(self, agent_id: str, ms: float) -> None:
        log_ms = math.log2(max(float(ms), 1.0))
        costs = self.costs
        costs[agent_id] = log_ms
        costs.move_to_end(agent_id)
        if len(costs) > self._memory:
            costs.popitem(last=False)
        self._log_cost_sum += log_ms
        self._seen += 1

    def installed(self, cached: Iterable[str], size: int) -> None:
        """A new agent was installed: the decay clock advances; the table of counts is
        trimmed once it holds ``size`` (cached agents) + MEMORY x capacity."""
        self._clock += self.rate
        if len(self.counts) > self._memory + size:
            self._forget(cached)

    def count(self, agent_id: str) -> None:
        """One more request now: count = count + 2^clock, in log2."""
        x = self._clock
        counts = self.counts
        old = counts.get(agent_id)
        if old is None:
            counts[agent_id] = x
        elif old >= x:
            counts[agent_id] = old + math.log2(1.0 + 2.0 ** (x - old))
        else:
            counts[agent_id] = x + math.log2(1.0 + 2.0 ** (old - x))

    def _forget(self, cached: Iterable[str]) -> None:
        """Keep the counts of cached agents and of the best half of the others."""
        counts = self.counts
        kept = {a: counts[a] for a in cached if a in counts}
        others = sorted((c, a) for a, c in counts.items() if a not in kept)
        best = others[len(others) - self._memory // 2:] if self._memory // 2 else []
        kept.update((a, c) for c, a in best)
        self.counts = kept
