"""Issue 23, finding 8: warnings about bad input are rate-limited per reason and short.

100,000 invalid messages used to log 100,000 WARNING lines, and a 60 KB unknown event was
logged whole. The clock is injected: no test sleeps.
"""

from __future__ import annotations

import json
import logging

import pytest

from snak_runtime.invalidation import InvalidationSubscriber
from snak_runtime.invalidation._ratelog import RateLimitedLog, shown
from tests.unit.invalidation_fakes import RecordingTarget

LOGGER = "snak_runtime.invalidation"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_one_line_per_reason_per_interval_then_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    log = RateLimitedLog(logging.getLogger(LOGGER), interval_s=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert log.warning("a", "bad %s", 1)
        assert not any([log.warning("a", "bad %s", n) for n in range(2, 6)])  # suppressed
        assert log.warning("b", "other %s", 1)  # another reason has its own slot
        clock.now += 59.9
        assert not log.warning("a", "bad %s", 6)
        clock.now += 0.1
        assert log.warning("a", "bad %s", 7)
        clock.now += 1
        assert not log.warning("a", "bad %s", 8)
        log.flush()
        log.flush()  # nothing owed any more
    assert lines(caplog) == [
        "bad 1",
        "other 1",
        "bad 7 (5 more like this suppressed in the last 60 s)",
        "1 more warning(s) of kind 'a' were suppressed",
    ]
    assert log.suppressed_total == 6


def test_shown_is_short_and_never_raises() -> None:
    class Hostile:
        def __len__(self) -> int:
            raise RuntimeError("no")

        def __repr__(self) -> str:
            raise RuntimeError("no")

    assert shown("x" * 60_000) == repr("x" * 77)[:77] + "..."
    assert shown(10**1000) == "<int of 3322 bits>"
    assert shown([1] * 10**5) == "<list of 100000>"
    assert shown(Hostile()) == "<Hostile>"
    assert len(shown("é" * 10_000)) <= 80


async def test_100000_invalid_messages_log_one_line_per_reason(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sub = InvalidationSubscriber(RecordingTarget(), "redis://127.0.0.1:1")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for n in range(50_000):
            sub.submit("not json")
            sub.submit(json.dumps({"agent_id": "a", "cfg_version": "v", "n": n}))
    assert dict(sub.stats().dropped) == {"invalid_json": 50_000, "bad_cfg_version": 50_000}
    assert len(lines(caplog)) == 2  # before: 100,000
    await sub.stop()
    assert len(lines(caplog)) == 4  # stop() reports what was suppressed, per reason
    assert "49999 more warning(s)" in lines(caplog)[-1]


async def test_a_60_kb_unknown_event_is_logged_as_a_short_prefix(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = RecordingTarget()
    sub = InvalidationSubscriber(target, "redis://127.0.0.1:1")
    payload = json.dumps({"agent_id": "a", "cfg_version": 1, "event": "e" * 60_000})
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for _ in range(2_000):
            sub.submit(payload)
        await sub.drain()
    logged = lines(caplog)
    assert len(logged) == 1 and len(logged[0]) < 300  # before: 2,000 lines of 60 KB
    assert sub.stats().unknown_events == 2_000 and target.calls == [("evict", "a", None)]
    await sub.stop()
