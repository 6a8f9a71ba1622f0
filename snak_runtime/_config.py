"""Limits: guard ceilings, environment settings, and how they resolve."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Final

from ._expiry_options import resolve_idle_ttl_ms, resolve_ttl_jitter
from ._guards import _MAX_ENTRIES_KEY as _MAX_ENTRIES_KEY
from ._guards import _MAX_PER_USER_KEY, _is_positive_int
from ._guards import _MAX_TTL_KEY as _MAX_TTL_KEY
from ._guards import GuardConfig as GuardConfig
from ._guards import GuardConfigError as GuardConfigError
from ._guards import load_guards as load_guards
from ._options import (
    BY_NAME,
    CACHE_OPTIONS,
    IDLE_TTL_ROW,
    QUOTA_ROW,
    REFRESH_AHEAD_ROW,
    STALE_ROW,
    TTL_JITTER_ROW,
    CacheValues,
    Option,
    Rejected,
    Rejection,
    _source_field,
    environment_text,
    parse_int,
    read_environment,
)
from ._options import ResolvedLimits as ResolvedLimits
from ._options import rejected_environment as rejected_environment

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

LimitSettings = CacheValues
"""What the resolution reads: each cache option's typed value or None (``RuntimeCacheSettings``
fits; the variables it dropped as unparseable are in its ``rejected_environment``)."""


def environment_value(name: str) -> str | None:
    """One variable as the settings read it: unset and empty are both None."""
    return os.environ.get(name) or None


class _Environment(CacheValues):
    """The variables read straight from ``os.environ`` by the table's parsers: what a manager
    built without settings uses, so that it never needs pydantic-settings."""

    def __init__(
        self, values: dict[str, object], rejected: tuple[Rejection, ...], texts: dict[str, str]
    ) -> None:
        for name, value in values.items():
            setattr(self, name, value)
        self.rejected_environment = rejected
        self.environment_texts = texts

    @classmethod
    def read(cls) -> _Environment:
        return cls(*read_environment(CACHE_OPTIONS))


@dataclass(frozen=True, slots=True)
class MsSetting:
    """A millisecond setting: its keyword, variable, default, and the built-in guard over it."""

    keyword: str
    variable: str
    default: int
    guard: int


def _ms_setting(variable: str) -> MsSetting:
    """The row of the table whose variable is ``variable``, as an ``MsSetting``."""
    (option,) = (o for o in BY_NAME.values() if o.variable == variable)
    assert isinstance(option.default, int) and isinstance(option.ceiling, int)
    return MsSetting(option.name, option.variable, option.default, option.ceiling)


BUILD_TIMEOUT: Final = _ms_setting(BUILD_TIMEOUT_VAR)
DISPOSE_TIMEOUT: Final = _ms_setting(DISPOSE_TIMEOUT_VAR)
SWEEP_INTERVAL: Final = _ms_setting(SWEEP_INTERVAL_VAR)
BACKOFF_CAP: Final = _ms_setting(BACKOFF_CAP_VAR)
MANAGER_MS_SETTINGS: Final = (BUILD_TIMEOUT, DISPOSE_TIMEOUT, SWEEP_INTERVAL)
MS_SETTINGS: Final = (BUILD_TIMEOUT, DISPOSE_TIMEOUT, SWEEP_INTERVAL, BACKOFF_CAP)


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
    try:
        return parse_int(raw, minimum, maximum)
    except Rejected as exc:
        _warn(collected, "%s=%r ignored: " + exc.fmt, name, raw, *exc.args_)
        return None


def raise_guard_hint(key: str) -> str:
    """How an operator lifts a guard: the message the cap warning and ``config`` print."""
    return f"to raise the guard, set {key} in the guards JSON file named by {GUARDS_PATH_VAR}"


def resolve_ms(
    setting: MsSetting,
    keyword: int | None,
    raw: str | int | None,
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
        if isinstance(raw, int):  # parsed when read: only the caller's minimum is left to check
            parsed = _read_int(setting.variable, str(raw), minimum, collected)
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
    guards: GuardConfig, settings: LimitSettings | None = None, **keywords: Any
) -> ResolvedLimits:
    """Resolve every limit: keyword > environment (``settings``) > default, capped by a guard.

    ``keywords`` are the manager's options by their table names (``None``: not given); an
    unknown one is a TypeError.

    ``settings=None`` reads the variables from ``os.environ`` directly. Raises ValueError for
    a bad keyword only; every other problem is a WARNING log, also collected in ``warnings``.
    The result is logged at INFO with where each value came from.
    """
    unknown = set(keywords) - {o.name for o in CACHE_OPTIONS if o.keyword is not None}
    if unknown:
        raise TypeError(f"resolve_limits() got unexpected keywords: {', '.join(sorted(unknown))}")
    collected: list[str] = []
    if settings is None:
        settings = _Environment.read()
    # Variables dropped as unparseable when read: each logged where its option is resolved.
    rejections = {args[0]: (fmt, args) for fmt, args in rejected_environment(settings)}

    def dropped(variable: str) -> None:
        entry = rejections.pop(variable, None)
        if entry is not None:
            _warn(collected, entry[0], *entry[1])

    label = _guard_label(guards)
    dropped(MAX_ENTRIES_VAR)

    max_entries = settings.max_entries
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
    dropped(TTL_MS_VAR)
    parsed_ms = settings.ttl_ms
    if parsed_ms is not None:
        ttl, given = parsed_ms, f"{TTL_MS_VAR}={parsed_ms}"
        rejections.pop(TTL_SECONDS_VAR, None)  # not consulted: TTL_MS wins
    else:
        dropped(TTL_SECONDS_VAR)
        parsed_s = settings.ttl_seconds
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

    resolved: dict[str, object] = {}

    def keep(option: Option, value: object, source: str) -> None:
        resolved[option.name] = value
        resolved[_source_field(option.name)] = source

    for setting in MANAGER_MS_SETTINGS:
        dropped(setting.variable)
        keep(BY_NAME[setting.keyword], *resolve_ms(
            setting, keywords.get(setting.keyword), getattr(settings, setting.keyword), collected
        ))
    for option in CACHE_OPTIONS:  # the rest, in the table's order
        dropped(option.variable)

    def asked(option: Option) -> tuple[Any, Any]:
        return keywords.get(option.name), getattr(settings, option.name)

    keep(REFRESH_AHEAD_ROW, *resolve_refresh_ahead_ms(*asked(REFRESH_AHEAD_ROW), ttl_ms, collected))
    keep(STALE_ROW, *resolve_flag(
        STALE_ROW.name, STALE_ROW.variable, *asked(STALE_ROW), collected,
        environment_text(settings, STALE_ROW.name),
    ))
    keep(IDLE_TTL_ROW, *resolve_idle_ttl_ms(*asked(IDLE_TTL_ROW), guards, collected, _warn))
    keep(TTL_JITTER_ROW, *resolve_ttl_jitter(*asked(TTL_JITTER_ROW)))
    keep(QUOTA_ROW, *resolve_max_entries_per_user(*asked(QUOTA_ROW), guards, collected))
    limits = ResolvedLimits(
        max_entries=entries,
        default_ttl_ms=ttl_ms,
        max_entries_source=entries_source,
        default_ttl_source=ttl_source,
        warnings=tuple(collected),
        **resolved,  # type: ignore[arg-type]
    )
    logger.info("snak_runtime limits: %s", limits.describe())
    return limits


def resolve_max_entries_per_user(
    keyword: int | None, raw: int | None, guards: GuardConfig, collected: list[str]
) -> tuple[int | None, str]:
    """The per-user quota (None: no quota) and where it came from.

    Keyword > ``AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER`` > no quota, then the guard's
    optional per-user ceiling caps it with a WARNING; with a guard ceiling, "no
    quota" is capped to the ceiling too. A bad keyword (0, negative, not an integer) raises
    ValueError; a bad variable is ignored with a WARNING naming it, then falls through.
    """
    ceiling: int | None = getattr(guards, QUOTA_ROW.name)  # the guard's field of that name
    value: int | None
    if keyword is not None:
        if not _is_positive_int(keyword):
            raise ValueError(f"{QUOTA_ROW.keyword} must be a positive integer, got {keyword!r}")
        value, given = keyword, f"keyword {QUOTA_ROW.keyword}={keyword}"
    else:
        value = raw  # parsed (and a bad one dropped, with a warning) when read
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
    keyword: int | None, raw: int | None, default_ttl_ms: int, collected: list[str]
) -> tuple[int, str]:
    """The refresh-ahead window and its source: keyword > ``AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS``
    > 0 (off).

    The default TTL is its guard: a window as long as an entry's whole life would refresh
    every entry on its first hit. A bad keyword (not an integer, negative, or not below
    ``default_ttl_ms``) raises ValueError; a bad variable (the same rules) is a WARNING naming
    it and its value, then 0.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < 0:
            raise ValueError(
                f"{REFRESH_AHEAD_ROW.keyword} must be an integer >= 0, got {keyword!r}"
            )
        if keyword >= default_ttl_ms:
            raise ValueError(
                f"{REFRESH_AHEAD_ROW.keyword}={keyword} must be below the default TTL"
                f" ({default_ttl_ms} ms)"
            )
        return keyword, f"keyword {REFRESH_AHEAD_ROW.keyword}={keyword}"
    if raw is None:
        return 0, "default"
    if raw >= default_ttl_ms:
        _warn(collected, "%s=%r ignored: must be <= %d", REFRESH_AHEAD_VAR, str(raw),
              default_ttl_ms - 1)
        return 0, "default"
    return raw, f"{REFRESH_AHEAD_VAR}={raw}"


def resolve_flag(
    keyword_name: str,
    variable: str,
    keyword: bool | None,
    raw: bool | None,
    collected: list[str],
    text: str | None = None,
) -> tuple[bool, str]:
    """A boolean setting and its source: keyword > variable > False. A keyword that is not a
    bool raises ValueError; the variable arrives parsed (one of 1/0, true/false, yes/no,
    on/off; anything else was dropped with a WARNING naming it when read)."""
    if keyword is not None:
        if not isinstance(keyword, bool):
            raise ValueError(f"{keyword_name} must be True or False, got {keyword!r}")
        return keyword, f"keyword {keyword_name}={keyword}"
    if raw is None:
        return False, "default"
    return raw, f"{variable}={str(raw).lower() if text is None else text}"
