"""Invalidation without Redis: wire parsing, backoff, settings, and per-agent dispatch."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from snak_runtime.invalidation import (
    MAX_AGENT_ID_CHARS,
    MAX_PAYLOAD_BYTES,
    Action,
    Dropped,
    DropReason,
    InvalidationMessage,
    InvalidationSettings,
    InvalidationSubscriber,
    RedisEndpoint,
    backoff_ms,
    encode_message,
    parse_message,
    publish_invalidation,
    run_invalidation,
)

REDIS_VARS = (
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "AGENT_CFG_INVALIDATE_CHANNEL",
)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in REDIS_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


def msg(**fields: object) -> str:
    return json.dumps(fields)


# --- parse_message: valid -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (msg(agent_id="a", cfg_version=3), InvalidationMessage("a", 3, Action.INVALIDATE)),
        (msg(agent_id="a", cfg_version="12"), InvalidationMessage("a", 12, Action.INVALIDATE)),
        (msg(agent_id="a", cfg_version=" 7 "), InvalidationMessage("a", 7, Action.INVALIDATE)),
        (msg(agent_id="a", cfg_version=12.0), InvalidationMessage("a", 12, Action.INVALIDATE)),
        (msg(agent_id="a", cfg_version="1.2e1"), InvalidationMessage("a", 12, Action.INVALIDATE)),
        (msg(agent_id="a", cfg_version=0), InvalidationMessage("a", 0, Action.INVALIDATE)),
        (
            msg(agent_id="a", cfg_version=2**63 - 1),
            InvalidationMessage("a", 2**63 - 1, Action.INVALIDATE),
        ),
        (
            msg(agent_id="a", cfg_version=4, event="cfg_updated"),
            InvalidationMessage("a", 4, Action.INVALIDATE, "cfg_updated"),
        ),
        (
            msg(agent_id="a", cfg_version=1, event="cfg_created"),
            InvalidationMessage("a", 1, Action.INVALIDATE, "cfg_created"),
        ),
        (
            msg(agent_id="a", cfg_version=4, event=None),
            InvalidationMessage("a", 4, Action.INVALIDATE),
        ),
        (
            msg(agent_id="a", cfg_version=4, event="cfg_deleted"),
            InvalidationMessage("a", 4, Action.EVICT, "cfg_deleted"),
        ),
        (
            msg(agent_id="a", cfg_version=4, event="cfg_renamed"),
            InvalidationMessage("a", 4, Action.EVICT, "cfg_renamed", unknown_event=True),
        ),
        (
            # snak's publisher adds processed_at: read for the propagation lag (issue 26)
            msg(agent_id="a", cfg_version=5, event="cfg_updated", processed_at="2024-01-01T00:00Z"),
            InvalidationMessage(
                "a", 5, Action.INVALIDATE, "cfg_updated", processed_at=1704067200.0
            ),
        ),
        (
            msg(agent_id="x" * MAX_AGENT_ID_CHARS, cfg_version=1),
            InvalidationMessage("x" * MAX_AGENT_ID_CHARS, 1, Action.INVALIDATE),
        ),
        (
            b'{"agent_id":"\xc3\xa9","cfg_version":2}',
            InvalidationMessage("é", 2, Action.INVALIDATE),
        ),
    ],
)
def test_parse_valid(payload: str | bytes, expected: InvalidationMessage) -> None:
    assert parse_message(payload) == expected
    if isinstance(payload, str):
        assert parse_message(payload.encode()) == expected


# --- parse_message: dropped ---------------------------------------------------------------

BAD_PAYLOADS: list[tuple[str | bytes, DropReason]] = [
    ("not json", DropReason.INVALID_JSON),
    ("", DropReason.INVALID_JSON),
    (b"\xff\xfe{}", DropReason.INVALID_JSON),
    ('{"agent_id": "a", "cfg_version": NaN}', DropReason.INVALID_JSON),
    ('{"agent_id": "a", "cfg_version": Infinity}', DropReason.INVALID_JSON),
    ('{"agent_id": "a", "cfg_version": 1', DropReason.INVALID_JSON),
    ("[1, 2]", DropReason.NOT_OBJECT),
    ('"a string"', DropReason.NOT_OBJECT),
    ("42", DropReason.NOT_OBJECT),
    ("null", DropReason.NOT_OBJECT),
    (msg(cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id="", cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id="   ", cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id=None, cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id=17, cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id=["a"], cfg_version=1), DropReason.BAD_AGENT_ID),
    (msg(agent_id="x" * (MAX_AGENT_ID_CHARS + 1), cfg_version=1), DropReason.AGENT_ID_TOO_LONG),
    (msg(agent_id="a"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=None), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=True), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=False), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="abc"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=""), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="1_000"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="NaN"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="inf"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="Infinity"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="1e999999999"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=12.5), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version="12.5"), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=-1), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=2**63), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=1e300), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version=[1]), DropReason.BAD_CFG_VERSION),
    (msg(agent_id="a", cfg_version={"v": 1}), DropReason.BAD_CFG_VERSION),
    ('{"agent_id": "a", "cfg_version": 1e400}', DropReason.BAD_CFG_VERSION),  # parses as inf
    # issue 23: a non-string event is dropped (it used to be an unknown event, or to raise)
    (msg(agent_id="a", cfg_version=4, event=7), DropReason.BAD_EVENT),
    (msg(agent_id="a", cfg_version=1, event={}), DropReason.BAD_EVENT),
    (msg(agent_id="a", cfg_version=1, event=[1]), DropReason.BAD_EVENT),
    (msg(agent_id="a", cfg_version=1, pad="x" * MAX_PAYLOAD_BYTES), DropReason.TOO_LARGE),
    (b"x" * (MAX_PAYLOAD_BYTES + 1), DropReason.TOO_LARGE),
    # 64 KiB in bytes, not characters: 30 000 two-byte characters are 60 000 bytes...
    (msg(agent_id="a", cfg_version=1, pad="é" * 33_000), DropReason.TOO_LARGE),
]


@pytest.mark.parametrize(("payload", "reason"), BAD_PAYLOADS)
def test_parse_dropped(payload: str | bytes, reason: DropReason) -> None:
    result = parse_message(payload)
    assert isinstance(result, Dropped)
    assert result.reason is reason
    assert len(result.detail) <= 120  # details are for one log line, never the payload itself


def test_payload_at_the_limit_is_accepted() -> None:
    base = msg(agent_id="a", cfg_version=1, pad="")
    payload = base.replace('"pad": ""', '"pad": "' + "x" * (MAX_PAYLOAD_BYTES - len(base)) + '"')
    assert len(payload.encode()) == MAX_PAYLOAD_BYTES
    assert parse_message(payload) == InvalidationMessage("a", 1, Action.INVALIDATE)
    assert parse_message(payload + " ") == Dropped(
        DropReason.TOO_LARGE, f"payload over {MAX_PAYLOAD_BYTES} bytes"
    )


def test_deeply_nested_json_is_dropped_not_raised() -> None:
    payload = "[" * 20_000 + "]" * 20_000
    result = parse_message(payload)
    assert isinstance(result, Dropped)
    assert result.reason in {DropReason.INVALID_JSON, DropReason.NOT_OBJECT}


# --- encode_message ----------------------------------------------------------------------


def test_encode_is_snaks_wire_format() -> None:
    assert json.loads(encode_message("a", 3)) == {"agent_id": "a", "cfg_version": 3}
    assert json.loads(encode_message("a", 3, "cfg_deleted")) == {
        "agent_id": "a",
        "cfg_version": 3,
        "event": "cfg_deleted",
    }


@pytest.mark.parametrize(
    ("agent_id", "cfg_version", "event", "error"),
    [
        ("", 1, None, ValueError),
        (" ", 1, None, ValueError),
        ("x" * (MAX_AGENT_ID_CHARS + 1), 1, None, ValueError),
        ("a", True, None, TypeError),
        ("a", 1.0, None, TypeError),
        ("a", "1", None, TypeError),
        ("a", -1, None, ValueError),
        ("a", 2**63, None, ValueError),
        ("a", 1, 5, TypeError),
    ],
)
def test_encode_rejects_what_subscribers_would_drop(
    agent_id: object, cfg_version: object, event: object, error: type[Exception]
) -> None:
    with pytest.raises(error):
        encode_message(agent_id, cfg_version, event)  # type: ignore[arg-type]


@given(
    agent_id=st.text(min_size=1, max_size=MAX_AGENT_ID_CHARS).filter(lambda s: s.strip() != ""),
    cfg_version=st.integers(min_value=0, max_value=2**63 - 1),
    event=st.sampled_from([None, "cfg_updated", "cfg_created", "cfg_deleted"]),
)
def test_encode_parse_round_trip(agent_id: str, cfg_version: int, event: str | None) -> None:
    parsed = parse_message(encode_message(agent_id, cfg_version, event))
    assert isinstance(parsed, InvalidationMessage)
    assert (parsed.agent_id, parsed.cfg_version, parsed.event) == (agent_id, cfg_version, event)
    assert parsed.action is (Action.EVICT if event == "cfg_deleted" else Action.INVALIDATE)


@given(st.one_of(st.binary(max_size=300), st.text(max_size=300)))
def test_parse_never_raises(data: bytes | str) -> None:
    assert isinstance(parse_message(data), InvalidationMessage | Dropped)


# --- backoff ------------------------------------------------------------------------------


def test_backoff_doubles_then_caps() -> None:
    top = [backoff_ms(n, base_ms=100, cap_ms=5_000, rng=lambda: 0.999999) for n in range(10)]
    low = [backoff_ms(n, base_ms=100, cap_ms=5_000, rng=lambda: 0.0) for n in range(10)]
    assert top == [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
    assert low == [50, 100, 200, 400, 800, 1600, 2500, 2500, 2500, 2500]


def test_backoff_huge_attempt_stays_at_cap() -> None:
    assert backoff_ms(10**6, base_ms=100, cap_ms=5_000, rng=lambda: 0.5) == 3750


@given(
    attempt=st.integers(min_value=0, max_value=200),
    base_ms=st.integers(min_value=1, max_value=10_000),
    extra_ms=st.integers(min_value=0, max_value=100_000),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_bounds(attempt: int, base_ms: int, extra_ms: int, r: float) -> None:
    cap_ms = base_ms + extra_ms
    delay = backoff_ms(attempt, base_ms=base_ms, cap_ms=cap_ms, rng=lambda: r)
    ceiling = min(cap_ms, base_ms * 2**attempt)
    assert ceiling / 2 - 1 <= delay <= ceiling


@pytest.mark.parametrize(
    ("attempt", "base_ms", "cap_ms"), [(-1, 100, 1000), (0, 0, 1000), (0, 100, 50), (True, 1, 2)]
)
def test_backoff_rejects_bad_arguments(attempt: int, base_ms: int, cap_ms: int) -> None:
    with pytest.raises(ValueError):
        backoff_ms(attempt, base_ms=base_ms, cap_ms=cap_ms)


# --- settings -----------------------------------------------------------------------------


def test_settings_unconfigured_by_default() -> None:
    s = InvalidationSettings()
    assert not s.configured
    assert s.channel == "agent_cfg_invalidate"


@pytest.mark.parametrize("name", ["REDIS_URL", "REDIS_HOST", "REDIS_PORT", "REDIS_PASSWORD"])
def test_any_redis_variable_configures(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv(name, "redis://127.0.0.1:6380/0" if name == "REDIS_URL" else "6380")
    assert InvalidationSettings().configured


def test_empty_variables_count_as_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REDIS_VARS:
        monkeypatch.setenv(name, "")
    s = InvalidationSettings()
    assert not s.configured
    assert s.channel == "agent_cfg_invalidate"


def test_url_wins_and_is_not_logged_with_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://user:s3cret@127.0.0.1:6390/2")
    monkeypatch.setenv("REDIS_HOST", "127.0.0.2")
    monkeypatch.setenv("AGENT_CFG_INVALIDATE_CHANNEL", "cfg_events")
    s = InvalidationSettings()
    endpoint = s.endpoint()
    assert endpoint.url == "redis://user:s3cret@127.0.0.1:6390/2"
    assert endpoint.describe() == "redis://127.0.0.1:6390/2"
    assert "s3cret" not in repr(s) and "s3cret" not in repr(endpoint)
    assert s.channel == "cfg_events"


def test_host_port_password_db(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv("REDIS_PORT", " 6390 ")
    monkeypatch.setenv("REDIS_PASSWORD", "pw")
    monkeypatch.setenv("REDIS_DB", "3")
    endpoint = InvalidationSettings().endpoint()
    assert endpoint == RedisEndpoint(host="127.0.0.1", port=6390, password="pw", db=3)
    assert endpoint.describe() == "redis://127.0.0.1:6390/3"


# A bad port or db: tests/unit/test_redis_settings_malformed.py (issue 23: a start-up error).


def test_for_url() -> None:
    s = InvalidationSettings.for_url("redis://127.0.0.1:6391", channel="c")
    assert s.configured and s.channel == "c"
    assert s.endpoint().url == "redis://127.0.0.1:6391"


def test_unconfigured_never_imports_redis() -> None:
    code = (
        "import asyncio, sys\n"
        "from snak_runtime.invalidation import InvalidationSettings, run_invalidation\n"
        "async def main():\n"
        "    gen = run_invalidation(object(), InvalidationSettings())\n"
        "    assert await gen.__anext__() is None\n"
        "    await gen.aclose()\n"
        "asyncio.run(main())\n"
        "assert 'redis' not in sys.modules, 'redis was imported'\n"
    )
    env = {"PATH": "", "PYTHONPATH": ":".join(sys.path)}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


# --- dispatch (submit + drain, no Redis) --------------------------------------------------


class FakeManager:
    """Records calls; an agent's calls block while its gate is closed; some agents fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, int | None]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failing: set[str] = set()
        self.evict_all_calls = 0

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        gate = self.gates.get(agent_id)
        if gate is not None:
            await gate.wait()
        self.calls.append(("invalidate", agent_id, cfg_version))
        if agent_id in self.failing:
            raise RuntimeError(f"rebuild of {agent_id} failed")

    async def evict(self, agent_id: str) -> bool:
        self.calls.append(("evict", agent_id, None))
        return True

    async def evict_all(self) -> int:
        self.evict_all_calls += 1
        return 0


def make_subscriber(manager: FakeManager) -> InvalidationSubscriber:
    # Never started: submit() drives the same dispatcher the Redis loop feeds.
    return InvalidationSubscriber(manager, "redis://127.0.0.1:1")


async def test_messages_map_to_manager_calls() -> None:
    m = FakeManager()
    sub = make_subscriber(m)
    sub.submit(encode_message("a", 2))
    sub.submit(encode_message("b", 3, "cfg_created"))
    sub.submit(encode_message("c", 1, "cfg_deleted"))
    sub.submit(encode_message("d", 1, "cfg_updated"))
    await sub.drain()
    assert sorted(m.calls) == [
        ("evict", "c", None),
        ("invalidate", "a", 2),
        ("invalidate", "b", 3),
        ("invalidate", "d", 1),
    ]
    s = sub.stats()
    assert (s.received, s.applied, s.failures, s.dropped_total, s.pending) == (4, 4, 0, 0, 0)


async def test_one_agent_in_order_others_not_blocked() -> None:
    m = FakeManager()
    m.gates["slow"] = asyncio.Event()
    sub = make_subscriber(m)
    sub.submit(encode_message("slow", 1))
    for _ in range(5):
        await asyncio.sleep(0)  # "slow" 1 is running, stuck at its gate
    for v in (2, 3):
        sub.submit(encode_message("slow", v))
    sub.submit(encode_message("fast", 9))
    sub.submit(encode_message("slow", 4, "cfg_deleted"))
    for _ in range(5):
        await asyncio.sleep(0)
    assert m.calls == [("invalidate", "fast", 9)]  # "slow" is stuck, "fast" went through
    # issue 23: behind the running one, 2 and 3 were coalesced into the eviction
    assert (sub.stats().pending, sub.stats().coalesced) == (2, 2)
    m.gates["slow"].set()
    await sub.drain()
    assert [c for c in m.calls if c[1] == "slow"] == [
        ("invalidate", "slow", 1),
        ("evict", "slow", None),
    ]
    await sub.stop()


async def test_message_arriving_while_worker_finishes_is_not_lost() -> None:
    m = FakeManager()
    sub = make_subscriber(m)
    sub.submit(encode_message("a", 1))
    await asyncio.sleep(0)  # worker applied 1 and is about to exit
    sub.submit(encode_message("a", 2))
    await sub.drain()
    assert m.calls == [("invalidate", "a", 1), ("invalidate", "a", 2)]


async def test_failing_rebuild_is_logged_counted_and_loop_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = FakeManager()
    m.failing.add("bad")
    sub = make_subscriber(m)
    with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
        sub.submit(encode_message("bad", 2))
        sub.submit(encode_message("good", 1))
        await sub.drain()  # one at a time: queued together they would coalesce
        sub.submit(encode_message("bad", 3))
        await sub.drain()
    assert ("invalidate", "bad", 3) in m.calls and ("invalidate", "good", 1) in m.calls
    s = sub.stats()
    assert (s.applied, s.failures) == (1, 2)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sum("'bad'" in w and "failed" in w for w in warnings) == 2


async def test_unknown_event_warns_and_evicts(caplog: pytest.LogCaptureFixture) -> None:
    m = FakeManager()
    sub = make_subscriber(m)
    with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
        sub.submit(msg(agent_id="a", cfg_version=3, event="cfg_archived"))
        await sub.drain()
    assert m.calls == [("evict", "a", None)]
    assert sub.stats().unknown_events == 1
    assert any("'a'" in r.getMessage() and "cfg_archived" in r.getMessage() for r in caplog.records)


async def test_every_bad_payload_is_dropped_counted_and_the_next_valid_one_applies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = FakeManager()
    sub = make_subscriber(m)
    expected: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
        for n, (payload, reason) in enumerate(BAD_PAYLOADS):
            dropped = sub.submit(payload)
            assert isinstance(dropped, Dropped) and dropped.reason is reason
            expected[reason.value] = expected.get(reason.value, 0) + 1
            sub.submit(encode_message(f"agent-{n}", n))
            await sub.drain()
            assert m.calls[-1] == ("invalidate", f"agent-{n}", n)
    s = sub.stats()
    assert dict(s.dropped) == expected
    assert s.applied == len(BAD_PAYLOADS)
    assert s.received == 2 * len(BAD_PAYLOADS)
    drop_logs = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(drop_logs) == len(expected)  # issue 23: one line per reason per interval
    assert all(r.levelno == logging.WARNING and len(r.getMessage()) < 300 for r in drop_logs)


async def test_stop_cancels_queued_work() -> None:
    m = FakeManager()
    m.gates["a"] = asyncio.Event()
    sub = make_subscriber(m)
    sub.submit(encode_message("a", 1))
    sub.submit(encode_message("a", 2))
    await asyncio.sleep(0)
    await sub.stop()
    await sub.stop()  # idempotent
    assert m.calls == []
    assert sub.stats().pending == 0


async def test_run_invalidation_unconfigured_yields_none() -> None:
    gen = run_invalidation(FakeManager(), InvalidationSettings())
    assert await gen.__anext__() is None
    with pytest.raises(StopAsyncIteration):
        await gen.__anext__()


# --- issue 9: a missing extra fails loudly; one integer parser for every variable --------------


# Malformed REDIS_PORT/REDIS_DB: tests/unit/test_redis_settings_malformed.py (issue 23 replaced
# the warn-and-fall-back of issue 9 with a start-up error).


class _BlockRedis:
    """A meta-path finder that makes ``import redis`` fail as if the extra were not installed."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "redis" or name.startswith("redis."):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


@pytest.fixture
def without_redis(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(sys.modules):
        if name == "redis" or name.startswith("redis."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [_BlockRedis(), *sys.meta_path])
    yield


async def test_missing_redis_extra_fails_start_loudly(without_redis: None) -> None:
    sub = InvalidationSubscriber(FakeManager(), "redis://127.0.0.1:1")
    with pytest.raises(ImportError, match=r'pip install "snak-runtime\[redis\]"') as info:
        await sub.start()
    assert "REDIS_URL" in str(info.value) or "Redis is configured" in str(info.value)
    assert not sub.connected
    await sub.stop()


async def test_missing_redis_extra_fails_the_container_resource(without_redis: None) -> None:
    gen = run_invalidation(FakeManager(), InvalidationSettings.for_url("redis://127.0.0.1:1"))
    async with asyncio.timeout(5):  # before the fix: 6 s of silence, then a subscriber
        with pytest.raises(ImportError, match=r"snak-runtime\[redis\]"):
            await gen.__anext__()


async def test_missing_redis_extra_fails_publish(without_redis: None) -> None:
    with pytest.raises(ImportError, match=r"snak-runtime\[redis\]"):
        await publish_invalidation("a", 1, redis="redis://127.0.0.1:1")
