"""Limits: guard ceilings, environment settings, and how they resolve."""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

logger = logging.getLogger(__name__)

MAX_ENTRIES_VAR = "AGENT_RUNTIME_CACHE_MAX_ENTRIES"
TTL_MS_VAR = "AGENT_RUNTIME_CACHE_TTL_MS"
TTL_SECONDS_VAR = "AGENT_RUNTIME_CACHE_TTL_SECONDS"
GUARDS_PATH_VAR = "GUARDS_CONFIG_PATH"
REFRESH_AHEAD_VAR = "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS"
STALE_WHILE_REBUILDING_VAR = "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING"

_MAX_ENTRIES_KEY = "agent_runtime.cache.max_entries"
_MAX_TTL_KEY = "agent_runtime.cache.max_ttl_ms"
_CACHE_SECTION = "agent_runtime.cache"

# Optional sign and ASCII decimal digits, blanks around: int() alone would also take "4_2" and "٤٢".
_INT_RE = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)


class GuardConfigError(ValueError):
    """Raised when a guards file cannot supply the cache limits; names the file and the key."""


def _is_positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Hard ceilings set by the operator: nothing configured can exceed them."""

    max_entries: int = 64
    max_ttl_ms: int = 300_000
    # Where the values came from, for log and source text only: not part of equality or hash.
    source: str | None = field(default=None, kw_only=True, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_ttl_ms"):
            value = getattr(self, name)
            if not _is_positive_int(value):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> GuardConfig:
        """Read the two cache limits from a whole snak guards JSON file.

        Other sections are ignored. Any problem raises GuardConfigError whose message
        contains the file path and the dotted key that could not be read.
        """
        shown = os.fspath(path)
        try:
            with open(path, "rb") as fh:
                raw = fh.read()
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise GuardConfigError(
                f"guards file {shown}: cannot read {_CACHE_SECTION}: {reason}"
            ) from exc
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise GuardConfigError(
                f"guards file {shown}: invalid JSON at line {exc.lineno} column {exc.colno}"
                f" ({exc.msg}); cannot read {_CACHE_SECTION}"
            ) from exc
        except (ValueError, RecursionError) as exc:  # bad encoding, absurd number or nesting
            raise GuardConfigError(
                f"guards file {shown}: invalid JSON ({exc}); cannot read {_CACHE_SECTION}"
            ) from exc
        max_entries = _positive_int_at(document, _MAX_ENTRIES_KEY, shown)
        max_ttl_ms = _positive_int_at(document, _MAX_TTL_KEY, shown)
        return cls(max_entries=max_entries, max_ttl_ms=max_ttl_ms, source=f"file {shown}")


def _json_text(value: object) -> str:
    """Show a JSON value as JSON (true, 64.0, "64"), so the message matches the file."""
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_kind(value: object) -> str:
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "an array"
    return _json_text(value)


def _positive_int_at(document: Any, key: str, shown: str) -> int:
    node: Any = document
    walked: list[str] = []
    for part in key.split("."):
        if not isinstance(node, dict):
            where = ".".join(walked) if walked else "the top level"
            raise GuardConfigError(
                f"guards file {shown}: {key}: {where} must be a JSON object, got {_json_kind(node)}"
            )
        walked.append(part)
        if part not in node:
            raise GuardConfigError(f"guards file {shown}: {key} is missing")
        node = node[part]
    if not _is_positive_int(node):
        raise GuardConfigError(
            f"guards file {shown}: {key} must be a positive integer, got {_json_kind(node)}"
        )
    value: int = node
    return value


def load_guards(path: str | None) -> GuardConfig:
    """Guard limits for the container: built-in defaults when no path is configured."""
    return GuardConfig() if not path else GuardConfig.from_file(path)


class _ExactEnvSource(PydanticBaseSettingsSource):
    """Reads each field from its own variable only.

    The stock env source, under populate_by_name, would also read a bare MAX_ENTRIES or TTL_MS
    left in the environment by unrelated software.
    """

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        alias = field.validation_alias
        name = alias if isinstance(alias, str) else field_name
        return os.environ.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field_info in self.settings_cls.model_fields.items():
            value, name, _ = self.get_field_value(field_info, field_name)
            if value:  # env_ignore_empty: an empty variable counts as unset
                found[name] = value
        return found


class RuntimeCacheSettings(BaseSettings):
    """The cache's environment variables, kept as raw text so loading never fails."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )

    max_entries: str | None = Field(default=None, validation_alias=MAX_ENTRIES_VAR)
    ttl_ms: str | None = Field(default=None, validation_alias=TTL_MS_VAR)
    ttl_seconds: str | None = Field(default=None, validation_alias=TTL_SECONDS_VAR)
    guards_config_path: str | None = Field(default=None, validation_alias=GUARDS_PATH_VAR)
    refresh_ahead_ms: str | None = Field(default=None, validation_alias=REFRESH_AHEAD_VAR)
    stale_while_rebuilding: str | None = Field(
        default=None, validation_alias=STALE_WHILE_REBUILDING_VAR
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the exact variables; no .env or secrets files."""
        return init_settings, _ExactEnvSource(settings_cls)


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits the manager runs with, where each came from, and what was warned about."""

    max_entries: int
    default_ttl_ms: int
    max_entries_source: str
    default_ttl_source: str
    warnings: tuple[str, ...] = ()


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
    """The one integer parser for every environment variable of the project (CONTRACT §2).

    Unset or blank gives ``default``; a value that is not an optional sign and ASCII digits,
    or lies outside ``minimum..maximum``, is ignored with a WARNING naming the variable and the
    value, and gives ``default``. Never raises.
    """
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


def resolve_limits(guards: GuardConfig, settings: RuntimeCacheSettings) -> ResolvedLimits:
    """Parse the environment values, fall through on bad ones, and cap them to the guards.

    Never raises: every problem becomes a WARNING log, also collected in ``warnings``.
    """
    collected: list[str] = []
    label = _guard_label(guards)

    max_entries = _read_int(MAX_ENTRIES_VAR, settings.max_entries, 1, collected)
    if max_entries is None:
        entries, entries_source = guards.max_entries, label
    elif max_entries > guards.max_entries:
        _warn(
            collected,
            "%s=%d is above the guard %s=%d; capped to %d",
            MAX_ENTRIES_VAR,
            max_entries,
            _MAX_ENTRIES_KEY,
            guards.max_entries,
            guards.max_entries,
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
            "%s resolved to %d ms, above the guard %s=%d; capped to %d",
            given,
            ttl,
            _MAX_TTL_KEY,
            guards.max_ttl_ms,
            guards.max_ttl_ms,
        )
        ttl_ms, ttl_source = guards.max_ttl_ms, f"{given} capped to guard {guards.max_ttl_ms}"
    else:
        ttl_ms, ttl_source = ttl, given

    return ResolvedLimits(
        max_entries=entries,
        default_ttl_ms=ttl_ms,
        max_entries_source=entries_source,
        default_ttl_source=ttl_source,
        warnings=tuple(collected),
    )


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


def resolve_refresh_ahead_ms(keyword: int | None, raw: str | None, default_ttl_ms: int) -> int:
    """``refresh_ahead_ms``: keyword > ``AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS`` > 0 (off).

    The default TTL is its guard: a refresh window as long as the whole life of an entry
    would refresh every entry on its first hit. A bad keyword (not an integer, negative, or
    not below ``default_ttl_ms``) raises ValueError; a bad variable is a WARNING naming it
    and its value, then 0.
    """
    if keyword is not None:
        if isinstance(keyword, bool) or not isinstance(keyword, int) or keyword < 0:
            raise ValueError(f"refresh_ahead_ms must be an integer >= 0, got {keyword!r}")
        if keyword >= default_ttl_ms:
            raise ValueError(
                f"refresh_ahead_ms={keyword} must be below the default TTL ({default_ttl_ms} ms)"
            )
        return keyword
    return env_int(REFRESH_AHEAD_VAR, raw, 0, minimum=0, maximum=default_ttl_ms - 1)


_TRUE = frozenset(("1", "true", "yes", "on"))
_FALSE = frozenset(("0", "false", "no", "off"))


def resolve_flag(name: str, variable: str, keyword: bool | None, raw: str | None) -> bool:
    """A boolean setting: keyword > variable > False. A keyword that is not a bool raises
    ValueError; a variable that is not one of 1/0, true/false, yes/no, on/off (any case) is
    a WARNING naming it and its value, then False."""
    if keyword is not None:
        if not isinstance(keyword, bool):
            raise ValueError(f"{name} must be True or False, got {keyword!r}")
        return keyword
    if raw is None or not raw.strip():
        return False
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text not in _FALSE:
        logger.warning("%s=%r ignored: not a boolean (true/false)", variable, raw)
    return False
