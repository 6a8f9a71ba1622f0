"""Warnings about bad input, at most one line per reason per interval, never a whole payload.

Anyone who can publish on the channel decides how often the subscriber would warn: one line per
bad message is a log flood (100,000 lines for 100,000 messages, 120 MB for 2,000 messages that
each carry a 60 KB event). So each *reason* (a fixed, small set of keys, never an agent id or a
payload) logs its first occurrence at once, then stays quiet for ``interval_s``; the next line
after that says how many were suppressed meanwhile. ``flush()`` reports what is still owed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Final, final

DEFAULT_INTERVAL_S: Final = 60.0
PREFIX_CHARS: Final = 80


def prefix(text: str, limit: int = PREFIX_CHARS) -> str:
    """``text`` cut to ``limit`` characters (with ``...``): what a log line may show of input."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(value: object, limit: int = PREFIX_CHARS) -> str:
    """A short, safe description of an input value for a log line (never its whole repr).

    Strings are cut before ``repr`` (a 60 KB string is never copied whole), big integers are
    described by size, containers by type and length; nothing here can raise.
    """
    try:
        if isinstance(value, str):
            return prefix(repr(value[:limit]), limit)
        if isinstance(value, bool) or value is None or isinstance(value, float):
            return repr(value)
        if isinstance(value, int):
            bits = value.bit_length()
            return repr(value) if bits <= 128 else f"<int of {bits} bits>"
        if isinstance(value, (list, dict, tuple)):
            return f"<{type(value).__name__} of {len(value)}>"
        return f"<{type(value).__name__}>"
    except Exception:  # a hostile __len__ or __repr__: say nothing about it
        return "<unprintable>"


def shown_exc(exc: BaseException) -> str:
    """``TypeName: message`` with the message cut short; never raises (a hostile ``__str__``)."""
    try:
        text = str(exc)
    except Exception:
        text = "<unprintable>"
    name = type(exc).__name__
    return f"{name}: {prefix(text)}" if text else name


@final
class _Slot:
    __slots__ = ("quiet_until", "suppressed")

    def __init__(self, quiet_until: float) -> None:
        self.quiet_until = quiet_until
        self.suppressed = 0


@final
class RateLimitedLog:
    """One line per reason per ``interval_s`` on ``logger``; the rest are counted, then reported.

    ``clock`` returns seconds (``time.monotonic`` by default): tests pass their own, so no test
    sleeps. Reasons must come from a bounded set: the table holds one small slot per reason.
    """

    def __init__(
        self,
        logger: logging.Logger,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not interval_s >= 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s!r}")
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._slots: dict[str, _Slot] = {}
        self.suppressed_total = 0

    def log(self, level: int, reason: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        """Log ``msg % args`` unless ``reason`` logged within the interval; say if it did."""
        kwargs.setdefault("stacklevel", 2)  # the record names our caller, not this module
        now = self._clock()
        slot = self._slots.get(reason)
        if slot is not None and now < slot.quiet_until:
            slot.suppressed += 1
            self.suppressed_total += 1
            return False
        if slot is not None and slot.suppressed:
            msg += " (%d more like this suppressed in the last %.0f s)"
            args = (*args, slot.suppressed, self._interval_s)
        self._slots[reason] = _Slot(now + self._interval_s)
        self._logger.log(level, msg, *args, **kwargs)
        return True

    def warning(self, reason: str, msg: str, *args: Any, **kwargs: Any) -> bool:
        kwargs.setdefault("stacklevel", 3)
        return self.log(logging.WARNING, reason, msg, *args, **kwargs)

    def flush(self) -> None:
        """Report every reason's suppressed count not yet reported (at stop)."""
        for reason, slot in self._slots.items():
            if slot.suppressed:
                self._logger.warning(
                    "%d more warning(s) of kind %r were suppressed", slot.suppressed, reason
                )
                slot.suppressed = 0
