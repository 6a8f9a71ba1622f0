"""Limits: guard ceilings, environment settings, and how they resolve."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from typing import Final, Protocol

from ._guards import _MAX_ENTRIES_KEY as _MAX_ENTRIES_KEY
from ._guards import _MAX_PER_USER_KEY, _is_positive_int
from ._guards import _MAX_TTL_KEY as _MAX_TTL_KEY
from ._guards import GuardConfig as GuardConfig
from ._guards import GuardConfigError as GuardConfigError
from ._guards import load_guards as load_guards

logger = logging.getLogger(__name__)

MAX_ENTRIES_VAR = "AGENT_RUNTIME_CACHE_MAX_ENTRIES"
TTL_MS_VAR = "AGENT_RUNTIME_CACHE_TTL_MS"
TTL_SECONDS_VAR = "AGENT_RUNTIME_CACHE_TTL_SECONDS"
GUARDS_PATH_VAR = "GUARDS_CONFIG_PATH"
EVICTION_VAR = "AGENT_RUNTIME_CACHE_EVICTION"
BUILD_TIMEOUT_VAR = "AGENT_RUNTIME_BUILD_TIMEOUT_MS"
DISPOSE_TIMEOUT_VAR = "AGENT_RUNTIME_DISPOSE_TIMEOUT_MS"
SWEEP_INTERVAL_VAR = "AGENT_RUNTIME_SWEEP_INTERVAL_MS"
BACKOFF_CAP_VAR = "AGENT_CFG_BACKOFF_CAP_MS"
REFRESH_AHEAD_VAR = "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS"
STALE_WHILE_REBUILDING_VAR = "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING"
IDLE_TTL_MS_VAR = "AGENT_RUNTIME_CACHE_IDLE_TTL_MS"
TTL_JITTER_VAR = "AGENT_RUNTIME_CACHE_TTL_JITTER"
MAX_ENTRIES_PER_USER_VAR = "AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER"

# Optional sign and ASCII decimal digits, blanks around: int() alone would also take "4_2" and "٤٢".
_INT_RE = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)


class LimitSettings(Protocol):
    """What the resolution reads: raw text per variable (``RuntimeCacheSettings`` fits)."""

    @property
    def max_entries(self) -> str | None: ...
    @property
    def ttl_ms(self) -> str | None: ...
    @property
    def ttl_seconds(self) -> str | None: ...
    @property
    def build_timeout_ms(self) -> str | None: ...
    @property
    def dispose_timeout_ms(self) -> str | None: ...
    @property
    def sweep_interval_ms(self) -> str | None: ...
    @property
    def refresh_ahead_ms(self) -> str | None: ...
    @property
    def stale_while_rebuilding(self) -> str | None: ...
    @property
    def idle_ttl_ms(self) -> str | None: ...
    @property
    def ttl_jitter(self) -> str | None: ...
    @property
    def max_entries_per_user(self) -> str | None: ...


def environment_value(name: str) -> str | None:
    """One variable as the settings read it: unset and empty are both None."""
    return os.environ.get(name) or None


@dataclass(frozen=True, slots=True)
class _Environment:
    """The variables read straight from ``os.environ``: what a manager built without settings
    uses, so that it never needs pydantic-settings (``RuntimeCacheSettings`` reads the same)."""

    max_entries: str | None
    ttl_ms: str | None
    ttl_seconds: str | None
    build_timeout_ms: str | None
    dispose_timeout_ms: str | None
    sweep_interval_ms: str | None
    refresh_ahead_ms: str | None
    stale_while_rebuilding: str | None
    idle_ttl_ms: str | None
    ttl_jitter: str | None
    max_entries_per_user: str | None

    @classmethod
    def read(cls) -> _Environment:
        return cls(
            *(
                environment_value(name)
                for name in (
                    MAX_ENTRIES_VAR,
                    TTL_MS_VAR,
                    TTL_SECONDS_VAR,
                    BUILD_TIMEOUT_VAR,
                    DISPOSE_TIMEOUT_VAR,
                    SWEEP_INTERVAL_VAR,
                    REFRESH_AHEAD_VAR,
                    STALE_WHILE_REBUILDING_VAR,
                    IDLE_TTL_MS_VAR,
                    TTL_JITTER_VAR,
                    MAX_ENTRIES_PER_USER_VAR,
                )
            )
        )


@dataclass(frozen=True, slots=True)
class MsSetting:
    """A millisecond setting: its keyword, variable, default, and the built-in guard over it."""

    keyword: str
    variable: str
    default: int
    guard: int


BUILD_TIMEOUT: Final = MsSetting("build_timeout_ms", BUILD_TIMEOUT_VAR, 30_000, 600_000)
DISPOSE_TIMEOUT: Final = MsSetting("dispose_timeout_ms", DISPOSE_TIMEOUT_VAR, 10_000, 600_000)
SWEEP_INTERVAL: Final = MsSetting("sweep_interval_ms", SWEEP_INTERVAL_VAR, 1_000, 60_000)
BACKOFF_CAP: Final = MsSetting("backoff_cap_ms", BACKOFF_CAP_VAR, 5_000, 300_000)
MS_SETTINGS: Final = (BUILD_TIMEOUT, DISPOSE_TIMEOUT, SWEEP_INTERVAL, BACKOFF_CAP)


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits the manager runs with, where each came from, and what was warned about."""

    max_entries: int
    default_ttl_ms: int
    max_entries_source: str
    default_ttl_source: str
    warnings: tuple[str, ...] = ()
    build_timeout_ms: int = BUILD_TIMEOUT.default
    dispose_timeout_ms: int = DISPOSE_TIMEOUT.default
    sweep_interval_ms: int = SWEEP_INTERVAL.default
    build_timeout_source: str = "default"
    dispose_timeout_source: str = "default"
    sweep_interval_source: str = "default"
    refresh_ahead_ms: int = 0  # 0: refresh-ahead off
    refresh_ahead_source: str = "default"
    stale_while_rebuilding: bool = False
    stale_while_rebuilding_source: str = "default"
    idle_ttl_ms: int = 0  # 0: idle expiry off
    idle_ttl_source: str = "default (off)"
    ttl_jitter: float = 0.0
    ttl_jitter_source: str = "default (off)"
    max_entries_per_user: int | None = None  # the per-user quota; None: none
    max_entries_per_user_source: str = "default (no quota)"

    def describe(self) -> str:
        """One line for the start-up log: each effective value and where it came from."""
        return (
            f"max_entries={self.max_entries} ({self.max_entries_source}), "
            f"default_ttl_ms={self.default_ttl_ms} ({self.default_ttl_source}), "
            f"build_timeout_ms={self.build_timeout_ms} ({self.build_timeout_source}), "
            f"dispose_timeout_ms={self.dispose_timeout_ms} ({self.dispose_timeout_source}), "
            f"sweep_interval_ms={self.sweep_interval_ms} ({self.sweep_interval_source}), "
            f"refresh_ahead_ms={self.refresh_ahead_ms} ({self.refresh_ahead_source}), "
            f"stale_while_rebuilding={self.stale_while_rebuilding} "
            f"({self.stale_while_rebuilding_source}), "
            f"idle_ttl_ms={self.idle_ttl_ms} ({self.idle_ttl_source}), "
            f"ttl_jitter={self.ttl_jitter} ({self.ttl_jitter_source}), "
            f"max_entries_per_user={self.max_entries_per_user}"
            f" ({self.max_entries_per_user_source})"
        )


def _guard_label(guards: GuardConfig) -> str:
    if guards.source is not None:
        return f"guard {guards.source}"
    return "guard (defaults)" if guards == GuardConfig() else "guard"


def _warn(collected: list[str], fmt: str, *args: object) -> None:
    logger.warning(fmt, *args)
    collected.append(fmt % args)


def env_int(
    name: str,
    raw: str | None,
    default: int,
    *,
    minimum: int,
    maximum: int | None = None,
    collected: list[str] | None = None,
) -> int:
    """The integer parser of the environment (CONTRACT §2): unset or blank gives ``default``;
    a value that is not an optional sign and ASCII digits, or lies outside ``minimum..maximum``,
    is ignored with a WARNING naming the variable and the value (the Redis variables, which
    fail start-up instead, are read by ``invalidation._redis_config``). Never raises."""
    value = _read_int(name, raw, minimum, [] if collected is None else collected, maximum)
    return default if value is None else value


def _read_int(
    name: str, raw: str | None, minimum: int, collected: list[str], maximum: int | None = None
) -> int | None:
    """The variable's value, or None to fall through (unset, blank, or ignored with a warning)."""
    # departure: the original fell back silently on a bad value; we warn, naming variable and value.
    if raw is None or not raw.strip():
        return None
    match = _INT_RE.fullmatch(raw)
    if match is None:
        _warn(collected, "%s=%r ignored: not an integer", name, raw)
        return None
    try:
        value = int(match.group(1))
    except ValueError:  # more digits than int() accepts
        _warn(collected, "%s=%r ignored: too many digits", name, raw)
        return None
    if value < minimum:
        _warn(collected, "%s=%r ignored: must be >= %d", name, raw, minimum)
        return None
    if maximum is not None and value > maximum:
        _warn(collected, "%s=%r ignored: must be <= %d", name, raw, maximum)
        return None
    return value


def raise_guard_hint(key: str) -> str:
    """How an operator lifts a guard: the message the cap warning and ``config`` print."""
    return f"to raise the guard, set {key} in the guards JSON file named by {GUARDS_PATH_VAR}"


def resolve_ms(
    setting: MsSetting,
    keyword: int | None,
    raw: str | None,
    collected: list[str],
    *,
    minimum: int = 1,
) -> tuple[int, str]:
    """One millisecond setting and its source: keyword > variable > default, guard over all.

    A bad keyword raises ValueError; a bad variable is a WARNING and falls through to the
    default; a value above the guard is capped to it with a WARNING.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < minimum:
            raise ValueError(
                f"{setting.keyword} must be a positive integer"
                + (f" >= {minimum}" if minimum > 1 else "")
                + f", got {keyword!r}"
            )
        value, source = keyword, f"keyword {setting.keyword}={keyword}"
    else:
        parsed = _read_int(setting.variable, raw, minimum, collected)
        if parsed is None:
            value, source = setting.default, "default"
        else:
            value, source = parsed, f"{setting.variable}={parsed}"
    if value > setting.guard:
        _warn(
            collected,
            "%s is above the built-in guard %s <= %d; capped to %d",
            source,
            setting.keyword,
            setting.guard,
            setting.guard,
        )
        value, source = setting.guard, f"{source} capped to guard {setting.guard}"
    return value, source


def resolve_limits(
    guards: GuardConfig,
    settings: LimitSettings | None = None,
    *,
    build_timeout_ms: int | None = None,
    dispose_timeout_ms: int | None = None,
    sweep_interval_ms: int | None = None,
    refresh_ahead_ms: int | None = None,
    stale_while_rebuilding: bool | None = None,
    idle_ttl_ms: int | None = None,
    ttl_jitter: float | None = None,
    max_entries_per_user: int | None = None,
) -> ResolvedLimits:
    """Resolve every limit: keyword > environment (``settings``) > default, capped by a guard.

    ``settings=None`` reads the variables from ``os.environ`` directly. Raises ValueError for
    a bad keyword only; every other problem is a WARNING log, also collected in ``warnings``.
    The result is logged at INFO with where each value came from.
    """
    collected: list[str] = []
    if settings is None:
        settings = _Environment.read()
    label = _guard_label(guards)

    max_entries = _read_int(MAX_ENTRIES_VAR, settings.max_entries, 1, collected)
    if max_entries is None:
        entries, entries_source = guards.max_entries, label
    elif max_entries > guards.max_entries:
        _warn(
            collected,
            "%s=%d is above the guard %s=%d; capped to %d (%s)",
            MAX_ENTRIES_VAR,
            max_entries,
            _MAX_ENTRIES_KEY,
            guards.max_entries,
            guards.max_entries,
            raise_guard_hint(_MAX_ENTRIES_KEY),
        )
        entries = guards.max_entries
        entries_source = f"{MAX_ENTRIES_VAR}={max_entries} capped to guard {guards.max_entries}"
    else:
        entries, entries_source = max_entries, f"{MAX_ENTRIES_VAR}={max_entries}"

    # TTL_MS wins over TTL_SECONDS; a bad TTL_MS falls through to TTL_SECONDS.
    ttl: int | None = None
    given = label
    parsed_ms = _read_int(TTL_MS_VAR, settings.ttl_ms, 0, collected)
    if parsed_ms is not None:
        ttl, given = parsed_ms, f"{TTL_MS_VAR}={parsed_ms}"
    else:
        parsed_s = _read_int(TTL_SECONDS_VAR, settings.ttl_seconds, 0, collected)
        if parsed_s is not None:
            ttl, given = parsed_s * 1000, f"{TTL_SECONDS_VAR}={parsed_s}"
    if ttl is None:
        ttl_ms, ttl_source = guards.max_ttl_ms, label
    elif ttl == 0:
        # departure: the original read 0 as "never expire", escaping the guard ceiling.
        _warn(
            collected,
            "%s would never expire; using the guard %s=%d",
            given,
            _MAX_TTL_KEY,
            guards.max_ttl_ms,
        )
        ttl_ms, ttl_source = guards.max_ttl_ms, f"{given} replaced by guard {guards.max_ttl_ms}"
    elif ttl > guards.max_ttl_ms:
        _warn(
            collected,
            "%s resolved to %d ms, above the guard %s=%d; capped to %d (%s)",
            given,
            ttl,
            _MAX_TTL_KEY,
            guards.max_ttl_ms,
            guards.max_ttl_ms,
            raise_guard_hint(_MAX_TTL_KEY),
        )
        ttl_ms, ttl_source = guards.max_ttl_ms, f"{given} capped to guard {guards.max_ttl_ms}"
    else:
        ttl_ms, ttl_source = ttl, given

    timings = [
        resolve_ms(setting, keyword, raw, collected)
        for setting, keyword, raw in (
            (BUILD_TIMEOUT, build_timeout_ms, settings.build_timeout_ms),
            (DISPOSE_TIMEOUT, dispose_timeout_ms, settings.dispose_timeout_ms),
            (SWEEP_INTERVAL, sweep_interval_ms, settings.sweep_interval_ms),
        )
    ]
    refresh = resolve_refresh_ahead_ms(
        refresh_ahead_ms, settings.refresh_ahead_ms, ttl_ms, collected
    )
    stale = resolve_flag(
        "stale_while_rebuilding",
        STALE_WHILE_REBUILDING_VAR,
        stale_while_rebuilding,
        settings.stale_while_rebuilding,
        collected,
    )
    from ._expiry_options import resolve_idle_ttl_ms, resolve_ttl_jitter  # (imports this)

    idle = resolve_idle_ttl_ms(idle_ttl_ms, settings.idle_ttl_ms, guards, collected)
    jitter = resolve_ttl_jitter(ttl_jitter, settings.ttl_jitter, collected)
    quota, quota_source = resolve_max_entries_per_user(
        max_entries_per_user, settings.max_entries_per_user, guards, collected
    )
    limits = ResolvedLimits(
        max_entries=entries,
        default_ttl_ms=ttl_ms,
        max_entries_source=entries_source,
        default_ttl_source=ttl_source,
        warnings=tuple(collected),
        build_timeout_ms=timings[0][0],
        dispose_timeout_ms=timings[1][0],
        sweep_interval_ms=timings[2][0],
        build_timeout_source=timings[0][1],
        dispose_timeout_source=timings[1][1],
        sweep_interval_source=timings[2][1],
        refresh_ahead_ms=refresh[0],
        refresh_ahead_source=refresh[1],
        stale_while_rebuilding=stale[0],
        stale_while_rebuilding_source=stale[1],
        idle_ttl_ms=idle[0],
        idle_ttl_source=idle[1],
        ttl_jitter=jitter[0],
        ttl_jitter_source=jitter[1],
        max_entries_per_user=quota,
        max_entries_per_user_source=quota_source,
    )
    logger.info("snak_runtime limits: %s", limits.describe())
    return limits


def resolve_max_entries_per_user(
    keyword: int | None, raw: str | None, guards: GuardConfig, collected: list[str]
) -> tuple[int | None, str]:
    """The per-user quota (None: no quota) and where it came from.

    Keyword > ``AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER`` > no quota, then the guard's
    optional ``max_entries_per_user`` caps it with a WARNING; with a guard ceiling, "no
    quota" is capped to the ceiling too. A bad keyword (0, negative, not an integer) raises
    ValueError; a bad variable is ignored with a WARNING naming it, then falls through.
    """
    ceiling = guards.max_entries_per_user
    value: int | None
    if keyword is not None:
        if not _is_positive_int(keyword):
            raise ValueError(f"max_entries_per_user must be a positive integer, got {keyword!r}")
        value, given = keyword, f"keyword max_entries_per_user={keyword}"
    else:
        value = _read_int(MAX_ENTRIES_PER_USER_VAR, raw, 1, collected)
        given = f"{MAX_ENTRIES_PER_USER_VAR}={value}"
    if ceiling is None:
        return value, ("default (no quota)" if value is None else given)
    if value is None:
        return ceiling, _guard_label(guards)
    if value > ceiling:
        _warn(
            collected,
            "%s is above the guard %s=%d; capped to %d (%s)",
            given, _MAX_PER_USER_KEY, ceiling, ceiling, raise_guard_hint(_MAX_PER_USER_KEY),
        )
        return ceiling, f"{given} capped to guard {ceiling}"
    return value, given


def resolve_seed_ttl_ms(ttl_ms: int | None, default_ttl_ms: int, max_ttl_ms: int) -> int:
    """A seed's own TTL, held under the guard so no entry outlives ``max_ttl_ms``.

    None gives the default; <= 0 or above the guard gives the guard. The caller logs
    when the seed's value was replaced.
    """
    if ttl_ms is None:
        return default_ttl_ms
    # departure: the original read <= 0 as "never expire"; no entry may outlive the guard.
    if ttl_ms <= 0 or ttl_ms > max_ttl_ms:
        return max_ttl_ms
    return ttl_ms


def resolve_refresh_ahead_ms(
    keyword: int | None, raw: str | None, default_ttl_ms: int, collected: list[str]
) -> tuple[int, str]:
    """``refresh_ahead_ms`` and its source: keyword > ``AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS``
    > 0 (off).

    The default TTL is its guard: a window as long as an entry's whole life would refresh
    every entry on its first hit. A bad keyword (not an integer, negative, or not below
    ``default_ttl_ms``) raises ValueError; a bad variable (the same rules) is a WARNING naming
    it and its value, then 0.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < 0:
            raise ValueError(f"refresh_ahead_ms must be an integer >= 0, got {keyword!r}")
        if keyword >= default_ttl_ms:
            raise ValueError(
                f"refresh_ahead_ms={keyword} must be below the default TTL ({default_ttl_ms} ms)"
            )
        return keyword, f"keyword refresh_ahead_ms={keyword}"
    parsed = _read_int(REFRESH_AHEAD_VAR, raw, 0, collected, default_ttl_ms - 1)
    if parsed is None:
        return 0, "default"
    return parsed, f"{REFRESH_AHEAD_VAR}={parsed}"


_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


def resolve_flag(
    keyword_name: str,
    variable: str,
    keyword: bool | None,
    raw: str | None,
    collected: list[str],
) -> tuple[bool, str]:
    """A boolean setting and its source: keyword > variable > False. A keyword that is not a
    bool raises ValueError; a variable that is not one of 1/0, true/false, yes/no, on/off (any
    case, blanks around) is a WARNING naming it and its value, then False."""
    if keyword is not None:
        if not isinstance(keyword, bool):
            raise ValueError(f"{keyword_name} must be True or False, got {keyword!r}")
        return keyword, f"keyword {keyword_name}={keyword}"
    if raw is None or not raw.strip():
        return False, "default"
    text = raw.strip().lower()
    if text in _TRUE:
        return True, f"{variable}={raw.strip()}"
    if text in _FALSE:
        return False, f"{variable}={raw.strip()}"
    _warn(collected, "%s=%r ignored: not a boolean (true/false)", variable, raw)
    return False, "default"
