"""The adaptive policy's tuner: shadow caches that try other parameters on the same requests.

Three parameters, each from a short ladder: the window's share of the cache (a tiny window
for loops and skewed traffic, nearly the whole cache for conversations), the weight of the
build cost against the request count (less where the popular agents are the cheap ones),
and the half-life of the counts (shorter where popularity shifts).

The tuner runs, on a sample of the agents (every agent for a cache of up to ``MINI``
entries; otherwise those whose id hashes below ``MINI / capacity``: the spatial sampling of
Waldspurger et al., "Cache Modeling and Optimization using Miniature Simulations", USENIX
ATC 2017), one shadow per window share of the ladder at the current weight and half-life,
plus one per neighbouring weight and half-life at the current share. Each shadow's misses
and build milliseconds decay by ``DECAY`` every epoch. At the end of an epoch:

- candidates are the shadows whose misses are within ``SLACK`` of the fewest: build time
  is traded for misses only a little (issue 25 holds misses to 1.10x the best policy's);
- the cache takes the share of the cheapest window shadow that is a candidate, if it is
  ``SWITCH`` cheaper than the current one, or if the current one is no longer a candidate;
- likewise the weight or half-life of the cheapest neighbour, and new neighbours are made
  as warm copies of it (``Shadow.twin``).

Comparing shadows that saw the same requests removes most of the noise that makes a hill
climber on successive samples (Caffeine's) slow to move on traces of this length. Nothing
here runs on a hit: the policy feeds the tuner the ids in its ring of releases, at installs,
and an install simulates at most ``BUDGET`` of them (a few milliseconds); the rest wait for
the next installs.
"""

from __future__ import annotations

import zlib
from collections import deque
from collections.abc import Callable, Iterable
from typing import final

from ._shadows import Shadow
from ._values import Values

SHARES = (0.01, 0.05, 0.25, 0.6, 0.9)  # the window's share of the cache
WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # value = log2(count) + weight x log2(cost)
MEMORIES = (2.0, 8.0, 32.0)  # the counts' half-life, x capacity installs
START = (0.05, 0.5, 32.0)  # W-TinyLFU's window, the middle weight, cost-aware's half-life
MINI = 256  # entries of a shadow at most: larger caches are simulated on a sample
EPOCH = 64  # sampled requests between two decisions, at least (and at least MINI)
DECAY = 0.9  # of the shadows' misses and build time, per epoch
SWITCH = 0.02  # a move must save this share of the build time
SLACK = 0.01  # a candidate misses at most this much more than the shadow that misses least
# Sampled requests simulated per install, at most: an install after a long run of hits must
# not hold the event loop for long (up to 9 shadows x ~3 us each, per request). The rest wait for
# the next installs, up to BACKLOG of them (beyond, the oldest are forgotten).
BUDGET = 128
BACKLOG = 8 * BUDGET
_HASHES = 1 << 16


def _neighbours(ladder: tuple[float, ...], value: float) -> list[float]:
    i = ladder.index(value)
    return [ladder[j] for j in (i - 1, i + 1) if 0 <= j < len(ladder)]


@final
class Tuner:
    """Chooses the share, weight and memory for a cache of ``capacity`` entries whose
    agents' build costs are in ``costs``."""

    __slots__ = ("_alternatives", "_backlog", "_costs", "_epoch", "_sampled", "_threshold",
                 "_windows", "memory", "mini", "share", "weight")

    def __init__(self, capacity: int, costs: Values) -> None:
        self.mini = min(capacity, MINI)
        self._threshold = _threshold(capacity)
        self.share, self.weight, self.memory = START
        self._costs = costs
        self._windows = [Shadow(self.mini, share, self.memory, self._values())
                         for share in SHARES]
        self._alternatives: list[tuple[str, float, Shadow]] = []
        self._make_alternatives()
        self._epoch = max(EPOCH, self.mini)
        self._sampled = 0
        self._backlog: deque[str] = deque(maxlen=BACKLOG)  # sampled, not simulated yet

    def feed(self, agent_ids: Iterable[str]) -> bool:
        """Requests, in order (a release each): the sampled ones join the backlog, of which
        at most ``BUDGET`` are simulated now. True when a parameter changed."""
        backlog, threshold = self._backlog, self._threshold
        if threshold >= _HASHES:
            backlog.extend(agent_ids)
        else:
            crc = zlib.crc32
            backlog.extend(a for a in agent_ids if crc(a.encode()) & (_HASHES - 1) < threshold)
        shadows = self._shadows()
        cost, take = self._costs.log_cost, backlog.popleft
        changed = False
        for _ in range(min(BUDGET, len(backlog))):
            agent_id = take()
            cost_ms = 2.0 ** cost(agent_id)
            for shadow in shadows:
                shadow.request(agent_id, cost_ms)
            self._sampled += 1
            if self._sampled >= self._epoch:
                self._sampled = 0
                if self._decide():
                    changed = True
                    shadows = self._shadows()
        return changed

    # ---------------------------------------------------------------------------- parts

    def _shadows(self) -> list[Shadow]:
        return [*self._windows, *(shadow for _, _, shadow in self._alternatives)]

    def _values(self) -> Values:
        return Values(self.mini, self.weight, costs=self._costs)

    def _make_alternatives(self) -> None:
        """Shadows one step away in weight and in memory, warm copies of the current one."""
        current = self._current()
        self._alternatives = [
            ("weight", w, current.twin(self.share, w, self.memory))
            for w in _neighbours(WEIGHTS, self.weight)
        ] + [
            ("memory", m, current.twin(self.share, self.weight, m))
            for m in _neighbours(MEMORIES, self.memory)
        ]

    def _current(self) -> Shadow:
        return next(s for s in self._windows if s.share == self.share)

    def _decide(self) -> bool:
        """One epoch ended: decay the scores, then move to a cheaper candidate if any."""
        windows, alternatives, everyone = self._windows, self._alternatives, self._shadows()
        for shadow in everyone:
            shadow.cost *= DECAY
            shadow.misses *= DECAY
        current = self._current()
        fewest = min(s.misses for s in everyone)
        bound = fewest * (1.0 + SLACK)

        def better(shadow: Shadow) -> bool:
            return current.misses > bound or shadow.cost < current.cost * (1.0 - SWITCH)

        candidates = [s for s in windows if s.misses <= bound]
        if not candidates:
            candidates = [min(windows, key=lambda s: s.misses)]
        best = min(candidates, key=lambda s: s.cost)
        alternative = min((a for a in alternatives if a[2].misses <= bound),
                          key=lambda a: a[2].cost, default=None)
        if alternative is not None and better(alternative[2]) and (
            alternative[2].cost <= best.cost
        ):
            kind, value, shadow = alternative
            if kind == "weight":
                self.weight = value
            else:
                self.memory = value
            self._windows = [shadow.twin(s.share, self.weight, self.memory) if s is current
                             else s for s in windows]
            for s in self._windows:
                s.retune(s.share, self.weight, self.memory)
            self._make_alternatives()
            return True
        if best is not current and better(best):
            self.share = best.share
            for _, _, shadow in alternatives:
                shadow.retune(self.share, shadow.weight, shadow.memory)
            return True
        return False


def _threshold(capacity: int) -> int:
    """Agent ids whose hash is below this are simulated (all of them at ``_HASHES``)."""
    return _HASHES * min(capacity, MINI) // capacity


def sampled(capacity: int) -> Callable[[str], bool]:
    """Whether the tuner of a cache of ``capacity`` entries simulates ``agent_id`` (tests)."""
    threshold = _threshold(capacity)
    return lambda agent_id: zlib.crc32(agent_id.encode()) & (_HASHES - 1) < threshold
