"""Propagation lag: from snak's ``processed_at`` to the moment this process applied the message.

Measured on a wall clock (the publisher's timestamp is wall time on another host), in the
buckets of the manager's duration histograms, so the exporters treat it like one. Clocks of
two hosts disagree: a message can seem to arrive before it was sent. Such a negative delay is
recorded as 0 and counted in ``clamped`` (a steady count says the hosts' clocks drift apart).
"""

from __future__ import annotations

import math
from bisect import bisect_left
from typing import final

from .._stats import DURATION_BUCKETS_MS


@final
class LagHistogram:
    """Delays in milliseconds per ``DURATION_BUCKETS_MS`` bound (+Inf last), and their sum."""

    __slots__ = ("buckets", "clamped", "total_ms")

    def __init__(self) -> None:
        self.buckets = [0] * (len(DURATION_BUCKETS_MS) + 1)
        self.total_ms = 0.0
        self.clamped = 0

    def record(self, processed_at: float, applied_at: float) -> None:
        """One message processed at ``processed_at``, applied at ``applied_at`` (epoch s)."""
        ms = (applied_at - processed_at) * 1000
        if not math.isfinite(ms):
            return  # a wall clock that is not one: nothing to record
        if ms < 0:
            self.clamped += 1
            ms = 0.0
        self.total_ms += ms
        self.buckets[bisect_left(DURATION_BUCKETS_MS, ms)] += 1
