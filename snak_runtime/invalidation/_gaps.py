"""Loss detection while connected: gaps in snak's ``outbox_id`` sequence (pure, clock passed in).

snak's outbox worker publishes each row of its outbox table with the row's id, an increasing
Postgres sequence. Ids arrive with gaps and out of order in normal operation (rows are
requeued, several workers publish concurrently), and some never arrive at all (a rolled-back
transaction consumes an id; a publish lost between the worker and Redis). So a gap is a hint,
not proof: an id below the highest seen is *missing*, and only once it has stayed missing
beyond the tolerance (``tolerance_messages`` later messages, or ``tolerance_s`` seconds,
whichever comes first) is it given up as lost and a reconciliation requested.

No storm: at most one reconciliation per ``tolerance_s`` window (a loss noticed inside the
window waits for its end: one reconciliation then covers every loss meanwhile); a jump larger
than ``max_jump`` either way (a bogus id near 2**63, a sequence reset) resets tracking and is
counted, never chased; memory is a bounded list of missing *ranges* (a jump costs one range,
not one entry per id), the oldest given up first when it is full.

Ranges are kept sorted by id, and since every new range lies above all the others and a split
keeps its pieces' ages, sorted by id is also oldest first: checking the tolerance looks at the
head only.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from typing import Final, final

DEFAULT_TOLERANCE_MESSAGES: Final = 64
DEFAULT_TOLERANCE_MS: Final = 2_000
MAX_TOLERANCE_MESSAGES: Final = 1_000_000
MAX_TOLERANCE_MS: Final = 3_600_000
MAX_JUMP: Final = 100_000
"""A jump of more ids than this (forward or back) is a reset, not a gap of that many ids."""
MAX_RANGES: Final = 1_024
"""Missing ranges tracked at once; past this the oldest is given up (memory stays bounded)."""


@final
@dataclass(slots=True)
class _Range:
    """Missing ids ``low..high`` (inclusive), noticed at ``since``, when ``seen`` messages
    had come before the one that revealed them."""

    low: int
    high: int
    since: float
    seen: int


@final
class GapTracker:
    """Follows one connection's ``outbox_id`` sequence; says when a gap reconciliation is due.

    ``observe(id, now)`` for each message that carries an id, ``poll(now)`` whenever convenient
    (each received message and each idle poll of the receive loop): it gives up what is past
    the tolerance and returns ``True`` when a reconciliation should run now. ``reset()`` on
    every new connection (the resync covers what the outage lost). ``now`` is in seconds on
    any monotonic clock.

    Counters: ``gaps_detected`` ids given up as lost; ``requests`` reconciliations requested
    (``poll`` returned ``True``); ``resets`` jumps past ``max_jump`` that restarted tracking.
    """

    def __init__(
        self,
        *,
        tolerance_messages: int = DEFAULT_TOLERANCE_MESSAGES,
        tolerance_s: float = DEFAULT_TOLERANCE_MS / 1000,
        max_jump: int = MAX_JUMP,
        max_ranges: int = MAX_RANGES,
    ) -> None:
        if tolerance_messages < 1 or not tolerance_s > 0 or max_jump < 1 or max_ranges < 1:
            raise ValueError("gap tolerances and bounds must be positive")
        self._tolerance_messages = tolerance_messages
        self._tolerance_s = tolerance_s
        self._max_jump = max_jump
        self._max_ranges = max_ranges
        self._highest: int | None = None
        self._ranges: list[_Range] = []
        self._seen = 0  # messages with an id observed since the last reset
        self._due = False  # a loss was given up and no reconciliation has covered it yet
        self._last_request: float | None = None
        self.gaps_detected = 0
        self.requests = 0
        self.resets = 0

    @property
    def missing(self) -> int:
        """Ids missing right now (still within the tolerance)."""
        return sum(r.high - r.low + 1 for r in self._ranges)

    def reset(self) -> None:
        """Forget the sequence and any loss not yet reconciled (a new connection, whose resync
        covers them): the next id starts it again."""
        self._forget()
        self._due = False

    def _forget(self) -> None:
        self._highest = None
        self._ranges.clear()
        self._seen = 0

    def observe(self, outbox_id: int, now: float) -> None:
        """One message carried ``outbox_id``."""
        self._seen += 1
        highest = self._highest
        if highest is None:
            self._highest = outbox_id
        elif outbox_id > highest:
            if outbox_id - highest > self._max_jump:
                self._restart(outbox_id)
                return
            if outbox_id > highest + 1:
                # counted from before this message: it is the first of the later ones
                self._ranges.append(_Range(highest + 1, outbox_id - 1, now, self._seen - 1))
                if len(self._ranges) > self._max_ranges:
                    self._give_up(self._ranges.pop(0))
            self._highest = outbox_id
        elif highest - outbox_id > self._max_jump:
            self._restart(outbox_id)  # a sequence reset backwards (a restored database)
        else:
            self._fill(outbox_id)

    def poll(self, now: float) -> bool:
        """Give up what is past the tolerance; ``True``: run a gap reconciliation now."""
        ranges = self._ranges
        while ranges and (
            now - ranges[0].since >= self._tolerance_s
            or self._seen - ranges[0].seen >= self._tolerance_messages
        ):
            self._give_up(ranges.pop(0))
        if not self._due:
            return False
        if self._last_request is not None and now - self._last_request < self._tolerance_s:
            return False  # one per window: this one waits for the window's end
        self._due = False
        self._last_request = now
        self.requests += 1
        return True

    def _fill(self, outbox_id: int) -> None:
        """A late id arrived: take it out of its missing range (a duplicate is a no-op)."""
        ranges = self._ranges
        at = bisect_right(ranges, outbox_id, key=lambda r: r.low) - 1
        if at < 0 or outbox_id > ranges[at].high:
            return  # not missing: a duplicate, or older than tracking
        found = ranges[at]
        if found.low == found.high:
            del ranges[at]
        elif outbox_id == found.low:
            found.low += 1
        elif outbox_id == found.high:
            found.high -= 1
        else:
            ranges.insert(at + 1, _Range(outbox_id + 1, found.high, found.since, found.seen))
            found.high = outbox_id - 1
            if len(ranges) > self._max_ranges:
                self._give_up(ranges.pop(0))

    def _give_up(self, lost: _Range) -> None:
        self.gaps_detected += lost.high - lost.low + 1
        self._due = True

    def _restart(self, outbox_id: int) -> None:
        self.resets += 1
        self._forget()  # a loss already given up still gets its reconciliation
        self._highest = outbox_id
        self._seen = 1
