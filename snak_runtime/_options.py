"""Every option of the package, declared once: the table the rest is generated from or checked
against (STYLE §11, issue 24).

Each row gives an option's name (the attribute on the settings models), the keyword that sets it
in code, its environment variable, its type, default, ceiling, unit, one-line doc, its path on
``RuntimeContainer`` and its ``simulate`` flag. The settings models (``_settings``,
``invalidation._settings``), the environment reader, the resolver (``_config``), the ``config``
command and the settings table of docs/configuration.md read the rows, or a test holds them
to the rows.

Pure: no pydantic, no logging. An environment value is parsed by its row (``Option.parse``),
which raises ``ValueError`` saying what is wrong; the caller decides whether that is a WARNING
and a fall-through (the environment, CONTRACT §2) or an error naming the field (a keyword).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

from ._guards import _MAX_ENTRIES_KEY, _MAX_PER_USER_KEY, _MAX_TTL_KEY, MAX_GUARD_MS

Kind = Literal["int", "bool", "float", "str", "secret"]
Group = Literal["cache", "fleet"]

# Optional sign and ASCII decimal digits, blanks around: int() alone would also take "4_2" and "٤٢".
_INT_RE: Final = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)
_TRUE: Final = frozenset(("1", "true", "yes", "on"))
_FALSE: Final = frozenset(("0", "false", "no", "off"))

MAX_TTL_JITTER: Final = 0.5
"""The largest ``ttl_jitter``: half the TTL at most, so an entry lives at least half of it."""


class Rejected(ValueError):
    """Why a text is not the option's value: a %-format and its arguments, so that a warning
    built from it keeps its arguments apart (``"must be >= %d"``, ``(1,)``)."""

    def __init__(self, fmt: str, *args: object) -> None:
        super().__init__(fmt % args)
        self.fmt = fmt
        self.args_ = args


Rejection = tuple[str, tuple[object, ...]]
"""A dropped variable's warning: ``"VAR=%r ignored: ..."``-style format and its arguments."""


def parse_int(raw: str, minimum: int, maximum: int | None = None) -> int:
    """CONTRACT §2's integer: an optional sign and ASCII digits, blanks around, in range.

    ``64.0``, ``1e3``, ``true``, ``4_2`` are not integers. Raises ``ValueError`` with the reason
    the resolution's warnings print (``not an integer``, ``must be >= 1``).
    """
    match = _INT_RE.fullmatch(raw)
    if match is None:
        raise Rejected("not an integer")
    try:
        value = int(match.group(1))
    except ValueError:  # more digits than int() accepts
        raise Rejected("too many digits") from None
    if value < minimum:
        raise Rejected("must be >= %d", minimum)
    if maximum is not None and value > maximum:
        raise Rejected("must be <= %d", maximum)
    return value


def parse_bool(raw: str) -> bool:
    """1/0, true/false, yes/no, on/off, any case, blanks around."""
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Rejected("not a boolean (true/false)")


def parse_fraction(raw: str, maximum: float) -> float:
    """A number from 0 to ``maximum`` (NaN and infinities are not)."""
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not 0 <= value <= maximum:  # NaN fails this too
        raise Rejected("must be a number from 0 to %s", maximum)
    return value


@dataclass(frozen=True, slots=True)
class Option:
    """One option: everything the package and its docs say about it, in one place.

    ``minimum`` bounds an ``int`` (or ``maximum`` a ``float``) as the variable's own rule;
    bounds that depend on another option (a refresh window below the TTL) and the guards are
    the resolver's. ``ceiling`` is the guard key or the built-in ceiling (``None``: none).
    ``container`` is the attribute path on ``RuntimeContainer`` that sets it (dotted through a
    provider's ``provided`` value); ``flag`` the ``simulate`` flag, where there is one.
    """

    name: str
    keyword: str | None
    variable: str
    kind: Kind
    default: object
    ceiling: str | float | None
    unit: str
    doc: str
    container: str
    flag: str | None = None
    group: Group = "cache"
    minimum: int = 0
    maximum: float | None = None

    @property
    def secret(self) -> bool:
        return self.kind == "secret"

    def parse(self, raw: str) -> object:
        """The value ``raw`` (an environment variable's text) stands for; ``ValueError`` says
        why it stands for none."""
        if self.kind == "int":
            return parse_int(raw, self.minimum)
        if self.kind == "bool":
            return parse_bool(raw)
        if self.kind == "float":
            return parse_fraction(raw, MAX_TTL_JITTER if self.maximum is None else self.maximum)
        return raw  # text: its own checks are the resolver's (Redis: an error at start)

    def check_keyword(self, value: object) -> object:
        """A value given in code, held to the same rule as the variable: an ``int`` field takes
        an ``int`` or the text of one (``"32"``), never ``True``, ``64.0`` or ``"64.0"``;
        ``ValueError`` otherwise (pydantic names the field)."""
        if value is None:
            return None
        if self.kind == "int":
            if isinstance(value, str):
                return parse_int(value, self.minimum)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"must be an integer >= {self.minimum}, got {value!r}")
            if value < self.minimum:
                raise ValueError(f"must be >= {self.minimum}, got {value!r}")
            return value
        if self.kind == "bool":
            if isinstance(value, str):
                return parse_bool(value)
            if not isinstance(value, bool):
                raise ValueError(f"must be True or False, got {value!r}")
            return value
        if self.kind == "float":
            if isinstance(value, str):
                return self.parse(value)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"must be a number, got {value!r}")
            return self.parse(repr(float(value)))
        return value


def _ms(
    name: str, variable: str, default: object, ceiling: str | float | None, doc: str,
    *, minimum: int = 1, flag: str | None = None, container: str | None = None,
    group: Group = "cache",
) -> Option:
    return Option(
        name, name, variable, "int", default, ceiling, "ms", doc,
        container if container is not None else name, flag, group, minimum,
    )


OPTIONS: Final[tuple[Option, ...]] = (
    Option("max_entries", None, "AGENT_RUNTIME_CACHE_MAX_ENTRIES", "int", "guard",
           _MAX_ENTRIES_KEY, "entries", "how many agents the cache holds",
           "settings.max_entries", "--max-entries", minimum=1),
    Option("ttl_ms", None, "AGENT_RUNTIME_CACHE_TTL_MS", "int", "guard", _MAX_TTL_KEY, "ms",
           "how long an entry lives; wins over ttl_seconds (0: the guard)",
           "settings.ttl_ms", "--ttl-ms"),
    Option("ttl_seconds", None, "AGENT_RUNTIME_CACHE_TTL_SECONDS", "int", "guard",
           _MAX_TTL_KEY, "s", "the TTL in seconds, when ttl_ms is unset",
           "settings.ttl_seconds"),
    Option("guards_config_path", None, "GUARDS_CONFIG_PATH", "str", None, None, "path",
           "the guards JSON file (unset: built-in guards)", "settings.guards_config_path"),
    _ms("build_timeout_ms", "AGENT_RUNTIME_BUILD_TIMEOUT_MS", 30_000, 600_000,
        "a build or rebuild that takes longer fails", flag="--build-timeout-ms"),
    _ms("dispose_timeout_ms", "AGENT_RUNTIME_DISPOSE_TIMEOUT_MS", 10_000, 600_000,
        "a disposer that takes longer is abandoned"),
    _ms("sweep_interval_ms", "AGENT_RUNTIME_SWEEP_INTERVAL_MS", 1_000, 60_000,
        "how often the sweeper looks for expired entries"),
    _ms("refresh_ahead_ms", "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS", 0, "the default TTL",
        "a hit this close to expiry rebuilds in the background (0: off)", minimum=0,
        flag="--refresh-ahead-ms"),
    Option("stale_while_rebuilding", "stale_while_rebuilding",
           "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING", "bool", False, None, "",
           "serve the previous generation while an invalidated agent rebuilds",
           "stale_while_rebuilding", "--stale-while-rebuilding"),
    _ms("idle_ttl_ms", "AGENT_RUNTIME_CACHE_IDLE_TTL_MS", 0, _MAX_TTL_KEY,
        "an entry unused this long leaves (0: off)", minimum=0, flag="--idle-ttl-ms"),
    Option("ttl_jitter", "ttl_jitter", "AGENT_RUNTIME_CACHE_TTL_JITTER", "float", 0.0,
           MAX_TTL_JITTER, "fraction", "each TTL shortened at random by up to this fraction",
           "ttl_jitter", "--ttl-jitter", maximum=MAX_TTL_JITTER),
    Option("eviction", "eviction", "AGENT_RUNTIME_CACHE_EVICTION", "str", "policy default",
           None, "name", "the eviction policy's name", "eviction", "--policy"),
    Option("max_entries_per_user", "max_entries_per_user",
           "AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER", "int", None, _MAX_PER_USER_KEY,
           "entries", "the per-user quota (unset: none)", "max_entries_per_user",
           "--max-entries-per-user", minimum=1),
    Option("invalidation_mode", "invalidation_mode", "AGENT_RUNTIME_CACHE_INVALIDATION_MODE",
           "str", "eager", None, "name",
           "eager: rebuild on invalidation; lazy: on the next read of the agent",
           "invalidation_mode"),
    # The fleet (CONTRACT §11): a malformed value fails start-up naming the variable (§12).
    Option("redis_url", None, "REDIS_URL", "secret", None, None, "url",
           "the Redis to subscribe to; wins over REDIS_HOST/PORT/PASSWORD/DB",
           "invalidation_settings.redis_url", group="fleet"),
    Option("redis_host", None, "REDIS_HOST", "str", "localhost", None, "host",
           "Redis host, when REDIS_URL is unset", "invalidation_settings.redis_host",
           group="fleet"),
    Option("redis_port", None, "REDIS_PORT", "str", 6379, None, "port",
           "Redis port", "invalidation_settings.redis_port", group="fleet"),
    Option("redis_password", None, "REDIS_PASSWORD", "secret", None, None, "",
           "Redis password (also the Sentinel master's)",
           "invalidation_settings.redis_password", group="fleet"),
    Option("redis_db", None, "REDIS_DB", "str", 0, None, "db", "Redis database number",
           "invalidation_settings.redis_db", group="fleet"),
    Option("redis_sentinels", "sentinels", "REDIS_SENTINELS", "str", None, None, "host:port,...",
           "find the master through these sentinels",
           "invalidation_settings.redis_sentinels", group="fleet"),
    Option("redis_sentinel_master", "master", "REDIS_SENTINEL_MASTER", "str", None, None, "name",
           "the master's service name the sentinels monitor",
           "invalidation_settings.redis_sentinel_master", group="fleet"),
    Option("channel", "channel", "AGENT_CFG_INVALIDATE_CHANNEL", "str",
           "agent_cfg_invalidate", None, "name", "the pub/sub channel of invalidations",
           "invalidation_settings.channel", group="fleet"),
    _ms("version_source_timeout_ms", "AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS", 10_000, 300_000,
        "a version-source call that takes longer has failed",
        container="invalidation_settings.version_source_timeout_ms", group="fleet"),
    _ms("reconcile_interval_ms", "AGENT_CFG_RECONCILE_INTERVAL_MS", 60_000, 86_400_000,
        "how often cached versions are compared with the source (0: never)", minimum=0,
        container="invalidation_settings.reconcile_interval_ms", group="fleet"),
    _ms("backoff_cap_ms", "AGENT_CFG_BACKOFF_CAP_MS", 5_000, 300_000,
        "the longest wait between reconnects", container="invalidation_backoff_cap_ms",
        group="fleet"),
    Option("gap_tolerance_messages", "gap_tolerance_messages",
           "AGENT_CFG_GAP_TOLERANCE_MESSAGES", "int", 64, 1_000_000, "messages",
           "an outbox_id still missing after this many later messages is lost (with a source)",
           "invalidation_settings.gap_tolerance_messages", group="fleet", minimum=1),
    _ms("gap_tolerance_ms", "AGENT_CFG_GAP_TOLERANCE_MS", 2_000, 3_600_000,
        "or missing this long; at most one gap reconciliation per this window (0: off)",
        minimum=0, container="invalidation_settings.gap_tolerance_ms", group="fleet"),
)
"""Every option, cache then fleet, in the order ``config`` and docs/configuration.md show."""

BY_NAME: Final[Mapping[str, Option]] = {option.name: option for option in OPTIONS}
CACHE_OPTIONS: Final = tuple(o for o in OPTIONS if o.group == "cache")
FLEET_OPTIONS: Final = tuple(o for o in OPTIONS if o.group == "fleet")
MAX_TTL_MS_CEILING: Final = MAX_GUARD_MS


def variable(name: str) -> str:
    """The environment variable of option ``name``."""
    return BY_NAME[name].variable


def read_environment(
    options: tuple[Option, ...],
    environ: Mapping[str, str] | None = None,
    skip: Callable[[Option], bool] = lambda option: False,
) -> tuple[dict[str, object], tuple[Rejection, ...], dict[str, str]]:
    """Each option's value from its variable, a warning text for each value dropped, and the
    text of each value kept (blanks around removed: the source ``config`` shows).

    Unset and empty fall through (absent from the result); a value its row cannot parse is
    dropped, with its warning ``"VAR='raw' ignored: reason"`` as a format and its arguments
    (the variable and the value, CONTRACT §2).
    Options for which ``skip`` is true (a keyword gave them) are not read.
    """
    env = os.environ if environ is None else environ
    found: dict[str, object] = {}
    rejected: list[Rejection] = []
    texts: dict[str, str] = {}
    for option in options:
        if skip(option):
            continue
        raw = env.get(option.variable)
        if not raw or (option.kind != "str" and option.kind != "secret" and not raw.strip()):
            continue
        try:
            found[option.name] = option.parse(raw)
        except Rejected as exc:
            rejected.append(("%s=%r ignored: " + exc.fmt, (option.variable, raw, *exc.args_)))
        else:
            texts[option.name] = raw.strip()
    return found, tuple(rejected), texts


class CacheValues:
    """The typed value of each cache option (``None``: not given, fall through): the fields of
    ``RuntimeCacheSettings`` (pydantic takes them from here) and what the resolver reads. A test
    holds these annotations to ``CACHE_OPTIONS`` (name and kind)."""

    max_entries: int | None = None
    ttl_ms: int | None = None
    ttl_seconds: int | None = None
    guards_config_path: str | None = None
    build_timeout_ms: int | None = None
    dispose_timeout_ms: int | None = None
    sweep_interval_ms: int | None = None
    refresh_ahead_ms: int | None = None
    stale_while_rebuilding: bool | None = None
    idle_ttl_ms: int | None = None
    ttl_jitter: float | None = None
    eviction: str | None = None
    max_entries_per_user: int | None = None
    invalidation_mode: str | None = None


def rejected_environment(values: object) -> tuple[Rejection, ...]:
    """The warnings for the variables ``values`` dropped when it read them (none for other
    objects): the resolver logs them, so that they are logged where the limits are."""
    found = getattr(values, "rejected_environment", ())
    return found if isinstance(found, tuple) else ()


def environment_text(values: object, name: str) -> str | None:
    """The text of option ``name``'s variable as ``values`` read it (None: not from there)."""
    texts = getattr(values, "environment_texts", None)
    return texts.get(name) if isinstance(texts, dict) else None


def _default(name: str) -> int:
    value = BY_NAME[name].default
    assert isinstance(value, int)
    return value


# Rows the resolver treats apart (a guard, a cross-check): named once, here.
REFRESH_AHEAD_ROW: Final = BY_NAME["refresh_ahead_ms"]
STALE_ROW: Final = BY_NAME["stale_while_rebuilding"]
IDLE_TTL_ROW: Final = BY_NAME["idle_ttl_ms"]
TTL_JITTER_ROW: Final = BY_NAME["ttl_jitter"]
QUOTA_ROW: Final = BY_NAME["max_entries_per_user"]


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    """The limits the manager runs with, where each came from, and what was warned about."""

    max_entries: int
    default_ttl_ms: int
    max_entries_source: str
    default_ttl_source: str
    warnings: tuple[str, ...] = ()
    build_timeout_ms: int = _default("build_timeout_ms")
    dispose_timeout_ms: int = _default("dispose_timeout_ms")
    sweep_interval_ms: int = _default("sweep_interval_ms")
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

    def rows(self) -> list[tuple[str, object, str]]:
        """Each resolved option as (name, value, source), in the start-up line's order."""
        return [(label, getattr(self, value), getattr(self, source))
                for label, value, source in RESOLVED_FIELDS]

    def describe(self) -> str:
        """One line for the start-up log: each effective value and where it came from."""
        return ", ".join(f"{label}={value} ({source})" for label, value, source in self.rows())


def _source_field(name: str) -> str:
    """``ResolvedLimits``' attribute for the source of option ``name``."""
    fields = ResolvedLimits.__dataclass_fields__
    return f"{name}_source" if f"{name}_source" in fields else f"{name.removesuffix('_ms')}_source"


RESOLVED_FIELDS: Final[tuple[tuple[str, str, str], ...]] = (
    ("max_entries", "max_entries", "max_entries_source"),
    ("default_ttl_ms", "default_ttl_ms", "default_ttl_source"),
    *(
        (o.name, o.name, _source_field(o.name))
        for o in CACHE_OPTIONS
        if o.keyword is not None and o.kind != "str"
    ),
)
"""(label, value attribute, source attribute) of each resolved option of ``ResolvedLimits``,
from the table: the start-up line, ``config`` and a test read them."""
