"""Clock providers: MonotonicClock and the FakeClock test helper (CONTRACT §1, §7)."""

from __future__ import annotations

import time

import pytest

from snak_runtime import Clock, MonotonicClock
from snak_runtime.testing import FakeClock


def test_monotonic_clock_is_integer_milliseconds_of_the_monotonic_clock() -> None:
    before = time.monotonic_ns() // 1_000_000
    now = MonotonicClock().now_ms()
    after = time.monotonic_ns() // 1_000_000
    assert type(now) is int
    assert before <= now <= after


def test_monotonic_clock_never_goes_back() -> None:
    clock = MonotonicClock()
    readings = [clock.now_ms() for _ in range(1_000)]
    assert readings == sorted(readings)


@pytest.mark.parametrize("clock", [MonotonicClock(), FakeClock()], ids=["monotonic", "fake"])
def test_clocks_satisfy_the_protocol(clock: object) -> None:
    assert isinstance(clock, Clock)


def test_fake_clock_starts_where_told_and_stands_still() -> None:
    assert FakeClock().now_ms() == 0
    clock = FakeClock(start_ms=1_500)
    assert [clock.now_ms(), clock.now_ms()] == [1_500, 1_500]


def test_fake_clock_advance_and_set() -> None:
    clock = FakeClock()
    clock.advance(10)
    clock.advance(0)
    assert clock.now_ms() == 10
    clock.set(25)
    assert clock.now_ms() == 25
    clock.set(25)
    assert clock.now_ms() == 25


def test_fake_clock_refuses_to_go_back() -> None:
    clock = FakeClock(start_ms=100)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.advance(-1)
    with pytest.raises(ValueError, match="cannot go back"):
        clock.set(99)
    assert clock.now_ms() == 100
