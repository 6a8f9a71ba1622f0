"""A hill climber over a few parameters, for the adaptive eviction policy.

Caffeine's ``WindowClimber`` (Einziger, Eytan, Friedman and Manes, "Adaptive Software Cache
Management", Middleware 2018) moves the window after each sample of 10 x capacity requests
by a step of 6.25% that decays by 2% a sample. On agent traces (tens of thousands of requests,
caches of up to a few thousand entries) that is too few samples to go from a 1% window to a
90% one, so this climber differs in four ways:

- it moves each parameter on a log scale (the window by its ratio to main, the memory by
  its half-life), so a few samples cross the whole range: a first step doubles or halves;
- it climbs several parameters in turn (one per sample, so the difference between two
  samples is the effect of the one move between them): the adaptive policy's window and
  the memory length of its counts;
- a sample is at least ``capacity`` requests (so that a move has taken effect on a good part
  of the cache) and at least 512 (so that its miss rate is not mostly noise);
- steps follow Rprop's rule instead of a fixed decay: a move whose sample beat the one
  before by half a standard error (of a binomial miss rate) is followed by a longer one in
  the same direction, any other by a shorter one back; a floor keeps it following drifts
  and shifts. A knob that has settled (PROBE_AFTER moves in a row that did not help)
  probes: a jump toward the farther end of its range, kept only when its sample is better
  by PROBE_SURE standard errors, undone otherwise (and the next probe waits twice as long).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import final

GROW = 1.25  # a knob's step after a move that helped, x (to twice its first step)
SHRINK = 0.5  # after a move that did not, x (to its floor)
MIN_SAMPLE = 512  # requests
PROBE_AFTER = 3  # moves of a knob that did not help before it probes
PROBE_PATIENCE = 48  # at most this many after probes that failed
SURE = 0.5  # a move helped if its sample beat the one before by this many standard errors
PROBE_SURE = 2.0  # and a probe if by this many


@final
@dataclass(slots=True)
class Knob:
    """One parameter: its value, range, first and least step, and current step/direction."""

    value: float
    low: float
    high: float
    first_step: float
    least_step: float
    probe: float = 0.0  # the jump tried after PROBE_AFTER moves that did not help (0: none)
    step: float = 0.0
    direction: float = 1.0
    quiet: int = 0  # moves since the last one that helped
    patience: int = PROBE_AFTER  # quiet moves before a probe: doubles after each that failed
    probed: float = 0.0  # the last move was a probe by this much (0: it was not)

    def __post_init__(self) -> None:
        self.step = self.first_step

    def move(self) -> None:
        """One step; or, when the climb has settled, a probe: a jump toward the farther end
        of the range (the plateaus a small step cannot see across, as a window too small
        to hold the conversations under way, where twice the window is no better)."""
        before = self.value
        if self.probe and self.quiet >= self.patience:
            toward = 1.0 if self.high - before > before - self.low else -1.0
            self.value = min(self.high, max(self.low, before + toward * self.probe))
            self.probed = self.value - before
            self.quiet = 0
            return
        self.value = min(self.high, max(self.low, before + self.direction * self.step))

    def judge(self, gain: float) -> None:
        """The sample after this knob's last move beat the one before by ``gain`` standard
        errors. More than SURE: go on with a longer step; else turn back with a shorter one
        (Rprop's rule). A probe that gained more than PROBE_SURE restarts the climb from
        there, any other is undone."""
        better = gain > SURE
        if self.probed:
            if gain > PROBE_SURE:
                self.direction = 1.0 if self.probed > 0 else -1.0
                self.step = self.first_step
                self.patience = PROBE_AFTER
            else:
                self.value -= self.probed
                self.patience = min(PROBE_PATIENCE, 2 * self.patience)
            self.probed = 0.0
            return
        if better:
            self.quiet = 0
            self.step = min(2.0 * self.first_step, self.step * GROW)
        else:
            self.quiet += 1
            self.direction = -self.direction
            self.step = max(self.least_step, self.step * SHRINK)


@final
class Climber:
    """Samples requests and misses; after each sample moves one knob."""

    __slots__ = ("_last", "_moved", "_turn", "knobs", "sample")

    def __init__(self, knobs: list[Knob], capacity: int) -> None:
        self.knobs = knobs
        self.sample = max(MIN_SAMPLE, capacity)
        self._turn = 0
        self._moved: Knob | None = None  # the knob moved before the running sample
        self._last: tuple[float, float] | None = None  # the sample before

    def end_sample(self, requests: int, misses: int) -> bool:
        """A sample ended: judge the last move and move the next knob. True when a knob's
        value changed."""
        if requests <= 0:
            return False
        # installs without a read (shadow_seed, refresh-ahead) can outnumber a sample's reads
        rate = min(misses / requests, 1.0)
        now = (rate, rate * (1.0 - rate) / requests)  # the miss rate and its variance
        before = [knob.value for knob in self.knobs]
        last, moved = self._last, self._moved
        if last is not None and moved is not None:
            noise = math.sqrt(now[1] + last[1])
            moved.judge((last[0] - now[0]) / noise if noise > 0 else 0.0)
        self._last = now
        knob = self.knobs[self._turn % len(self.knobs)]
        self._turn += 1
        knob.move()
        self._moved = knob
        return [knob.value for knob in self.knobs] != before
