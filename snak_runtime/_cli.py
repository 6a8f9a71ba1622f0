"""The ``snak-runtime`` command line: ``demo``, ``config``, ``simulate`` (only the CLI prints)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from ._config import (
    _MAX_ENTRIES_KEY,
    _MAX_TTL_KEY,
    BACKOFF_CAP,
    GUARDS_PATH_VAR,
    IDLE_TTL_MS_VAR,
    MAX_ENTRIES_PER_USER_VAR,
    MAX_ENTRIES_VAR,
    MS_SETTINGS,
    REFRESH_AHEAD_VAR,
    STALE_WHILE_REBUILDING_VAR,
    TTL_JITTER_VAR,
    TTL_MS_VAR,
    TTL_SECONDS_VAR,
    GuardConfigError,
    environment_value,
    raise_guard_hint,
    resolve_limits,
    resolve_ms,
)
from ._errors import RuntimeNotCached
from ._manager import AgentRuntimeManager
from ._policies import POLICY_NAMES
from ._seed import RuntimeSeed
from ._simulate_params import PARAMETERS, Parameter, SimulationConfigError
from ._stats import CacheStats
from ._trace import TraceError, read_trace
from .containers import RuntimeContainer
from .testing import FakeClock

if TYPE_CHECKING:
    from ._simulate import SimulationConfig, SimulationResult

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
    warnings = [*limits.warnings, *collected]

    guard_origin = (
        f"file {settings.guards_config_path} ({GUARDS_PATH_VAR})"
        if settings.guards_config_path
        else f"built-in defaults ({GUARDS_PATH_VAR} unset)"
    )
    print("snak_runtime effective limits")
    print(f"  max_entries     {limits.max_entries:>10}   from {limits.max_entries_source}")
    print(f"  default_ttl_ms  {limits.default_ttl_ms:>10}   from {limits.default_ttl_source}")
    timings = (
        ("build_timeout_ms", limits.build_timeout_ms, limits.build_timeout_source),
        ("dispose_timeout_ms", limits.dispose_timeout_ms, limits.dispose_timeout_source),
        ("sweep_interval_ms", limits.sweep_interval_ms, limits.sweep_interval_source),
        ("backoff_cap_ms", *backoff_cap),
        ("refresh_ahead_ms", limits.refresh_ahead_ms, limits.refresh_ahead_source),
        ("stale_while_rebuilding", str(limits.stale_while_rebuilding).lower(),
         limits.stale_while_rebuilding_source),
        ("idle_ttl_ms", limits.idle_ttl_ms, limits.idle_ttl_source),
        ("ttl_jitter", limits.ttl_jitter, limits.ttl_jitter_source),
    )
    for name, value, source in timings:
        print(f"  {name:<18}{value:>8}   from {source}")
    quota = "none" if limits.max_entries_per_user is None else limits.max_entries_per_user
    print(f"  max_entries_per_user {quota:>5}   from {limits.max_entries_per_user_source}")
    print(f"guard ceilings: {guard_origin}")
    print(f"  max_entries     {guards.max_entries:>10}")
    print(f"  max_ttl_ms      {guards.max_ttl_ms:>10}")
    if guards.max_entries_per_user is not None:
        print(f"  max_entries_per_user {guards.max_entries_per_user:>5}")
    print(f"  {raise_guard_hint(f'{_MAX_ENTRIES_KEY} / {_MAX_TTL_KEY}')}")
    print(
        "  built-in guards: "
        + ", ".join(f"{setting.keyword} <= {setting.guard}" for setting in MS_SETTINGS)
    )
    print("environment:")
    raw_values = (
        (MAX_ENTRIES_VAR, settings.max_entries),
        (TTL_MS_VAR, settings.ttl_ms),
        (TTL_SECONDS_VAR, settings.ttl_seconds),
        (GUARDS_PATH_VAR, settings.guards_config_path),
        (MAX_ENTRIES_PER_USER_VAR, settings.max_entries_per_user),
        *((s.variable, environment_value(s.variable)) for s in MS_SETTINGS),
        (IDLE_TTL_MS_VAR, settings.idle_ttl_ms),
        (TTL_JITTER_VAR, settings.ttl_jitter),
    )
    width = max(len(name) for name, _ in raw_values)
    raw_values += (  # issue 15's options (longer names: not widening the column above)
        (REFRESH_AHEAD_VAR, environment_value(REFRESH_AHEAD_VAR)),
        (STALE_WHILE_REBUILDING_VAR, environment_value(STALE_WHILE_REBUILDING_VAR)),
    )
    for name, raw in raw_values:
        shown = "(unset)" if raw is None else repr(raw)
        print(f"  {name:<{width}}  {shown}")
    print(f"warnings: {len(warnings)}")
    for warning in warnings:
        print(f"  - {warning}")
    return EXIT_OK


# ------------------------------------------------------------------------------------------ demo

_BUILD_COST_S = 0.02


@dataclass(slots=True)
class _DemoAgent:
    """A stand-in for a live agent: something to close."""

    agent_id: str
    cfg_version: int
    closed: bool = False

    async def aclose(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class _DemoRuntime:
    agent_id: str
    cfg_version: int


class _DemoBackend:
    """The demo's "database": agent configurations with versions and owners."""

    def __init__(self) -> None:
        self.versions = {"support-bot": 1, "sales-bot": 1}
        self.owners = {"support-bot": "alice", "sales-bot": "bob"}
        self.agents: list[_DemoAgent] = []

    async def build(self, agent_id: str) -> RuntimeSeed[_DemoRuntime, _DemoAgent] | None:
        if agent_id not in self.versions:
            return None
        await asyncio.sleep(_BUILD_COST_S)  # the visible cost of building a runtime
        version = self.versions[agent_id]
        agent = _DemoAgent(agent_id, version)
        self.agents.append(agent)

        async def rebuild() -> RuntimeSeed[_DemoRuntime, _DemoAgent] | None:
            return await self.build(agent_id)

        return RuntimeSeed(
            agent_id=agent_id,
            user_id=self.owners[agent_id],
            cfg_version=version,
            runtime=_DemoRuntime(agent_id, version),
            rebuild=rebuild,
            agent=agent,
        )


_COUNTER_NOTES = (
    "which counter counts what:",
    "  removals   every entry that left the cache, by cause: explicit = evict(),",
    "             invalidated = replaced by a rebuild, expired = TTL, idle = unused for",
    "             idle_ttl_ms, capacity, replaced, shutdown, resync",
    "  evictions  capacity removals only (more than max_entries cached): {evictions} here;",
    "             evict() is counted in removals as explicit, never in evictions",
    "  loads      builds a lease ran on a miss; rebuilds: those on_invalidate() ran",
    "  disposals  agents closed, each once, after its last pin (also at shutdown)",
)


def _elapsed_ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.2f} ms"


def _stats_table(stats: CacheStats) -> list[str]:
    rows: list[tuple[str, str]] = []
    for field in dataclasses.fields(stats):
        value = getattr(stats, field.name)
        if field.name == "removals":
            text = ", ".join(f"{cause}={n}" for cause, n in value.items() if n) or "-"
        elif not isinstance(value, int | float):
            continue  # histograms and other structured fields: see the metrics exporters
        elif isinstance(value, float):
            text = f"{value:.1f}"
        else:
            text = str(value)
        rows.append((field.name, text))
    rows.append(("hit_rate", f"{stats.hit_rate:.2f}"))
    width = max(len(name) for name, _ in rows)
    return [f"  {name:<{width}}  {text}" for name, text in rows]


async def _resources(pending: Awaitable[None] | None) -> None:
    """``init_resources()``/``shutdown_resources()`` return an awaitable for async resources."""
    if pending is not None:
        await pending


async def _demo(say: Callable[[str], None]) -> CacheStats:
    def step(action: str, outcome: str) -> None:
        say(f"  {action:<30} -> {outcome}")

    container = _container()
    clock = FakeClock()
    # Simulated time lets the demo show an expiry without waiting for the TTL.
    container.clock.override(clock)
    backend = _DemoBackend()
    await _resources(container.init_resources())
    manager: AgentRuntimeManager[_DemoRuntime, _DemoAgent] = container.manager()
    try:
        limits = manager.limits
        say("snak_runtime demo: the embedded cache (one process, no Redis, no files)")
        say(f"limits: max_entries={limits.max_entries} from {limits.max_entries_source}")
        say(f"        default_ttl_ms={limits.default_ttl_ms} from {limits.default_ttl_source}")

        started = time.perf_counter()
        found = await manager.acquire("support-bot")
        step("acquire support-bot", f"{'hit' if found else 'miss'} ({_elapsed_ms(started)})")

        started = time.perf_counter()
        async with manager.lease("support-bot", user_id="alice", build=backend.build) as lease:
            step(
                "lease support-bot as alice",
                f"miss, built v{lease.cfg_version} ({_elapsed_ms(started)})",
            )
        for _ in range(2):
            started = time.perf_counter()
            async with manager.lease("support-bot", user_id="alice") as lease:
                step(
                    "lease support-bot as alice",
                    f"hit v{lease.cfg_version} ({_elapsed_ms(started)})",
                )

        try:
            async with manager.lease("support-bot", user_id="mallory"):
                pass
        except RuntimeNotCached:
            step("lease support-bot as mallory", "denied (not yours; existence not revealed)")

        backend.versions["support-bot"] = 2
        started = time.perf_counter()
        await manager.on_invalidate("support-bot", 2)
        version = manager.version_of("support-bot")
        step("invalidate support-bot (v2)", f"rebuilt v{version} ({_elapsed_ms(started)})")
        await manager.on_invalidate("support-bot", 2)
        step("invalidate support-bot (v2)", "duplicate event ignored, no rebuild")

        seed = await backend.build("sales-bot")
        if seed is not None:
            await manager.shadow_seed(seed)
            step("shadow_seed sales-bot (v1)", f"cached, size={manager.size}")
        removed = await manager.evict("sales-bot")
        step(
            "evict sales-bot",
            f"{'removed' if removed else 'absent'}, size={manager.size}"
            " (cause explicit: in removals, not in evictions)",
        )

        clock.advance(manager.default_ttl_ms)
        say(f"  (simulated clock moves {manager.default_ttl_ms} ms, the default TTL)")
        found = await manager.acquire("support-bot")
        step("acquire support-bot", "hit" if found else "miss: expired, removed")
        if found is not None:
            manager.release("support-bot")
    finally:
        await _resources(container.shutdown_resources())
    closed = sum(agent.closed for agent in backend.agents)
    step("shutdown", f"{closed} of {len(backend.agents)} agents disposed")
    stats = manager.stats()
    say("stats:")
    for line in _stats_table(stats):
        say(line)
    for line in _COUNTER_NOTES:
        say(line.format(evictions=stats.evictions))
    return stats


def _run_demo(args: argparse.Namespace) -> int:
    asyncio.run(_demo(print))
    return EXIT_OK


register("demo", Command("run the quickstart scenario on the embedded cache", _run_demo))
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
    from ._simulate import SimulationConfig

    defaults = SimulationConfig()
    for parameter in PARAMETERS.values():  # one table: flag, bounds and help (_simulate_params)
        default = getattr(defaults, parameter.field)
        parser.add_argument(
            parameter.flag,
            dest=parameter.field,
            type=_flag_type(parameter),
            default=default,
            metavar=parameter.kind.__name__.upper(),
            help=parameter.help if default is None else f"{parameter.help} (%(default)s)",
        )
    parser.add_argument("--stale-while-rebuilding", action="store_true",
                        help="the manager's stale_while_rebuilding (off unless given)")
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
        "--sizes", type=_sizes, default=None, metavar="N,N,...",
        help="print the miss-ratio curve over these cache sizes (max_entries)",
    )


def _sizes(text: str) -> list[int]:
    """``16,64,256``: each a valid --max-entries, at most 32 of them."""
    parameter = PARAMETERS["max_entries"]
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts or len(parts) > _MAX_SIZES:
        raise argparse.ArgumentTypeError(f"1 to {_MAX_SIZES} sizes, got {text!r}")
    try:
        return sorted({int(parameter.parse(part)) for part in parts})
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


_MAX_SIZES = 32


def _progress_bar(done: int, total: int) -> None:
    filled = 30 * done // total
    end = "\n" if done == total else ""
    print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {done:,}/{total:,} requests",
          end=end, file=sys.stderr, flush=True)


def _run_simulate(args: argparse.Namespace) -> int:
    from ._simulate import SimulationConfig, simulate

    guards = _container().guards()  # as `config` reads it: a bad GUARDS_CONFIG_PATH exits 2
    try:
        trace = read_trace(args.trace) if args.trace is not None else None
    except TraceError as exc:
        print(f"snak-runtime simulate: error: --trace: {exc}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    try:
        config = SimulationConfig(
            **{name: getattr(args, name) for name in PARAMETERS}, guards=guards, trace=trace,
            stale_while_rebuilding=args.stale_while_rebuilding,
        )
    except SimulationConfigError as exc:  # bounds on the run as a whole (span, events)
        print(f"snak-runtime simulate: error: {exc.cli_message}", file=sys.stderr)
        return EXIT_CONFIG_ERROR
    policies: list[str | None] = list(args.policies or [None])
    if len(policies) > 1 or args.sizes is not None:
        with _library_logs_muted():
            _compare_policies(config, policies, args.sizes or [config.max_entries], simulate)
        return EXIT_OK
    config = dataclasses.replace(config, eviction=policies[0])
    # A progress bar is for a person watching: not for a pipe or a log file. Failed builds
    # are counted in the summary, not logged one by one.
    with _library_logs_muted():
        r = simulate(config, _progress_bar if sys.stderr.isatty() else None)
    print(f"simulated {_workload(config)} over {r.virtual_s:,.0f} s of virtual time,"
          f" in {r.wall_s:.1f} s")
    print(f"  cache           max_entries={r.max_entries}  ttl_ms={r.ttl_ms}"
          f"  idle_ttl_ms={r.idle_ttl_ms or 'off'}  ttl_jitter={r.ttl_jitter:g}"
          f"  eviction={r.eviction}  peak size={r.peak_size}  mean size={r.mean_size:.1f}")
    print(f"  hit rate        {r.hit_rate:.1%}  ({r.hits:,} hits, {r.misses:,} misses)")
    if config.one_time_share:
        print(f"  returning       hit rate {r.returning_hit_rate:.1%}"
              f"  ({r.returning_hits:,} of {r.returning_requests:,} requests for the"
              f" {config.agents:,} returning agents; the rest were one-time agents)")
    print(f"  builds          {r.builds:,}  (failures {r.build_failures:,};"
          f" build_timeout_ms={r.build_timeout_ms})")
    print(f"  failed requests {r.failed_requests:,}  (their build failed)")
    print(f"  peak builds/s   {r.peak_builds_per_s:,}  (in second {r.peak_builds_second:,};"
          f" loads and rebuilds started; {config.deploy:,} agents deployed at 0 s)")
    if config.trace is not None:
        print(f"  denied          {r.denied:,}  (another user's agent was cached)")
    print(f"  evictions       {r.evictions:,}  (capacity)")
    print(f"  expirations     {r.expirations:,}  (idle: {r.idle_expirations:,})")
    if r.max_entries_per_user is not None or config.burst_agents:
        print(f"  quota           max_entries_per_user={r.max_entries_per_user}"
              f"  quota evictions {r.quota_evictions:,}")
    if config.burst_agents or config.users > 1:
        print(f"  other users     hit rate {r.other_hit_rate:.1%}  ({r.other_requests:,}"
              f" requests; the burst of {config.burst_agents:,} agents is not counted)")
    if config.burst_agents or config.users > 1:
        print(f"  mid-run window  hit rate {r.window_hit_rate:.1%}  ({r.window_requests:,}"
              " requests of the other users from the middle on, where a burst starts)")
    print(f"  invalidations   {r.invalidations:,}  (rebuilds {r.rebuilds:,},"
          f" failures {r.rebuild_failures:,})")
    print(f"  lease latency   p50 {r.p50_ms:.1f} ms  p99 {r.p99_ms:.1f} ms  max {r.max_ms:.1f} ms"
          "  (virtual: waiting for builds)")
    print(f"  waited          {r.waited:,} requests waited for a build"
          f"  (refreshes {r.refreshes:,}, failed {r.refresh_failures:,})")
    if r.hot_agents:
        print(f"  hot agents      {r.hot_agents:,} requested at least once per "
              f"{config.hot_window_ms or config.refresh_ahead_ms} ms: {r.hot_waited:,} of their "
              f"{r.hot_requests:,} later requests waited")
    return EXIT_OK


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
