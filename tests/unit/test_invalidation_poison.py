"""Issue 23, finding 1: no payload makes the parser raise, and no payload empties the cache.

``{"agent_id":"a","cfg_version":1,"event":{}}`` used to raise ``TypeError`` in the parser; the
listener took it for a lost connection, reconnected and resynced, and without a version source
that evicted every cached runtime.
"""

from __future__ import annotations

import asyncio
import json
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from snak_runtime.invalidation import (
    Dropped,
    DropReason,
    InvalidationMessage,
    InvalidationSubscriber,
    _dispatch,
    _subscriber,
    encode_message,
    parse_message,
)
from snak_runtime.invalidation._wire import MAX_DETAIL_CHARS
from tests.helpers import MakeManager, MakeSeed
from tests.unit.invalidation_fakes import FakeBus

URL = "redis://127.0.0.1:1"  # the fake bus stands in for it

# --- the parser: a property over any JSON value and any bytes ---------------------------------

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**300), max_value=10**300)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# Objects that look like messages, so the deeper checks (agent_id, version, event) are reached.
messages = st.fixed_dictionaries(
    {},
    optional={
        "agent_id": st.text(max_size=300) | json_values,
        "cfg_version": st.integers(min_value=-1, max_value=2**64) | json_values,
        "event": st.sampled_from(["cfg_updated", "cfg_deleted", "x" * 70_000]) | json_values,
        "processed_at": json_values,
    },
)


def check(result: InvalidationMessage | Dropped) -> None:
    assert isinstance(result, InvalidationMessage | Dropped)
    if isinstance(result, Dropped):
        assert result.reason is not DropReason.INTERNAL_ERROR, result  # no parser bug caught
        assert len(result.detail) <= MAX_DETAIL_CHARS
    elif result.event is not None:
        assert len(result.event) <= 80  # an unknown event is kept as a short prefix


@settings(max_examples=400)
@given(value=messages | json_values, ascii_only=st.booleans())
def test_parse_never_raises_for_any_json_value(value: object, ascii_only: bool) -> None:
    text = json.dumps(value, ensure_ascii=ascii_only)
    check(parse_message(text))
    check(parse_message(text.encode("utf-8", "surrogatepass")))


@given(st.binary(max_size=2_000))
def test_parse_never_raises_for_any_bytes(data: bytes) -> None:
    check(parse_message(data))
    check(parse_message(b'{"agent_id":"a","cfg_version":1,"event":' + data + b"}"))


@pytest.mark.parametrize("event", ["{}", "[1]", "7", "true", '{"a": [1]}'])
def test_a_non_string_event_is_dropped_as_bad_event(event: str) -> None:
    result = parse_message('{"agent_id":"a","cfg_version":1,"event":' + event + "}")
    assert isinstance(result, Dropped) and result.reason is DropReason.BAD_EVENT


# --- the listener: a poison message is dropped and counted, the cache kept --------------------


async def _received(sub: InvalidationSubscriber, n: int) -> None:
    async with asyncio.timeout(120):  # hang guard only
        while sub.stats().received < n:
            await asyncio.sleep(0.001)
    await sub.drain()


async def test_a_poison_message_is_counted_and_the_cache_keeps_its_entries(
    monkeypatch: pytest.MonkeyPatch, make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    manager = make_manager()
    await manager.shadow_seed(make_seed("a"))
    await manager.shadow_seed(make_seed("b"))
    sub = InvalidationSubscriber(manager, URL, backoff_base_ms=1, backoff_cap_ms=5)
    await sub.start()
    try:
        bus.push(
            '{"agent_id":"a","cfg_version":1,"event":{}}',
            '{"agent_id":"b","cfg_version":1,"event":[1]}',
            encode_message("c", 1),  # not cached: a no-op, but applied
        )
        await _received(sub, 3)
        # Before: TypeError, "unexpected error", reconnect, resync: both entries evicted.
        assert manager.size == 2 and manager.version_of("a") == 1 and manager.version_of("b") == 1
        assert bus.connections == 1 and sub.connected
        st_ = sub.stats()
        assert dict(st_.dropped) == {"bad_event": 2}
        assert (st_.applied, st_.reconnects, st_.resyncs, st_.restarts) == (1, 0, 0, 0)
    finally:
        await sub.stop()


async def test_an_error_handling_one_message_is_counted_never_a_lost_connection(
    monkeypatch: pytest.MonkeyPatch,
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Defence in depth: whatever raises while one payload is handled (a bug of ours) is
    # counted as internal_error and logged; the next payload is handled as usual.
    real_parse = parse_message

    def buggy_parse(data: bytes | str) -> InvalidationMessage | Dropped:
        if data == b"boom":
            raise RuntimeError("a bug in the parser")
        return real_parse(data)

    monkeypatch.setattr(_dispatch, "parse_message", buggy_parse)
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    manager = make_manager()
    await manager.shadow_seed(make_seed("a"))
    sub = InvalidationSubscriber(manager, URL, backoff_base_ms=1, backoff_cap_ms=5)
    await sub.start()
    try:
        with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
            bus.push(b"boom", b"boom", encode_message("c", 1))
            await _received(sub, 3)
        assert manager.size == 1 and bus.connections == 1 and sub.connected
        st_ = sub.stats()
        assert dict(st_.dropped) == {"internal_error": 2}
        assert (st_.applied, st_.reconnects, st_.resyncs) == (1, 0, 0)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and "RuntimeError" in errors[0].getMessage()  # rate-limited
        assert "lost" not in caplog.text
    finally:
        await sub.stop()


async def test_submit_returns_a_dropped_for_a_poison_payload() -> None:
    from tests.unit.invalidation_fakes import RecordingTarget

    target = RecordingTarget()
    sub = InvalidationSubscriber(target, "redis://127.0.0.1:1")
    result = sub.submit('{"agent_id":"a","cfg_version":1,"event":{}}')
    assert isinstance(result, Dropped) and result.reason is DropReason.BAD_EVENT
    await sub.drain()
    assert target.calls == []


def test_a_detail_naming_two_long_values_is_cut_to_the_bound() -> None:
    """Found by the property above: two shown values side by side passed the detail bound."""
    dropped = parse_message(json.dumps({"agent_id": "a" * 200, "cfg_version": "v" * 200}))
    assert isinstance(dropped, Dropped)
    assert dropped.reason is DropReason.BAD_CFG_VERSION
    assert len(dropped.detail) == MAX_DETAIL_CHARS
