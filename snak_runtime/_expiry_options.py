"""The expiry options of issue 16, resolved under the settings rule: ``idle_ttl_ms`` (idle
expiry) and ``ttl_jitter`` (TTLs shortened at random so a batch does not expire at once).

Kept apart from ``_config`` (which calls these from ``resolve_limits``) to keep it readable.
"""

from __future__ import annotations

import math

from ._config import (
    _MAX_TTL_KEY,
    IDLE_TTL_MS_VAR,
    TTL_JITTER_VAR,
    GuardConfig,
    _read_int,
    _warn,
)

MAX_TTL_JITTER = 0.5
"""The largest ``ttl_jitter``: half the TTL at most, so an entry lives at least half of it."""


def resolve_idle_ttl_ms(
    keyword: int | None, raw: str | None, guards: GuardConfig, collected: list[str]
) -> tuple[int, str]:
    """``idle_ttl_ms`` and its source: keyword > variable > default (0, off); the guard's
    ``max_ttl_ms`` caps it (an idle time beyond every TTL could never take effect).

    A bad keyword raises ValueError; a bad variable is a WARNING and gives the default.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < 0:
            raise ValueError(
                f"idle_ttl_ms must be a non-negative integer (0: off), got {keyword!r}"
            )
        value, source = keyword, f"keyword idle_ttl_ms={keyword}"
    else:
        parsed = _read_int(IDLE_TTL_MS_VAR, raw, 0, collected)
        if parsed is None:
            return 0, "default (off)"
        value, source = parsed, f"{IDLE_TTL_MS_VAR}={parsed}"
    if value > guards.max_ttl_ms:
        _warn(
            collected,
            "%s is above the guard %s=%d; capped to %d",
            source,
            _MAX_TTL_KEY,
            guards.max_ttl_ms,
            guards.max_ttl_ms,
        )
        return guards.max_ttl_ms, f"{source} capped to guard {guards.max_ttl_ms}"
    return value, source


def resolve_ttl_jitter(
    keyword: float | None, raw: str | None, collected: list[str]
) -> tuple[float, str]:
    """``ttl_jitter`` and its source: keyword > variable > default (0.0, off).

    A fraction from 0 to ``MAX_TTL_JITTER``: outside that, or not a number, a keyword raises
    ValueError and a variable is a WARNING naming it and its value, then the default.
    """
    if keyword is not None:
        if (
            isinstance(keyword, bool)
            or not isinstance(keyword, int | float)
            or not 0 <= keyword <= MAX_TTL_JITTER
        ):
            raise ValueError(
                f"ttl_jitter must be a number from 0 to {MAX_TTL_JITTER}, got {keyword!r}"
            )
        return float(keyword), f"keyword ttl_jitter={keyword}"
    if raw is None or not raw.strip():
        return 0.0, "default (off)"
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= MAX_TTL_JITTER:  # NaN fails this too
        _warn(
            collected,
            "%s=%r ignored: must be a number from 0 to %s",
            TTL_JITTER_VAR,
            raw,
            MAX_TTL_JITTER,
        )
        return 0.0, "default (off)"
    return value, f"{TTL_JITTER_VAR}={value}"
