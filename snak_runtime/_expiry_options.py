"""The expiry options of issue 16, resolved under the settings rule: the idle TTL (idle
expiry) and the TTL jitter (TTLs shortened at random so a batch does not expire at once).

Kept apart from ``_config`` (which calls these from ``resolve_limits``) to keep it readable; it
imports only the guards and the table (no cycle): the caller passes its warning function.
Environment values arrive parsed by their rows (a bad one was dropped, with a warning).
"""

from __future__ import annotations

from collections.abc import Callable

from ._guards import _MAX_TTL_KEY, GuardConfig
from ._options import IDLE_TTL_ROW as _IDLE
from ._options import MAX_TTL_JITTER as MAX_TTL_JITTER
from ._options import TTL_JITTER_ROW as _JITTER

Warn = Callable[..., None]
"""``warn(collected, fmt, *args)``: log a WARNING and collect its text (``_config._warn``)."""



def resolve_idle_ttl_ms(
    keyword: int | None, raw: int | None, guards: GuardConfig, collected: list[str], warn: Warn
) -> tuple[int, str]:
    """Idle expiry and its source: keyword > variable > default (0, off); the guard's
    ``max_ttl_ms`` caps it (an idle time beyond every TTL could never take effect).

    A bad keyword raises ValueError.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < 0:
            raise ValueError(
                f"{_IDLE.keyword} must be a non-negative integer (0: off), got {keyword!r}"
            )
        value, source = keyword, f"keyword {_IDLE.keyword}={keyword}"
    else:
        if raw is None:
            return 0, "default (off)"
        value, source = raw, f"{_IDLE.variable}={raw}"
    if value > guards.max_ttl_ms:
        warn(
            collected,
            "%s is above the guard %s=%d; capped to %d",
            source,
            _MAX_TTL_KEY,
            guards.max_ttl_ms,
            guards.max_ttl_ms,
        )
        return guards.max_ttl_ms, f"{source} capped to guard {guards.max_ttl_ms}"
    return value, source


def resolve_ttl_jitter(keyword: float | None, raw: float | None) -> tuple[float, str]:
    """TTL jitter and its source: keyword > variable > default (0.0, off).

    A fraction from 0 to ``MAX_TTL_JITTER``: outside that, or not a number, a keyword raises
    ValueError.
    """
    if keyword is not None:
        if (
            isinstance(keyword, bool)
            or not isinstance(keyword, int | float)
            or not 0 <= keyword <= MAX_TTL_JITTER
        ):
            raise ValueError(
                f"{_JITTER.keyword} must be a number from 0 to {MAX_TTL_JITTER}, got {keyword!r}"
            )
        return float(keyword), f"keyword {_JITTER.keyword}={keyword}"
    if raw is None:
        return 0.0, "default (off)"
    return raw, f"{_JITTER.variable}={raw}"
