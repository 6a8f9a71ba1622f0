"""The ``simulate`` workload's parameters: names, flags, bounds and validation, in one table;
``SimulationConfig``, which holds them, the manager they configure, and ``SimulationResult``,
what a run measured (with the options the manager ran with).

Every parameter is checked here, for the library (``SimulationConfig``, errors name the field)
and for the command line (errors name the flag). The bounds keep any accepted input finite
and the run bounded: a virtual-time run costs wall time per timer it fires (requests,
invalidations, one sweeper wake-up per virtual second), so the span of virtual time and the
number of events are capped too, not only each number on its own.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, final

from .._clock import Clock
from .._config import GuardConfig
from .._guards import MAX_GUARD_ENTRIES, MAX_GUARD_MS
from .._manager import AgentRuntimeManager
from .._policies import POLICY_NAMES
from .._settings import RuntimeCacheSettings
from ._trace import TraceRequest

MAX_SPAN_S = 7 * 24 * 3600
"""Longest run, in virtual seconds (the sweeper wakes once a virtual second: ~15 s of wall)."""
MAX_INVALIDATIONS = 1_000_000
"""Most configuration changes a run is expected to apply."""
_DAY_MS = 24 * 3600 * 1000


class SimulationConfigError(ValueError):
    """Raised when a workload parameter is out of range; the message names the field.

    ``flags`` names the command-line flags involved, ``detail`` says what is wrong, so the
    CLI can say the same thing under the flags' names.
    """

    def __init__(self, fields: tuple[str, ...], detail: str) -> None:
        self.fields = fields
        self.flags = tuple(PARAMETERS[name].flag for name in fields)
        self.detail = detail
        super().__init__(f"{' / '.join(fields)}: {detail}")

    @property
    def cli_message(self) -> str:
        """The same error under the command line's names: ``--rate: must be ...``."""
        return f"{' / '.join(self.flags)}: {self.detail}"


@dataclass(frozen=True, slots=True)
class Parameter:
    """One numeric workload parameter: its field, its flag and its closed range."""

    field: str
    flag: str
    kind: type[int] | type[float]
    low: float
    high: float
    help: str
    optional: bool = False  # None allowed: "as configured" (manager resolution)

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a number"
        return f"must be {noun} from {_num(self.low)} to {_num(self.high)}"

    def check(self, value: object) -> None:
        """Raise ``SimulationConfigError`` unless ``value`` is in range (finite, right type)."""
        if value is None and self.optional:
            return
        if isinstance(value, bool) or not isinstance(value, int | float):
            ok = False
        elif self.kind is int:
            ok = isinstance(value, int) and self.low <= value <= self.high
        else:
            ok = math.isfinite(value) and self.low <= value <= self.high
        if not ok:
            raise SimulationConfigError((self.field,), f"{self.describe()}, got {value!r}")

    def parse(self, text: str) -> Any:
        """Text from the command line to a checked value (``ValueError`` names no field:
        the caller adds the flag)."""
        try:
            value: int | float = int(text) if self.kind is int else float(text)
        except ValueError:
            raise ValueError(f"{self.describe()}, got {text}") from None
        try:
            self.check(value)
        except SimulationConfigError:
            raise ValueError(f"{self.describe()}, got {text}") from None
        return value


def _num(value: float) -> str:
    return f"{value:g}" if isinstance(value, float) and not value.is_integer() else f"{value:,.0f}"


PARAMETERS: Mapping[str, Parameter] = {
    p.field: p
    for p in (
        Parameter("agents", "--agents", int, 1, 1_000_000, "distinct agent ids"),
        Parameter("zipf_s", "--zipf", float, 0, 10, "Zipf exponent of popularity"),
        Parameter("requests", "--requests", int, 1, 1_000_000, "requests to run"),
        Parameter("rate_per_s", "--rate", float, 0.001, 1_000_000, "requests per second"),
        Parameter("build_ms", "--build-ms", float, 0, _DAY_MS, "cost of a build"),
        Parameter("hold_ms", "--hold-ms", float, 0, _DAY_MS, "how long a lease is held"),
        Parameter("invalidations_per_s", "--invalidations", float, 0, 1_000,
                  "configuration changes per second"),
        Parameter("max_entries", "--max-entries", int, 1, MAX_GUARD_ENTRIES,
                  "cache size (default: as configured)", optional=True),
        Parameter("ttl_ms", "--ttl-ms", int, 1, MAX_GUARD_MS,
                  "entry TTL (default: as configured)", optional=True),
        Parameter("build_timeout_ms", "--build-timeout-ms", int, 1, _DAY_MS,
                  "a slower build fails (default: the manager's 30000)", optional=True),
        Parameter("users", "--users", int, 1, 1_000_000,
                  "users owning the agents (agent i is user i mod users's)"),
        Parameter("burst_agents", "--burst-agents", int, 0, 1_000_000,
                  "distinct agents one more user opens in the middle of the run"),
        Parameter("burst_rate_per_s", "--burst-rate", float, 0.001, 1_000_000,
                  "requests per second of that burst"),
        Parameter("max_entries_per_user", "--max-entries-per-user", int, 1, MAX_GUARD_ENTRIES,
                  "per-user quota (default: as configured)", optional=True),
        Parameter("seed", "--seed", int, -(2**63), 2**63 - 1, "random seed"),
        Parameter("refresh_ahead_ms", "--refresh-ahead-ms", int, 0, 365 * _DAY_MS,
                  "the manager's refresh_ahead_ms, below the TTL (0: off)"),
        Parameter("hot_window_ms", "--hot-window-ms", int, 0, 365 * _DAY_MS,
                  "count apart the agents requested at least once per this many ms "
                  "(default: --refresh-ahead-ms)", optional=True),
        # issue 16: expiry options and the two workload shapes that show them
        Parameter("idle_ttl_ms", "--idle-ttl-ms", int, 0, 365 * _DAY_MS,
                  "idle expiry: an entry unused this long leaves, 0 off"
                  " (default: as configured)", optional=True),
        Parameter("ttl_jitter", "--ttl-jitter", float, 0, 0.5,
                  "each TTL shortened at random by up to this fraction"
                  " (default: as configured)", optional=True),
        Parameter("deploy", "--deploy", int, 0, 1_000_000,
                  "agents installed together at 0 s, a deploy warming the cache"),
        Parameter("one_time_share", "--one-time", float, 0, 0.99,
                  "share of requests for one-time agents, never requested again"),
    )
}
"""Every numeric parameter, in ``--help`` order. Add a parameter here and to SimulationConfig
(below)."""

DEFAULT_BUILD_TIMEOUT_MS = 30_000


def expected_span_s(values: Mapping[str, Any]) -> float:
    """Virtual seconds a run is expected to span: arrivals, then one build and one hold."""
    timeout_ms = values["build_timeout_ms"] or DEFAULT_BUILD_TIMEOUT_MS
    build_ms = min(float(values["build_ms"]), float(timeout_ms))
    arrivals_s = values["requests"] / values["rate_per_s"]
    # the burst starts halfway through the arrivals and may outlast them
    burst_s = values["burst_agents"] / values["burst_rate_per_s"]
    arrivals_s = max(arrivals_s, arrivals_s / 2 + burst_s)
    return float(arrivals_s + (build_ms + values["hold_ms"]) / 1000)


def validate(values: Mapping[str, Any]) -> None:
    """Check each parameter, then the bounds on the whole run (span, invalidations)."""
    for name, parameter in PARAMETERS.items():
        parameter.check(values[name])
    if values["deploy"] > values["agents"]:
        raise SimulationConfigError(
            ("deploy", "agents"),
            f"cannot deploy {values['deploy']:,} of {values['agents']:,} agents",
        )
    span_s = expected_span_s(values)
    if span_s > MAX_SPAN_S:
        raise SimulationConfigError(
            ("requests", "rate_per_s", "hold_ms", "build_ms"),
            f"the run would span {span_s:,.0f} s of virtual time, at most {MAX_SPAN_S:,} "
            "(fewer requests, a higher rate or shorter builds and holds)",
        )
    expected = values["invalidations_per_s"] * span_s
    if expected > MAX_INVALIDATIONS:
        raise SimulationConfigError(
            ("invalidations_per_s",),
            f"about {expected:,.0f} configuration changes over the run, at most "
            f"{MAX_INVALIDATIONS:,} (a lower rate or fewer requests)",
        )



@dataclass(frozen=True, slots=True)
class SimulationConfig:
    """The workload. ``max_entries`` / ``ttl_ms`` left as None use the manager's own
    resolution (``guards`` and the ``AGENT_RUNTIME_CACHE_*`` environment variables);
    ``build_timeout_ms`` None is the manager's default. ``guards`` None is the built-in
    defaults (the CLI passes the guard file's, read as ``config`` reads it).

    Every number is checked against ``PARAMETERS`` (``SimulationConfigError``, a
    ``ValueError`` naming the field), and so is the run as a whole: its span of virtual
    time and its expected invalidations are capped, so any accepted workload finishes.

    ``eviction`` None is the manager's resolution (``AGENT_RUNTIME_CACHE_EVICTION`` or the
    default policy). With ``trace``, its requests replace ``agents``, ``zipf_s`` and
    ``requests``; ``rate_per_s`` paces the requests that carry no timestamp.
    """

    agents: int = 1_000
    zipf_s: float = 1.1
    requests: int = 50_000
    rate_per_s: float = 50.0
    build_ms: float = 250.0
    hold_ms: float = 100.0
    invalidations_per_s: float = 0.2
    max_entries: int | None = None
    ttl_ms: int | None = None
    build_timeout_ms: int | None = None
    seed: int = 1
    refresh_ahead_ms: int = 0  # the manager's option (0: off)
    # Requests for agents whose every gap between requests is at most this are counted
    # apart (``hot_waited``); None: ``refresh_ahead_ms`` (0: no agent is counted apart).
    hot_window_ms: int | None = None
    stale_while_rebuilding: bool = False  # the manager's option (not a numeric parameter)
    guards: GuardConfig | None = None
    idle_ttl_ms: int | None = None
    ttl_jitter: float | None = None
    deploy: int = 0
    one_time_share: float = 0.0
    eviction: str | None = None
    trace: tuple[TraceRequest, ...] | None = None
    users: int = 1
    burst_agents: int = 0
    burst_rate_per_s: float = 50.0
    max_entries_per_user: int | None = None

    def __post_init__(self) -> None:
        values = {name: getattr(self, name) for name in PARAMETERS}
        if self.trace is not None:
            if not self.trace:
                raise ValueError("trace: no requests")
            values["requests"] = len(self.trace)
            stamps = [r.at_ms for r in self.trace if r.at_ms is not None]
            if stamps and (stamps[-1] - stamps[0]) / 1000 > MAX_SPAN_S:
                raise SimulationConfigError(
                    ("requests",), f"the trace spans more than {MAX_SPAN_S:,} s of time")
        validate(values)
        if self.eviction is not None and self.eviction not in POLICY_NAMES:
            raise ValueError(
                f"eviction: unknown eviction policy {self.eviction!r}; "
                f"known: {', '.join(POLICY_NAMES)}"
            )

    @property
    def request_count(self) -> int:
        return len(self.trace) if self.trace is not None else self.requests

    @property
    def timeout_ms(self) -> int:
        """The build timeout the run uses (``build_timeout_ms`` or the manager's default)."""
        return self.build_timeout_ms or DEFAULT_BUILD_TIMEOUT_MS

    @property
    def hot_window(self) -> int:
        """``hot_window_ms``, or ``refresh_ahead_ms`` when not given."""
        return self.hot_window_ms if self.hot_window_ms is not None else self.refresh_ahead_ms


@final
class SimAgent:
    """A stand-in agent: something for the manager to dispose."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def make_manager(config: SimulationConfig, clock: Clock) -> AgentRuntimeManager[str, SimAgent]:
    """The manager the workload configures; explicit sizes raise the guards to allow them."""
    # None leaves each expiry option to its variable, then its default (off).
    options: dict[str, Any] = {
        "build_timeout_ms": config.timeout_ms,
        "idle_ttl_ms": config.idle_ttl_ms,
        "ttl_jitter": config.ttl_jitter,
        "ttl_jitter_random": random.Random(config.seed),
        "eviction": config.eviction,
        "max_entries_per_user": config.max_entries_per_user,
        "stale_while_rebuilding": config.stale_while_rebuilding,
    }
    if config.refresh_ahead_ms:
        options["refresh_ahead_ms"] = config.refresh_ahead_ms
    base = _quota_guard(config)
    if config.max_entries is None and config.ttl_ms is None:
        # The embedded default: guards + environment, as `config` resolves them.
        return AgentRuntimeManager(guards=base, clock=clock, **options)
    env = RuntimeCacheSettings()
    max_entries = config.max_entries
    ttl_ms = config.ttl_ms
    # An explicit value is what the operator wants to try: raise the guard to allow it.
    guards = GuardConfig(
        max_entries=max(base.max_entries, max_entries or 0),
        max_ttl_ms=max(base.max_ttl_ms, ttl_ms or 0),
        max_entries_per_user=base.max_entries_per_user,
    )
    settings = RuntimeCacheSettings(
        max_entries=max_entries if max_entries is not None else env.max_entries,
        ttl_ms=ttl_ms if ttl_ms is not None else env.ttl_ms,
        ttl_seconds=env.ttl_seconds,
    )
    return AgentRuntimeManager(guards=guards, settings=settings, clock=clock, **options)


def _quota_guard(config: SimulationConfig) -> GuardConfig:
    """The guards, with the per-user ceiling raised to an explicit quota."""
    base = config.guards if config.guards is not None else GuardConfig()
    quota = config.max_entries_per_user
    if quota is not None and base.max_entries_per_user is not None:
        # An explicit value is what the operator wants to try: raise the guard to allow it.
        base = replace(base, max_entries_per_user=max(base.max_entries_per_user, quota))
    return base


@dataclass(frozen=True, slots=True)
class SimulationResult:
    """What happened. Latencies are virtual milliseconds from a request's arrival to its
    lease being granted; ``wall_s`` is how long the simulation took to run. A request whose
    build failed (slower than ``build_timeout_ms``) is counted in ``failed_requests`` and
    has no latency; the build in ``build_failures``."""

    config: SimulationConfig
    max_entries: int
    ttl_ms: int
    build_timeout_ms: int
    requests: int
    failed_requests: int
    hits: int
    misses: int
    builds: int
    build_failures: int
    evictions: int
    expirations: int
    invalidations: int
    rebuilds: int
    rebuild_failures: int
    disposals: int
    peak_size: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    virtual_s: float
    wall_s: float
    removals: Mapping[str, int] = field(default_factory=dict)
    waited: int = 0  # requests whose lease waited for a build (latency above 0)
    refreshes: int = 0
    refresh_failures: int = 0
    # agents requested at least once in every ``hot_window_ms`` (each gap between two of
    # their requests at most that), their requests after the first build (cold start)
    # ended, and how many of those waited for a build
    hot_agents: int = 0
    hot_requests: int = 0
    hot_waited: int = 0
    idle_ttl_ms: int = 0
    ttl_jitter: float = 0.0
    idle_expirations: int = 0
    peak_builds_per_s: int = 0
    """The most build calls (loads and rebuilds) that started in one second of virtual time."""
    peak_builds_second: int = 0
    returning_requests: int = 0
    """Requests for the ``agents`` ids (not one-time agents)."""
    returning_hits: int = 0
    """Returning requests that found their agent live on arrival."""
    mean_size: float = 0.0
    """Entries in the cache, averaged over request arrivals (what the cache holds open)."""
    denied: int = 0  # trace requests by a user who does not own the cached agent
    eviction: str = ""  # the policy the manager used
    quota_evictions: int = 0
    max_entries_per_user: int | None = None
    other_requests: int = 0
    """Requests of the users other than the burst's (issue 19: ``users``, ``burst_agents``)."""
    other_hits: int = 0
    """Of those, the ones that found their agent live on arrival."""
    window_requests: int = 0
    """The ``WINDOW`` other users' requests from the middle of the run on."""
    window_hits: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return 1.0 if total == 0 else self.hits / total

    @property
    def other_hit_rate(self) -> float:
        """The hit ratio of every user but the burst's."""
        return 1.0 if not self.other_requests else self.other_hits / self.other_requests

    @property
    def window_hit_rate(self) -> float:
        """The other users' hit ratio over the ``WINDOW`` requests from the middle of the
        run on (where a burst starts): the same requests in runs with and without one."""
        return 1.0 if not self.window_requests else self.window_hits / self.window_requests

    @property
    def returning_hit_rate(self) -> float:
        n = self.returning_requests
        return 1.0 if n == 0 else self.returning_hits / n
