"""The invalidation wire format (snak's ``agent_cfg_invalidate`` messages) and reconnect backoff.

Pure functions: no Redis, no I/O, no clock, so they are tested without a server or sleeps.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, Final, final

from ._ratelog import prefix, shown

MAX_PAYLOAD_BYTES: Final = 64 * 1024
"""A payload longer than this (in bytes, UTF-8) is dropped before it is decoded."""

MAX_AGENT_ID_CHARS: Final = 255

MAX_DETAIL_CHARS: Final = 120
"""The longest ``Dropped.detail``: what a log line may carry of a rejected payload."""

MAX_CFG_VERSION: Final = 2**63 - 1
"""snak stores versions in a Postgres integer column; anything past a signed 64-bit is not one."""

INVALIDATE_EVENTS: Final = frozenset({"cfg_updated", "cfg_created"})
DELETE_EVENT: Final = "cfg_deleted"

MAX_TIMESTAMP_CHARS: Final = 64
"""A ``processed_at`` longer than this is no ISO-8601 timestamp (and is not parsed)."""

# Optional sign, then a decimal number with optional fraction and exponent; no "_", "nan", "inf".
_NUMERIC = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


class DropReason(StrEnum):
    """Why a message was dropped; the values are the keys of the drop counters."""

    TOO_LARGE = "too_large"
    INVALID_JSON = "invalid_json"
    NOT_OBJECT = "not_object"
    BAD_AGENT_ID = "bad_agent_id"
    AGENT_ID_TOO_LONG = "agent_id_too_long"
    BAD_CFG_VERSION = "bad_cfg_version"
    BAD_EVENT = "bad_event"  # "event" present but not a string (nor null)
    INTERNAL_ERROR = "internal_error"  # handling it raised: a bug, counted instead of fatal


class Action(StrEnum):
    """What a valid message asks of the manager."""

    INVALIDATE = "invalidate"  # manager.on_invalidate(agent_id, cfg_version)
    EVICT = "evict"  # manager.evict(agent_id)


@final
@dataclass(frozen=True, slots=True)
class InvalidationMessage:
    """One valid message: the agent, its version, the raw event and the action it maps to.

    ``unknown_event`` is true when ``event`` was a string snak does not send; the action is
    then ``EVICT`` (the safe side), the subscriber logs a WARNING and ``event`` holds at most
    the first 80 characters of it.

    ``outbox_id`` (snak's outbox row id, for loss detection) and ``processed_at`` (when snak's
    outbox worker processed the row, as seconds since the epoch, for the propagation lag) are
    ``None`` when absent, ``null`` or malformed; ``bad_outbox_id`` / ``bad_processed_at`` say
    it was malformed (counted; the invalidation itself applies all the same).
    """

    agent_id: str
    cfg_version: int
    action: Action
    event: str | None = None
    unknown_event: bool = False
    outbox_id: int | None = None
    processed_at: float | None = None
    bad_outbox_id: bool = False
    bad_processed_at: bool = False


@final
@dataclass(frozen=True, slots=True)
class Dropped:
    """A message that was not applied, with the reason (a counter key) and a detail for the log."""

    reason: DropReason
    detail: str


def parse_message(data: bytes | str) -> InvalidationMessage | Dropped:
    """Parse one pub/sub payload as snak publishes it: ``{"agent_id": ..., "cfg_version": ...}``.

    Never raises, for any bytes, any text and any JSON value in them (a property test holds it).
    ``cfg_version`` is a JSON integer, a numeric string (``"12"``), or an integral number
    written with a fraction or exponent (``12.0``, ``"1.2e1"``): JavaScript publishers do not
    tell 12 from 12.0. Booleans, ``null``, fractions (``12.5``), NaN/Infinity, negative values
    and values past 2**63-1 are dropped. ``event`` must be a string or ``null``: anything else
    (``{}``, ``[1]``, ``7``) is dropped as ``bad_event``. ``outbox_id`` (the rules of
    ``cfg_version``) and ``processed_at`` (an ISO-8601 timestamp; without a UTC offset it is
    read as UTC) are optional: a malformed one is ignored and flagged, never a reason to drop
    the message. Other fields are ignored. Details never carry more than a short prefix of the
    input.
    """
    try:
        parsed = _parse(data)
    except Exception as exc:  # pragma: no cover - a bug; the property test looks for one
        return Dropped(DropReason.INTERNAL_ERROR, f"parser error {type(exc).__name__}")
    if isinstance(parsed, Dropped) and len(parsed.detail) > MAX_DETAIL_CHARS:
        # two shown values side by side can pass the bound of one: the detail as a whole is cut
        return Dropped(parsed.reason, prefix(parsed.detail, MAX_DETAIL_CHARS))
    return parsed


def _parse(data: bytes | str) -> InvalidationMessage | Dropped:
    if isinstance(data, bytearray | memoryview):
        data = bytes(data[: MAX_PAYLOAD_BYTES + 1])
    if not isinstance(data, bytes | str):
        return Dropped(DropReason.INVALID_JSON, f"a {type(data).__name__}, not bytes or text")
    if _byte_len(data) > MAX_PAYLOAD_BYTES:
        return Dropped(DropReason.TOO_LARGE, f"payload over {MAX_PAYLOAD_BYTES} bytes")
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        # parse_constant rejects NaN/Infinity literals, which JSON does not have.
        obj = json.loads(text, parse_constant=_reject_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        return Dropped(DropReason.INVALID_JSON, _short(str(exc)))
    if not isinstance(obj, dict):
        return Dropped(DropReason.NOT_OBJECT, f"a JSON {type(obj).__name__}, not an object")

    agent_id = obj.get("agent_id")
    if not isinstance(agent_id, str) or not agent_id.strip():
        return Dropped(DropReason.BAD_AGENT_ID, f"agent_id={shown(agent_id)}")
    if len(agent_id) > MAX_AGENT_ID_CHARS:
        return Dropped(
            DropReason.AGENT_ID_TOO_LONG, f"{len(agent_id)} characters > {MAX_AGENT_ID_CHARS}"
        )
    version = parse_cfg_version(obj.get("cfg_version"))
    if version is None:
        raw = shown(obj.get("cfg_version", "<missing>"))
        return Dropped(DropReason.BAD_CFG_VERSION, f"agent_id={shown(agent_id)} cfg_version={raw}")

    event = obj.get("event")
    if event is not None and not isinstance(event, str):
        # departure: snak sends string events only; a non-string one is no event we know of,
        # and not a hashable set member either (it used to raise here).
        return Dropped(DropReason.BAD_EVENT, f"agent_id={shown(agent_id)} event={shown(event)}")
    # departure: the original ignored both; they feed loss detection and the propagation lag.
    raw_id, raw_at = obj.get("outbox_id"), obj.get("processed_at")
    outbox_id = None if raw_id is None else parse_cfg_version(raw_id)
    processed_at = None if raw_at is None else parse_timestamp(raw_at)
    if event is None or event in INVALIDATE_EVENTS:
        action, shown_event, unknown = Action.INVALIDATE, event, False
    elif event == DELETE_EVENT:
        action, shown_event, unknown = Action.EVICT, event, False
    else:
        action, shown_event, unknown = Action.EVICT, prefix(event), True
    return InvalidationMessage(
        agent_id,
        version,
        action,
        shown_event,
        unknown_event=unknown,
        outbox_id=outbox_id,
        processed_at=processed_at,
        bad_outbox_id=raw_id is not None and outbox_id is None,
        bad_processed_at=raw_at is not None and processed_at is None,
    )


def parse_timestamp(value: Any) -> float | None:
    """Seconds since the epoch from an ISO-8601 text (``2024-05-01T12:00:00.123Z``), else
    ``None``. Without a UTC offset it is read as UTC (snak's worker writes ``toISOString()``,
    always UTC). Numbers are not timestamps here: snak never sends one."""
    if not isinstance(value, str) or len(value) > MAX_TIMESTAMP_CHARS:
        return None
    try:
        when = datetime.fromisoformat(value.strip())
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp()
    except (ValueError, TypeError, OverflowError, OSError):
        return None
    return seconds if math.isfinite(seconds) else None


def parse_cfg_version(value: Any) -> int | None:
    """An integral, finite, non-negative version from a JSON value, or ``None`` if it is not one."""
    if isinstance(value, bool):  # bool is an int subclass, but not a version
        return None
    if isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            return None
        number = Decimal(value)
    elif isinstance(value, str):
        text = value.strip()
        if len(text) > 64 or not _NUMERIC.fullmatch(text):
            return None
        try:
            number = Decimal(text)
        except InvalidOperation:  # pragma: no cover - the regex admits only valid literals
            return None
    else:
        return None
    # Compare as Decimal first: int(Decimal("1e999999999")) would build a huge integer.
    if number != number.to_integral_value() or not 0 <= number <= MAX_CFG_VERSION:
        return None
    return int(number)


def encode_message(
    agent_id: str,
    cfg_version: int,
    event: str | None = None,
    *,
    outbox_id: int | None = None,
    processed_at: float | datetime | None = None,
) -> str:
    """The JSON text snak's publisher sends; ``parse_message`` reads it back unchanged.

    ``outbox_id`` (an increasing id per published change: subscribers detect a lost message
    from a gap) and ``processed_at`` (seconds since the epoch or an aware ``datetime``: sent as
    ISO-8601 UTC, for the subscribers' propagation lag) are optional. Raises
    ``ValueError``/``TypeError`` for what ``parse_message`` would drop or ignore, so a bad
    message never leaves the publisher.
    """
    if not isinstance(agent_id, str) or not agent_id.strip():
        raise ValueError(f"agent_id must be a non-blank string, got {agent_id!r}")
    if len(agent_id) > MAX_AGENT_ID_CHARS:
        raise ValueError(f"agent_id is {len(agent_id)} characters, over {MAX_AGENT_ID_CHARS}")
    if isinstance(cfg_version, bool) or not isinstance(cfg_version, int):
        raise TypeError(f"cfg_version must be an integer, got {cfg_version!r}")
    if not 0 <= cfg_version <= MAX_CFG_VERSION:
        raise ValueError(f"cfg_version must be in 0..2**63-1, got {cfg_version}")
    if event is not None and not isinstance(event, str):
        raise TypeError(f"event must be a string or None, got {event!r}")
    payload: dict[str, object] = {"agent_id": agent_id, "cfg_version": cfg_version}
    if event is not None:
        payload["event"] = event
    if outbox_id is not None:
        if isinstance(outbox_id, bool) or not isinstance(outbox_id, int):
            raise TypeError(f"outbox_id must be an integer, got {outbox_id!r}")
        if not 0 <= outbox_id <= MAX_CFG_VERSION:
            raise ValueError(f"outbox_id must be in 0..2**63-1, got {outbox_id}")
        payload["outbox_id"] = outbox_id
    if processed_at is not None:
        payload["processed_at"] = _iso_utc(processed_at)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)


def backoff_ms(
    attempt: int,
    *,
    base_ms: int = 100,
    cap_ms: int = 10_000,
    rng: Callable[[], float] = random.random,
) -> int:
    """Delay before reconnect attempt ``attempt`` (0 for the first retry), in milliseconds.

    Capped exponential with "equal jitter": ``d = min(cap_ms, base_ms * 2**attempt)``, then a
    value in ``[d/2, d]`` drawn with ``rng()`` (a float in ``[0, 1)``). Half the delay is fixed so
    a fleet never retries in a tight loop; the other half spreads the fleet's reconnects.
    """
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"attempt must be an integer >= 0, got {attempt!r}")
    if base_ms <= 0 or cap_ms < base_ms:
        raise ValueError(f"need 0 < base_ms <= cap_ms, got base_ms={base_ms} cap_ms={cap_ms}")
    # 2**attempt past the cap only costs a bigger int; bound the exponent anyway.
    ceiling = min(cap_ms, base_ms << min(attempt, 63))
    jitter = min(max(rng(), 0.0), 1.0)
    return round(ceiling / 2 + jitter * ceiling / 2)


def _iso_utc(when: float | datetime) -> str:
    """``when`` as ``2024-05-01T12:00:00.123456Z``."""
    if isinstance(when, datetime):
        if when.tzinfo is None:
            raise ValueError("processed_at must be an aware datetime (with a UTC offset)")
        moment = when.astimezone(UTC)
    elif isinstance(when, bool) or not isinstance(when, int | float) or not math.isfinite(when):
        raise TypeError(f"processed_at must be seconds since the epoch or a datetime, got {when!r}")
    else:
        moment = datetime.fromtimestamp(when, UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _byte_len(data: bytes | str) -> int:
    """The UTF-8 size of ``data``, or a lower bound already past the limit (never encodes much)."""
    if isinstance(data, bytes) or len(data) > MAX_PAYLOAD_BYTES:
        return len(data)  # a str of n code points is at least n bytes
    return len(data.encode("utf-8", "surrogatepass"))


def _short(text: str, limit: int = 80) -> str:
    return prefix(text, limit)
