"""The ``snak-runtime`` command line: ``demo``, ``config``, ``simulate`` (only the CLI prints).

The parser and the command registry, the ``config`` command and the ``simulate`` command's
flags and report; the demo scenario is in ``_demo.py``, the simulator in ``_simulate.py``.
``python -m snak_runtime`` and the ``snak-runtime`` script run :func:`main`.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from .._config import (
    _MAX_ENTRIES_KEY,
    _MAX_TTL_KEY,
    BACKOFF_CAP,
    BUILD_TIMEOUT,
    GUARDS_PATH_VAR,
    MS_SETTINGS,
    GuardConfig,
    GuardConfigError,
    MsSetting,
    ResolvedLimits,
    environment_value,
    raise_guard_hint,
    resolve_invalidation_mode,
    resolve_limits,
    resolve_ms,
)
from .._options import (
    BY_NAME,
    FLEET_OPTIONS,
    IDLE_TTL_ROW,
    OPTIONS,
    QUOTA_ROW,
    STALE_ROW,
    TTL_JITTER_ROW,
    Option,
)
from .._policies import POLICY_NAMES, resolve_eviction
from ..containers import RuntimeContainer
from ..invalidation._redis_config import redacted_url
from ..invalidation._sentinel import RedisConfigError
from ._demo import demo_arguments, run_demo
from ._simulate_flags import Given, conflict, given, sizes
from ._simulate_params import PARAMETERS, Parameter, SimulationConfig, SimulationConfigError
from ._trace import TraceError, read_trace

if TYPE_CHECKING:
    from .._settings import RuntimeCacheSettings
    from ._simulate import SimulationResult

EXIT_OK = 0
EXIT_CONFIG_ERROR = 2


class Command(NamedTuple):
    """One subcommand: its help line, what it runs, and (optionally) its own arguments."""

    help: str
    run: Callable[[argparse.Namespace], int]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None


COMMANDS: dict[str, Command] = {}
"""Subcommand registry, in ``--help`` order; add one with :func:`register`."""


def register(name: str, command: Command) -> None:
    """Add a subcommand (``simulate`` and others plug in here)."""
    COMMANDS[name] = command


def _container() -> RuntimeContainer:
    return RuntimeContainer()


# ---------------------------------------------------------------------------------------- config


@contextlib.contextmanager
def _library_logs_muted() -> Iterator[None]:
    """``config`` prints the resolution's warnings itself; keep the log copies off stderr."""
    library = logging.getLogger("snak_runtime")
    previous = library.level
    library.setLevel(logging.ERROR)
    try:
        yield
    finally:
        library.setLevel(previous)


def _run_config(args: argparse.Namespace) -> int:
    container = _container()
    settings = container.settings()
    guards = container.guards()  # GuardConfigError for a bad GUARDS_CONFIG_PATH: exit 2
    collected: list[str] = []
    with _library_logs_muted():
        limits = resolve_limits(guards, settings)
        backoff_cap = resolve_ms(
            BACKOFF_CAP, None, environment_value(BACKOFF_CAP.variable), collected
        )
        eviction = _name_line(
            "eviction", settings.eviction, resolve_eviction(None, "", settings.eviction),
            f"an eviction policy (known: {', '.join(POLICY_NAMES)})", collected)
        mode = _name_line(
            "invalidation_mode", settings.invalidation_mode,
            resolve_invalidation_mode(None, settings), "an invalidation mode (eager, lazy)",
            collected)
        fleet = _fleet_lines(container, backoff_cap, collected)
    warnings = [*limits.warnings, *collected]
    lines = [
        "snak_runtime effective limits",
        *_limit_lines(limits, backoff_cap),
        eviction,
        mode,
        *_guard_lines(settings, guards),
        "fleet (Redis invalidation):",
        *fleet,
        "environment:",
        *_environment_lines(),
        f"warnings: {len(warnings)}",
        *(f"  - {warning}" for warning in warnings),
    ]
    for line in lines:
        print(line)
    return EXIT_OK


def _limit_lines(limits: ResolvedLimits, backoff_cap: tuple[int, str]) -> list[str]:
    """Each resolved setting, its value and where the value came from (the table's order;
    the built-in guards' timings first, the subscriber's backoff cap among them)."""
    rows = [(name, str(value).lower() if isinstance(value, bool) else value, source)
            for name, value, source in limits.rows()]
    first, rest = rows[:2], rows[2:]
    built_in = [row for row in rest if row[0] in {s.keyword for s in MS_SETTINGS}]
    others = [row for row in rest if row not in built_in]
    quota = [row for row in others if row[0] == QUOTA_ROW.name]
    return [
        *(f"  {name:<16}{value:>10}   from {source}" for name, value, source in first),
        *(f"  {name:<18}{value:>8}   from {source}" for name, value, source in
          (*built_in, ("backoff_cap_ms", *backoff_cap), *(r for r in others if r not in quota))),
        *(f"  {name} {'none' if value is None else value:>5}   from {source}"
          for name, value, source in quota),
    ]


def _name_line(name: str, configured: str | None, resolved: str, known: str,
               collected: list[str]) -> str:
    """A named choice (eviction policy, invalidation mode) the manager would use, and where
    it came from; ``known`` completes the warning's "not ..." for a name it does not know."""
    option = BY_NAME[name]
    if configured is None or not configured.strip():
        source = "default"
    elif configured.strip().lower() == resolved:
        source = f"{option.variable}={configured.strip()}"
    else:
        source = "default"
        collected.append(f"{option.variable}={configured!r} ignored: not {known}; "
                         f"using {resolved!r}")
    return f"  {option.name:<18}{resolved:>8}   from {source}"


def _fleet_lines(
    container: RuntimeContainer, backoff_cap: tuple[int, str], collected: list[str]
) -> list[str]:
    """Every fleet option: its effective value (passwords masked) and source, then the target
    the subscriber would connect to, or the error that would stop it starting."""
    fleet = container.invalidation_settings()
    lines = []
    for option in FLEET_OPTIONS:
        raw = environment_value(option.variable)
        source = "default" if raw is None or option.secret else f"{option.variable}={raw}"
        if raw is not None and option.secret:
            source = option.variable
        value: object
        if option.name == BACKOFF_CAP.keyword:
            value, source = backoff_cap
        elif option.unit == "ms":
            value, source = resolve_ms(_ms_of(option), None, raw, collected,
                                       minimum=option.minimum)
        elif raw is None:
            value = "(unset)" if option.default is None else option.default
        elif option.secret:
            value = "***" if option.unit != "url" else redacted_url(raw)
        else:
            value = raw
        lines.append(f"  {option.name:<26}{value!s:>22}   from {source}")
    try:
        target = fleet.target().describe() if fleet.configured else "none (no REDIS_* set)"
    except RedisConfigError as exc:
        target = "none: start-up would fail"
        collected.append(str(exc))
    lines.append(f"  target  {target}")
    return lines


def _ms_of(option: Option) -> MsSetting:
    assert isinstance(option.default, int) and isinstance(option.ceiling, int)
    return MsSetting(option.name, option.variable, option.default, option.ceiling)


def _guard_lines(settings: RuntimeCacheSettings, guards: GuardConfig) -> list[str]:
    """The ceilings, where they come from and how to raise them."""
    origin = (
        f"file {settings.guards_config_path} ({GUARDS_PATH_VAR})"
        if settings.guards_config_path
        else f"built-in defaults ({GUARDS_PATH_VAR} unset)"
    )
    quota = getattr(guards, QUOTA_ROW.name)  # the guard's field of the option's name
    return [
        f"guard ceilings: {origin}",
        f"  max_entries     {guards.max_entries:>10}",
        f"  max_ttl_ms      {guards.max_ttl_ms:>10}",
        *([] if quota is None else [f"  {QUOTA_ROW.name} {quota:>5}"]),
        f"  {raise_guard_hint(f'{_MAX_ENTRIES_KEY} / {_MAX_TTL_KEY}')}",
        "  built-in guards: "
        + ", ".join(f"{setting.keyword} <= {setting.guard}" for setting in MS_SETTINGS),
    ]


_ENV_COLUMN = 40


def _environment_lines() -> list[str]:
    """Each variable of the table as set (``repr``; a password masked), or ``(unset)``."""
    lines = []
    for option in OPTIONS:
        raw = environment_value(option.variable)
        if raw is None:
            shown = "(unset)"
        elif option.secret:
            shown = "'***'" if option.unit != "url" else repr(redacted_url(raw))
        else:
            shown = repr(raw)
        lines.append(f"  {option.variable:<{_ENV_COLUMN}}  {shown}")
    return lines


register(
    "demo",
    Command("run the quickstart scenario on the embedded cache", run_demo, demo_arguments),
)
register("config", Command("print the effective limits, their sources and warnings", _run_config))


# -------------------------------------------------------------------------------------- simulate


class _OneLineErrors(argparse.ArgumentParser):
    """A subcommand's usage error is one line naming the flag (exit 2), like a bad guard file."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG_ERROR, f"{self.prog}: error: {message}\n")


def _flag_type(parameter: Parameter) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            return parameter.parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _simulate_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SimulationConfig()
    for parameter in PARAMETERS.values():  # one table: flag, bounds and help (_simulate_params)
        default = getattr(defaults, parameter.field)
        parser.add_argument(
            parameter.flag,
            dest=parameter.field,
            action=Given,
            type=_flag_type(parameter),
            default=default,
            metavar=parameter.kind.__name__.upper(),
            help=parameter.help if default is None else f"{parameter.help} (%(default)s)",
        )
    for option in (STALE_ROW,):  # the manager's boolean options: a switch each
        parser.add_argument(option.flag or "", action="store_true", dest=option.name,
                            help=f"the manager's {option.name} (off unless given)")
    parser.add_argument(
        "--policy", action="append", dest="policies", choices=POLICY_NAMES, metavar="NAME",
        help=f"eviction policy ({', '.join(POLICY_NAMES)}); repeat to compare them side by "
        "side (default: as configured)",
    )
    parser.add_argument(
        "--trace", metavar="FILE", default=None,
        help="replay requests from FILE instead of the Zipf workload, one a line: "
        "agent_id[,user_id[,timestamp_ms]]",
    )
    parser.add_argument(
        "--sizes", type=sizes, default=None, metavar="N,N,...",
        help="print the miss-ratio curve over these cache sizes (max_entries)",
    )


def _progress_bar(done: int, total: int) -> None:
    filled = 30 * done // total
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} requests",
          end=end, file=sys.stderr, flush=True)


def _run_simulate(args: argparse.Namespace) -> int:
    from ._simulate import simulate

    config = _simulation_config(args)
    if config is None:
        return EXIT_CONFIG_ERROR
    policies: list[str | None] = list(args.policies or [None])
    if len(policies) > 1 or args.sizes is not None:
        with _library_logs_muted():
            _compare_policies(config, policies, args.sizes or [config.max_entries], simulate)
        return EXIT_OK
    # A progress bar is for a person watching: not for a pipe or a log file. Failed builds
    # are counted in the summary, not logged one by one.
    with _library_logs_muted():
        result = simulate(dataclasses.replace(config, eviction=policies[0]),
                          _progress_bar if sys.stderr.isatty() else None)
    for line in _summary(config, result):
        print(line)
    return EXIT_OK


def _simulation_config(args: argparse.Namespace) -> SimulationConfig | None:
    """The workload the flags describe, or None after a one-line error on stderr."""
    container = _container()
    guards = container.guards()  # as `config` reads it: a bad GUARDS_CONFIG_PATH exits 2
    if (problem := conflict(args)) is not None:
        print(f"snak-runtime simulate: error: {problem}", file=sys.stderr)
        return None
    with _library_logs_muted():  # printed once here, as `config` and `demo` show them
        for warning in resolve_limits(guards, container.settings()).warnings:
            print(f"snak-runtime simulate: warning: {warning}", file=sys.stderr)
    try:
        trace = read_trace(args.trace) if args.trace is not None else None
    except TraceError as exc:
        print(f"snak-runtime simulate: error: --trace: {exc}", file=sys.stderr)
        return None
    if trace is not None and "--requests" in given(args):
        trace = trace[: args.requests]
    try:
        return SimulationConfig(
            **{name: getattr(args, name) for name in PARAMETERS}, guards=guards, trace=trace,
            **{STALE_ROW.name: getattr(args, STALE_ROW.name)},
        )
    except SimulationConfigError as exc:  # bounds on the run as a whole (span, events)
        print(f"snak-runtime simulate: error: {exc.cli_message}", file=sys.stderr)
        return None


def _summary(config: SimulationConfig, r: SimulationResult) -> list[str]:
    """The run's report, a line per measure; lines that do not apply to this workload left out."""
    return [
        f"simulated {_workload(config)} over {r.virtual_s:,.0f} s of virtual time,"
        f" in {r.wall_s:.1f} s",
        f"  cache           max_entries={r.max_entries}  ttl_ms={r.ttl_ms}"
        f"  {IDLE_TTL_ROW.name}={getattr(r, IDLE_TTL_ROW.name) or 'off'}"
        f"  {TTL_JITTER_ROW.name}={getattr(r, TTL_JITTER_ROW.name):g}"
        f"  eviction={r.eviction}  peak size={r.peak_size}  mean size={r.mean_size:.1f}",
        f"  hit rate        {r.hit_rate:.1%}  ({r.hits:,} hits, {r.misses:,} misses)",
        *_returning_lines(config, r),
        f"  builds          {r.builds:,}  (failures {r.build_failures:,};"
        f" {BUILD_TIMEOUT.keyword}={getattr(r, BUILD_TIMEOUT.keyword)})",
        f"  failed requests {r.failed_requests:,}  (their build failed)",
        f"  peak builds/s   {r.peak_builds_per_s:,}  (in second {r.peak_builds_second:,};"
        f" loads and rebuilds started; {config.deploy:,} agents deployed at 0 s)",
        *_trace_lines(config, r),
        f"  evictions       {r.evictions:,}  (capacity)",
        f"  expirations     {r.expirations:,}  (idle: {r.idle_expirations:,})",
        *_user_lines(config, r),
        f"  invalidations   {r.invalidations:,}  (rebuilds {r.rebuilds:,},"
        f" failures {r.rebuild_failures:,})",
        f"  lease latency   p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  max {r.max_ms:.1f} ms"
        "  (virtual: waiting for builds)",
        f"  waited          {r.waited:,} requests waited for a build"
        f"  (refreshes {r.refreshes:,}, failed {r.refresh_failures:,})",
        *_hot_lines(config, r),
    ]


def _returning_lines(config: SimulationConfig, r: SimulationResult) -> list[str]:
    if not config.one_time_share:
        return []
    return [f"  returning       hit rate {r.returning_hit_rate:.1%}"
            f"  ({r.returning_hits:,} of {r.returning_requests:,} requests for the"
            f" {config.agents:,} returning agents; the rest were one-time agents)"]


def _trace_lines(config: SimulationConfig, r: SimulationResult) -> list[str]:
    if config.trace is None:
        return []
    return [f"  denied          {r.denied:,}  (another user's agent was cached)"]


def _user_lines(config: SimulationConfig, r: SimulationResult) -> list[str]:
    """Issue 19: the per-user quota, and what a burst of one user costs the others."""
    lines = []
    quota = getattr(r, QUOTA_ROW.name)
    if quota is not None or config.burst_agents:
        lines.append(f"  quota           {QUOTA_ROW.name}={quota}"
                     f"  quota evictions {r.quota_evictions:,}")
    if config.burst_agents or config.users > 1:
        lines.append(f"  other users     hit rate {r.other_hit_rate:.1%}  ({r.other_requests:,}"
                     f" requests; the burst of {config.burst_agents:,} agents is not counted)")
        lines.append(f"  mid-run window  hit rate {r.window_hit_rate:.1%}"
                     f"  ({r.window_requests:,} requests of the other users from the middle"
                     " on, where a burst starts)")
    return lines


def _hot_lines(config: SimulationConfig, r: SimulationResult) -> list[str]:
    if not r.hot_agents:
        return []
    return [f"  hot agents      {r.hot_agents:,} requested at least once per "
            f"{config.hot_window} ms: {r.hot_waited:,} of their "
            f"{r.hot_requests:,} later requests waited"]


def _workload(config: SimulationConfig) -> str:
    if config.trace is not None:
        agents = len({request.agent_id for request in config.trace})
        return f"{len(config.trace):,} trace requests for {agents:,} agents"
    return f"{config.requests:,} requests for {config.agents:,} agents (Zipf {config.zipf_s})"


def _compare_policies(
    config: SimulationConfig, policies: list[str | None], sizes: list[int | None],
    simulate: Callable[[SimulationConfig], SimulationResult],
) -> None:
    """One run per (size, policy) on the same workload; miss ratio (and builds) a cell."""
    results = {
        (size, policy): simulate(
            dataclasses.replace(config, max_entries=size, eviction=policy)
        )
        for size in sizes
        for policy in policies
    }
    names = [results[(sizes[0], policy)].eviction for policy in policies]
    print(f"miss ratio (builds) by cache size and eviction policy: {_workload(config)}")
    print(f"  {'max_entries':>11}" + "".join(f"  {name:>20}" for name in names))
    for size in sizes:
        row = [results[(size, policy)] for policy in policies]
        print(f"  {row[0].max_entries:>11}" + "".join(
            f"  {1 - r.hit_rate:>9.1%} ({r.builds:>7,})" for r in row))


register("simulate", Command(
    "simulate traffic (Zipf popularity, builds, TTL, invalidations) to size the cache",
    _run_simulate, _simulate_arguments,
))


# ------------------------------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with one subparser per registered command."""
    parser = argparse.ArgumentParser(
        prog="snak-runtime",
        description="In-process cache of live agent runtimes.",
    )
    subparsers = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_OneLineErrors
    )
    for name, command in COMMANDS.items():
        sub = subparsers.add_parser(name, help=command.help, description=command.help)
        if command.add_arguments is not None:
            command.add_arguments(sub)
        sub.set_defaults(run=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; 0 on success, 2 for a usage or configuration error."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except BrokenPipeError:
        # The reader went away (`snak-runtime demo | head`): stop quietly, as Unix tools do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except GuardConfigError as exc:
        # One line naming the file and the key, no traceback.
        message = " ".join(str(exc).split())
        print(f"snak-runtime: error: {message}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
