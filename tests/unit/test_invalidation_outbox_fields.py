"""snak's ``outbox_id`` and ``processed_at`` (issue 26): parsed when well formed, ignored and
counted when not, never a reason to drop the invalidation; and the propagation lag they give,
measured on a fake wall clock."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from snak_runtime.invalidation import (
    Action,
    Dropped,
    InvalidationMessage,
    InvalidationSubscriber,
    encode_message,
    parse_message,
)
from snak_runtime.metrics import prometheus
from tests.helpers import MakeManager
from tests.unit.invalidation_fakes import RecordingTarget

URL = "redis://127.0.0.1:1/0"  # never connected to: messages go through submit()
T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC).timestamp()


def msg(**fields: object) -> str:
    return json.dumps({"agent_id": "a", "cfg_version": 3, **fields})


@pytest.mark.parametrize(
    ("fields", "outbox_id", "processed_at"),
    [
        ({"outbox_id": 42, "processed_at": "2024-05-01T12:00:00.000Z"}, 42, T0),
        ({"outbox_id": "42"}, 42, None),  # node-postgres sends a bigint as a string
        ({"outbox_id": 0, "processed_at": "2024-05-01T14:00:00+02:00"}, 0, T0),
        ({"processed_at": "2024-05-01T12:00:00"}, None, T0),  # no offset: read as UTC
        ({"outbox_id": None, "processed_at": None}, None, None),  # null is absent
        ({}, None, None),
    ],
)
def test_well_formed_fields_are_read(
    fields: dict[str, object], outbox_id: int | None, processed_at: float | None
) -> None:
    parsed = parse_message(msg(**fields))
    assert isinstance(parsed, InvalidationMessage)
    assert (parsed.outbox_id, parsed.processed_at) == (outbox_id, processed_at)
    assert not parsed.bad_outbox_id and not parsed.bad_processed_at
    assert (parsed.agent_id, parsed.cfg_version, parsed.action) == ("a", 3, Action.INVALIDATE)


@pytest.mark.parametrize("value", [-1, 1.5, True, "x", 2**63, [1], {}, "1e999"])
def test_a_malformed_outbox_id_is_ignored_not_the_message(value: object) -> None:
    parsed = parse_message(msg(outbox_id=value, event="cfg_deleted"))
    assert isinstance(parsed, InvalidationMessage)
    assert parsed.outbox_id is None and parsed.bad_outbox_id
    assert parsed.action is Action.EVICT


@pytest.mark.parametrize(
    "value", [1714564800, "yesterday", "2024-13-01T00:00:00Z", "", "9" * 100, [], True]
)
def test_a_malformed_processed_at_is_ignored_not_the_message(value: object) -> None:
    parsed = parse_message(msg(processed_at=value))
    assert isinstance(parsed, InvalidationMessage)
    assert parsed.processed_at is None and parsed.bad_processed_at


@given(
    outbox_id=st.none() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30) | st.booleans(),
    processed_at=st.none() | st.text(max_size=70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.integers(),
)
def test_the_optional_fields_never_drop_a_valid_message(
    outbox_id: object, processed_at: object
) -> None:
    parsed = parse_message(msg(outbox_id=outbox_id, processed_at=processed_at))
    assert isinstance(parsed, InvalidationMessage), parsed


def test_encode_sends_both_and_parse_reads_them_back() -> None:
    text = encode_message("a", 3, outbox_id=7, processed_at=T0 + 0.25)
    assert json.loads(text)["processed_at"] == "2024-05-01T12:00:00.250000Z"
    parsed = parse_message(text)
    assert isinstance(parsed, InvalidationMessage)
    assert (parsed.outbox_id, parsed.processed_at) == (7, T0 + 0.25)
    aware = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert parse_message(encode_message("a", 3, processed_at=aware)) == parse_message(
        encode_message("a", 3, processed_at=T0)
    )
    for bad in ({"outbox_id": -1}, {"outbox_id": True}, {"processed_at": "now"},
                {"processed_at": datetime(2024, 5, 1)}, {"processed_at": float("nan")}):
        with pytest.raises((TypeError, ValueError)):
            encode_message("a", 3, **bad)


async def test_malformed_fields_are_counted_and_the_invalidation_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = RecordingTarget()
    sub = InvalidationSubscriber(target, URL)
    for _ in range(3):
        assert not isinstance(sub.submit(msg(outbox_id="x", processed_at=5)), Dropped)
    await sub.drain()
    s = sub.stats()
    assert (s.malformed_outbox_ids, s.malformed_processed_at) == (3, 3)
    assert s.applied + s.coalesced == 3  # all three applied (or merged into the one applied)
    assert target.calls[0] == ("invalidate", "a", 3)
    assert s.dropped_total == 0
    # rate-limited: one line per field in the interval
    assert caplog.text.count("malformed outbox_id") == 1
    assert caplog.text.count("malformed processed_at") == 1


async def test_the_propagation_lag_is_recorded_on_the_wall_clock_and_skew_clamped(
    make_manager: MakeManager,
) -> None:
    now = [T0]
    target = RecordingTarget()
    sub = InvalidationSubscriber(target, URL, wall_clock=lambda: now[0])
    now[0] = T0 + 0.030  # applied 30 ms after processed_at
    sub.submit(encode_message("a", 1, processed_at=T0))
    await sub.drain()
    now[0] = T0 + 3.0
    sub.submit(encode_message("b", 1, processed_at=T0 + 0.5))  # 2.5 s
    await sub.drain()
    sub.submit(encode_message("c", 1, processed_at=T0 + 10))  # "sent" after it arrived: skew
    await sub.drain()
    sub.submit(encode_message("d", 1))  # no processed_at: no lag
    await sub.drain()
    s = sub.stats()
    assert s.lag_count == 3 and s.lag_clamped == 1
    assert s.lag_time_ms == pytest.approx(30 + 2_500)
    # buckets (1, 5, 10, 25, 50, ..., 2500, ...): 0 -> "1 ms", 30 -> "50 ms", 2,500 -> "2.5 s"
    assert (s.lag_buckets[0], s.lag_buckets[4], s.lag_buckets[9]) == (1, 1, 1)

    registry = CollectorRegistry()
    manager = make_manager()
    prometheus.register(manager, registry, subscriber=sub)
    text = generate_latest(registry).decode()
    family = "snak_runtime_invalidation_lag_duration_seconds"
    assert f'{family}_bucket{{cache="default",le="0.05"}} 2.0' in text
    assert f'{family}_count{{cache="default"}} 3.0' in text
    assert 'snak_runtime_invalidation_lag_clamped_total{cache="default"} 1.0' in text
