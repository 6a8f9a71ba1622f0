"""The outbox-id gap tracker on its own: pure, driven by an explicit clock (no Redis, no sleep)."""

from __future__ import annotations

import pytest

from snak_runtime.invalidation._gaps import MAX_RANGES, GapTracker


def tracker(messages: int = 4, seconds: float = 2.0, **kw: int) -> GapTracker:
    return GapTracker(tolerance_messages=messages, tolerance_s=seconds, **kw)


def feed(t: GapTracker, ids: list[int], now: float = 0.0) -> int:
    """Observe ``ids`` at ``now``, polling after each; return how many polls asked to reconcile."""
    asked = 0
    for outbox_id in ids:
        t.observe(outbox_id, now)
        asked += t.poll(now)
    return asked


def test_in_order_and_reordered_but_complete_delivery_never_asks() -> None:
    t = tracker(messages=4)
    # pairs swapped, a late id four places behind: every id arrives within the tolerance
    ids = [1, 3, 2, 5, 4, 6, 10, 7, 8, 9, 11, *range(12, 200)]
    assert feed(t, ids) == 0
    assert (t.gaps_detected, t.requests, t.resets, t.missing) == (0, 0, 0, 0)
    assert not t.poll(1_000.0)  # nothing missing: no time runs out either


def test_a_missing_id_is_given_up_after_the_message_tolerance() -> None:
    t = tracker(messages=4, seconds=60.0)
    assert feed(t, [1, 2, 4, 5, 6]) == 0  # 3 missing, passed by 3 messages: within tolerance
    assert t.missing == 1
    assert feed(t, [7]) == 1  # the fourth later message: given up, reconcile now
    assert (t.gaps_detected, t.requests, t.missing) == (1, 1, 0)


def test_a_missing_id_is_given_up_after_the_time_tolerance_even_when_quiet() -> None:
    t = tracker(messages=64, seconds=2.0)
    assert feed(t, [1, 3], now=10.0) == 0
    assert not t.poll(11.9)
    assert t.poll(12.0)  # the receive loop's idle poll: no further message needed
    assert t.gaps_detected == 1


def test_a_late_id_within_the_tolerance_fills_its_gap() -> None:
    t = tracker(messages=4, seconds=2.0)
    feed(t, [1, 5], now=0.0)  # 2, 3, 4 missing: one range
    assert t.missing == 3
    feed(t, [3], now=1.0)  # splits it
    assert t.missing == 2
    feed(t, [2, 4], now=1.5)
    assert t.missing == 0
    assert not t.poll(100.0)
    assert t.gaps_detected == 0


def test_a_gap_that_never_fills_is_given_up_once_and_forgotten() -> None:
    """A rolled-back transaction's id never comes: one reconciliation, then nothing more."""
    t = tracker(messages=4, seconds=2.0)
    feed(t, [1, 3], now=0.0)
    assert t.poll(2.0)
    assert not t.poll(4.0) and not t.poll(100.0)
    feed(t, list(range(4, 100)), now=100.0)  # the sequence goes on without it
    assert (t.gaps_detected, t.requests, t.missing) == (1, 1, 0)
    feed(t, [2], now=101.0)  # arriving after all: a late duplicate, ignored
    assert (t.gaps_detected, t.missing) == (1, 0)


def test_at_most_one_reconciliation_per_window_under_a_flood_of_gaps() -> None:
    t = tracker(messages=2, seconds=2.0)
    asked = feed(t, list(range(0, 20_000, 2)), now=5.0)  # every other id lost, one instant
    assert asked == 1
    assert t.gaps_detected > 9_000
    assert not t.poll(6.9)  # still inside the window: the losses since then wait
    assert t.poll(7.0)  # the window's end: one more covers all of them
    assert not t.poll(7.0) and not t.poll(100.0)
    assert t.requests == 2


def test_a_loss_given_up_inside_the_window_is_reconciled_at_its_end() -> None:
    t = tracker(messages=2, seconds=2.0)
    assert feed(t, [1, 3, 4, 5], now=0.0) == 1
    assert feed(t, [7, 8, 9], now=1.0) == 0  # 6 lost inside the window
    assert t.poll(2.0)


@pytest.mark.parametrize("bogus", [2**63 - 1, 10 + 100_001])
def test_a_huge_jump_resets_tracking_and_is_not_chased(bogus: int) -> None:
    t = tracker(messages=2, seconds=2.0)
    feed(t, [1, 2, 3])
    assert feed(t, [bogus]) == 0
    assert t.resets == 1 and t.missing == 0
    # the real sequence goes on: far below the bogus id, a reset backwards, not a gap either
    assert feed(t, [4, 5, 6]) == 0
    assert t.resets == 2
    assert not t.poll(100.0)
    assert (t.gaps_detected, t.requests) == (0, 0)


def test_a_sequence_reset_backwards_restarts_tracking() -> None:
    t = tracker(messages=2, seconds=2.0)
    feed(t, list(range(5_000_000, 5_000_010)))
    assert feed(t, [1, 2, 3, 4]) == 0  # a restored database: ids start over
    assert t.resets == 1 and (t.gaps_detected, t.missing) == (0, 0)


def test_memory_is_bounded_by_ranges_not_ids() -> None:
    t = tracker(messages=10**6, seconds=3_600.0)
    feed(t, [0, 99_999])  # a jump within the bound: one range of 99,998 ids
    assert t.missing == 99_998
    feed(t, list(range(100_001, 100_001 + 4 * MAX_RANGES, 2)))  # 2,048 one-id gaps
    assert len(t._ranges) == MAX_RANGES  # the oldest were given up to stay within it
    assert t.gaps_detected == 99_998 + MAX_RANGES


def test_reset_forgets_the_sequence_and_pending_losses() -> None:
    """A new connection: its resync covers the old connection's losses."""
    t = tracker(messages=2, seconds=2.0)
    assert feed(t, [1, 3, 4, 5], now=0.0) == 1
    feed(t, [7, 8, 9], now=1.0)
    t.reset()
    assert not t.poll(10.0)
    assert feed(t, [500, 501], now=10.0) == 0  # a fresh start, no gap from 9 to 500
    assert t.resets == 0  # a reconnect is not counted as a jump


def test_bad_tolerances_are_refused() -> None:
    with pytest.raises(ValueError):
        GapTracker(tolerance_messages=0)
    with pytest.raises(ValueError):
        GapTracker(tolerance_s=0)
