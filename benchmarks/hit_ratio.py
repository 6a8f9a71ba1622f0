"""Hit-ratio benchmark (issues 13, 25): misses and build-seconds of every eviction policy.

``python benchmarks/hit_ratio.py [--quick | --medium] [--held-out] [--check] [--plot]
[--jobs N] [--out DIR] [--docs DIR]``

A grid of cells: trace family (``traces.GRID``: Zipf 0.7/0.9/1.1 over 10,000 agents, one-hit
wonders, periodic scans, shifting popularity, concurrent conversations, a loop of 1.1 x the
cache, libCacheSim's synthetic Zipf and uniform readers) x cache size x cost model
(independent lognormal costs; the same costs sorted so that the most requested agents are
the cheapest; sorted so that they are the most expensive) x seed. ``--held-out`` runs
``traces.HELD_OUT`` instead (other Zipf exponents, loop ratios, session lengths, shift
periods) on other seeds: the policies were not tuned on them.

Our policies (``snak_runtime[<name>]``) replay each cell as the manager drives them
(``policy_replay.py``: the same hook calls, without the event loop; ``--check`` replays the
first cells through the manager's public API too and fails unless the outcomes are equal;
``--quick`` always goes through the manager). The peers are libCacheSim's LRU, SIEVE,
S3-FIFO, ARC, 2Q, LeCaR, Cacheus, LHD, W-TinyLFU and GDSF (unit sizes), all cost-blind,
plus a small-cache W-TinyLFU of ours (``wtinylfu.py``) and Bélády (clairvoyant, cost-blind,
for scale). Per cell, the best online peer is chosen separately for misses and for
build-seconds (the sum of the build costs of the misses: what users wait for); ratios to
it are medians over seeds of per-seed ratios.

Writes ``hit_ratio.json`` and ``hit_ratio.md`` (and ``hit_ratio.png`` with ``--plot``) to
``--out``. ``--quick`` (short traces, one seed, two sizes) is what CI runs, without
thresholds. Needs libcachesim (dev extra) and matplotlib for ``--plot`` (bench extra).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libcachesim as lcs
from policy_replay import replay_policy
from traces import COST_MODELS, GRID, HELD_OUT, Trace, cost_model
from wtinylfu import WTinyLFU

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime._policies import DEFAULT_POLICY, POLICY_NAMES
from snak_runtime.testing import FakeClock

HERE = Path(__file__).resolve().parent
NEVER_MS = 30 * 24 * 3_600_000  # the guard ceiling (30 days): longer than any trace here
BELADY = "Bélády"
_NO_FUTURE = 2**63 - 1
# Issue 25's targets, per cell (median over seeds), as ratios to the best online peer.
BUILD_TARGET = 1.05
MISS_TARGET = 1.10  # not with cheap popular agents
GEOMEAN_TARGET = 0.85  # geomean build-seconds, lognormal costs


@dataclass(frozen=True, slots=True)
class Run:
    """Settings: ``--quick`` and ``--medium`` shrink them."""

    name: str
    length: int
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]
    through_manager: bool = False


FULL = Run("full", 100_000, (1, 2, 3), (16, 32, 64, 128, 256, 512, 1024, 2048, 4096))
MEDIUM = Run("medium", 30_000, (1, 2, 3), (16, 64, 256, 1024))
QUICK = Run("quick", 6_000, (1,), (16, 256), through_manager=True)
HELD_OUT_SEEDS = (11, 12, 13)

PEERS: dict[str, Callable[..., Any]] = {
    "LRU": lcs.LRU,
    "SIEVE": lcs.Sieve,
    "S3-FIFO": lcs.S3FIFO,
    "ARC": lcs.ARC,
    "2Q": lcs.TwoQ,
    "LeCaR": lcs.LeCaR,
    "Cacheus": lcs.Cacheus,
    "LHD": lcs.LHD,
    "W-TinyLFU (libCacheSim)": lcs.WTinyLFU,
    "GDSF": lcs.GDSF,
    BELADY: lcs.Belady,
}
ONLINE = (*tuple(name for name in PEERS if name != BELADY), "W-TinyLFU (ours)")


# --------------------------------------------------------------------------- replays


async def _no_rebuild() -> None:
    return None


async def _replay_manager(requests: Sequence[int], costs: Sequence[int], capacity: int,
                          policy: str) -> tuple[int, int]:
    """(misses, build ms) through the manager's public API: one lease per request, each
    build advancing a ``FakeClock`` by the agent's cost (so the manager times it)."""
    clock = FakeClock()
    manager: AgentRuntimeManager[str, None] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=capacity, max_ttl_ms=NEVER_MS),
        settings=RuntimeCacheSettings(max_entries=str(capacity), ttl_ms=str(NEVER_MS)),
        clock=clock, eviction=policy,
    )
    names = [f"agent-{a}" for a in range(len(costs))]
    number = {name: a for a, name in enumerate(names)}
    built = [0, 0]

    async def build(agent_id: str) -> RuntimeSeed[str, None]:
        cost = costs[number[agent_id]]
        clock.advance(cost)
        built[0] += 1
        built[1] += cost
        return RuntimeSeed(agent_id=agent_id, user_id="user", cfg_version=1,
                           runtime=agent_id, rebuild=_no_rebuild)

    for a in requests:
        async with manager.lease(names[a], build=build):
            pass
    misses = manager.stats().misses
    await manager.aclose()
    if misses != built[0]:
        raise AssertionError(f"{policy}: {misses} misses but {built[0]} builds")
    return misses, built[1]


def replay_manager(requests: Sequence[int], costs: Sequence[int], capacity: int,
                   policy: str) -> tuple[int, int]:
    return asyncio.run(_replay_manager(requests, costs, capacity, policy))


def _next_uses(requests: Sequence[int]) -> list[int]:
    """For each request, the position of the next request for the same agent (Bélády)."""
    following = [_NO_FUTURE] * len(requests)
    seen: dict[int, int] = {}
    for i in range(len(requests) - 1, -1, -1):
        a = requests[i]
        following[i] = seen.get(a, _NO_FUTURE)
        seen[a] = i
    return following


def peer_misses(trace: Trace, capacity: int, name: str, following: list[int]) -> list[int]:
    """The agents of the misses of a cost-blind peer (unit sizes)."""
    # a small hash table: libCacheSim's default (2^24 buckets) costs more than the replay
    cache = PEERS[name](capacity, hashpower=16)
    request = lcs.Request()
    request.obj_size = 1  # capacity counts entries
    missed: list[int] = []
    for i, a in enumerate(trace.requests):
        request.obj_id = a + 1
        request.clock_time = i
        request.next_access_vtime = following[i]
        if not cache.get(request):
            missed.append(a)
    return missed


def wtinylfu_misses(trace: Trace, capacity: int) -> list[int]:
    cache = WTinyLFU(capacity)
    return [a for a in trace.requests if not cache.access(a)]


def measure_cell(trace: Trace, capacity: int, policies: Sequence[str],
                 through_manager: bool) -> dict[str, dict[str, tuple[int, int]]]:
    """Per cost model, per system: (misses, build ms) on one trace and cache size."""
    following = _next_uses(trace.requests)
    blind = {name: peer_misses(trace, capacity, name, following) for name in PEERS}
    blind["W-TinyLFU (ours)"] = wtinylfu_misses(trace, capacity)
    out: dict[str, dict[str, tuple[int, int]]] = {}
    for model in COST_MODELS:
        costs = cost_model(trace, model)
        row = {name: (len(m), sum(costs[a] for a in m)) for name, m in blind.items()}
        for policy in policies:
            if through_manager:
                row[f"snak_runtime[{policy}]"] = replay_manager(
                    trace.requests, costs, capacity, policy)
            else:
                misses, build_ms, _ = replay_policy(trace.requests, costs, capacity, policy)
                row[f"snak_runtime[{policy}]"] = (misses, build_ms)
        out[model] = row
    return out


def check(run: Run, families: dict[str, Callable[[int, int, int], Trace]]) -> None:
    """The direct replay equals the manager's, on the first seed of every family at the
    smallest size (AssertionError otherwise)."""
    capacity = run.sizes[0]
    for family, make in families.items():
        trace = make(run.seeds[0], min(run.length, 10_000), capacity)
        for policy in POLICY_NAMES:
            direct = replay_policy(trace.requests, trace.costs_ms, capacity, policy)[:2]
            managed = replay_manager(trace.requests, trace.costs_ms, capacity, policy)
            if direct != managed:
                raise AssertionError(f"{family} {policy}: direct {direct} != manager {managed}")
        _say(f"check {family}: the direct replay equals the manager's")


# --------------------------------------------------------------------------- the grid


def _say(message: str) -> None:
    print(f"[hit_ratio] {message}", file=sys.stderr, flush=True)


def _measure_one(job: tuple[str, int, int, int, tuple[str, ...], bool, bool]
                 ) -> tuple[int, dict[str, dict[str, tuple[int, int]]]]:
    family, seed, length, size, policies, through_manager, held_out = job
    trace = (HELD_OUT if held_out else GRID)[family](seed, length, size)
    return len(trace.requests), measure_cell(trace, size, policies, through_manager)


def measure(run: Run, families: dict[str, Callable[[int, int, int], Trace]],
            seeds: Sequence[int], policies: Sequence[str], jobs: int = 1) -> dict[str, Any]:
    """cells[family][size][model][system] = medians over seeds of miss ratio, build
    seconds and the ratios to the best online peer (chosen per seed, separately for
    misses and build-seconds) and to Bélády. ``jobs`` > 1: cells in that many processes."""
    held_out = families is HELD_OUT
    work = [(family, seed, run.length, size, tuple(policies), run.through_manager, held_out)
            for family in families for size in run.sizes for seed in seeds]
    started = time.perf_counter()
    if jobs > 1:
        import multiprocessing

        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            outcomes = pool.map(_measure_one, work, chunksize=1)
    else:
        outcomes = [_measure_one(job) for job in work]
    cells: dict[str, Any] = {}
    for (family, _, _, size, *_), outcome in zip(work, outcomes, strict=True):
        cells.setdefault(family, {}).setdefault(str(size), []).append(outcome)
    for family, by_size in cells.items():
        for size, per_seed in by_size.items():
            by_size[size] = {
                model: _summarise([(n, outcome[model]) for n, outcome in per_seed])
                for model in COST_MODELS
            }
        _say(f"{family}: done at {time.perf_counter() - started:.0f} s")
    return cells


def _summarise(rows: list[tuple[int, dict[str, tuple[int, int]]]]) -> dict[str, Any]:
    ratios: dict[str, dict[str, list[float]]] = {}
    for requests, row in rows:
        best_miss = max(1, min(row[n][0] for n in ONLINE))
        best_build = max(1, min(row[n][1] for n in ONLINE))
        belady = row[BELADY]
        for name, (misses, build_ms) in row.items():
            r = ratios.setdefault(name, {})
            for key, value in (
                ("miss_ratio", misses / requests), ("build_s", build_ms / 1000),
                ("miss_vs_best", misses / best_miss), ("build_vs_best", build_ms / best_build),
                ("miss_vs_belady", misses / max(1, belady[0])),
                ("build_vs_belady", build_ms / max(1, belady[1])),
            ):
                r.setdefault(key, []).append(value)
    return {name: {k: statistics.median(v) for k, v in r.items()} for name, r in ratios.items()}


def targets(cells: dict[str, Any], policy: str) -> dict[str, Any]:
    """Issue 25's targets for one of our policies: per cost model the worst cell of each
    ratio, the cells over each target and the geomean build-seconds."""
    ours = f"snak_runtime[{policy}]"
    out: dict[str, Any] = {}
    for model in COST_MODELS:
        build = {(f, s): c[model][ours]["build_vs_best"] for f, by in cells.items()
                 for s, c in by.items()}
        miss = {(f, s): c[model][ours]["miss_vs_best"] for f, by in cells.items()
                for s, c in by.items()}
        worst_build = max(build, key=lambda k: build[k])
        worst_miss = max(miss, key=lambda k: miss[k])
        out[model] = {
            "geomean_build": math.exp(statistics.fmean(math.log(v) for v in build.values())),
            "geomean_miss": math.exp(statistics.fmean(math.log(v) for v in miss.values())),
            "worst_build": (f"{worst_build[0]} @ {worst_build[1]}", build[worst_build]),
            "worst_miss": (f"{worst_miss[0]} @ {worst_miss[1]}", miss[worst_miss]),
            "cells": len(build),
            "over_build": sum(v > BUILD_TARGET for v in build.values()),
            "over_miss": sum(v > MISS_TARGET for v in miss.values()),
        }
    return out


# --------------------------------------------------------------------------- output


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    policies = meta["policies"]
    lines = [
        "# Misses and build-seconds by eviction policy (issues 13, 25)", "",
        f"{meta['date']}; {meta['grid']} grid: traces of {meta['length']:,} requests, seeds "
        f"{meta['seeds']}, sizes {meta['sizes']}; {meta['elapsed_s']} s. "
        f"Command: `{meta['command']}`.",
        "Ratios are medians over seeds of per-seed ratios to the best online peer of the cell "
        f"({', '.join(ONLINE)}; all cost-blind), chosen separately for misses and for "
        f"build-seconds. Targets (issue 25): build <= {BUILD_TARGET}x and misses <= "
        f"{MISS_TARGET}x in every cell (misses: not with cheap popular agents), geomean build "
        f"<= {GEOMEAN_TARGET}x with lognormal costs.", "",
        "## Summary per policy and cost model", "",
        "| policy | costs | geomean build | geomean misses | worst build (cell) "
        "| worst misses (cell) | cells > build target | cells > miss target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for policy in policies:
        name = policy + (" (default)" if policy == meta["default_policy"] else "")
        for model, t in data["targets"][policy].items():
            lines.append(
                f"| {name} | {model} | {t['geomean_build']:.3f}x | {t['geomean_miss']:.3f}x "
                f"| {t['worst_build'][1]:.3f}x ({t['worst_build'][0]}) "
                f"| {t['worst_miss'][1]:.3f}x ({t['worst_miss'][0]}) "
                f"| {t['over_build']} of {t['cells']} | {t['over_miss']} of {t['cells']}"
                + (" (no target) |" if model == "cheap-popular" else " |"))
    lines += ["", "## Every cell: misses and build-seconds vs the best online peer", "",
              "Per policy: misses (lognormal costs) / build-seconds with lognormal, "
              "cheap-popular and dear-popular costs. **Bold**: over a target.", ""]
    head = "| family | size | " + " | ".join(policies) + " | best peer (misses) | Bélády build |"
    lines += [head, "|---|---|" + "---|" * (len(policies) + 2)]
    for family, by_size in data["cells"].items():
        for size, c in by_size.items():
            row = [family, size]
            for policy in policies:
                ours = f"snak_runtime[{policy}]"
                miss = c["lognormal"][ours]["miss_vs_best"]
                parts = [_mark(miss, MISS_TARGET)]
                parts += [_mark(c[m][ours]["build_vs_best"], BUILD_TARGET) for m in COST_MODELS]
                row.append(" / ".join(parts))
            best = min(ONLINE, key=lambda n: c["lognormal"][n]["miss_vs_best"])
            row.append(f"{best} ({c['lognormal'][best]['miss_ratio']:.3f})")
            row.append(f"{c['lognormal'][BELADY]['build_vs_best']:.2f}x")
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "## Miss ratio against cache size (lognormal costs, median over seeds)", ""]
    systems = [f"snak_runtime[{p}]" for p in policies] + list(ONLINE) + [BELADY]
    for family, by_size in data["cells"].items():
        sizes = list(by_size)
        lines += [f"### {family}", "", "| system | " + " | ".join(sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for name in systems:
            lines.append(f"| {name} | " + " | ".join(
                f"{by_size[s]['lognormal'][name]['miss_ratio']:.3f}" for s in sizes) + " |")
        lines.append("")
    return "\n".join(lines)


def _mark(value: float, target: float) -> str:
    text = f"{value:.2f}"
    return f"**{text}**" if value > target else text


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = list(data["cells"])
    ours = [f"snak_runtime[{p}]" for p in data["meta"]["policies"]]
    fig, axes = plt.subplots(2, (len(families) + 1) // 2, figsize=(22, 9))
    for ax, family in zip(axes.flat, families, strict=False):
        by_size = data["cells"][family]
        sizes = [int(s) for s in by_size]
        for name in [*ours, "LRU", "S3-FIFO", "ARC", "LHD", BELADY]:
            ratios = [by_size[str(s)]["lognormal"][name]["miss_ratio"] for s in sizes]
            mine = name in ours
            ax.plot(sizes, ratios, marker="o", linewidth=2.5 if mine else 1.0,
                    linestyle="-" if mine else ("dotted" if name == BELADY else "--"),
                    label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_title(family)
        ax.set_xlabel("entries in the cache")
        ax.set_ylabel("miss ratio")
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=7)
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    fig.suptitle("Miss ratio against cache size, per eviction policy (lognormal costs)")
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="short traces, 1 seed (CI)")
    size.add_argument("--medium", action="store_true", help="30,000 requests, 4 sizes")
    parser.add_argument("--held-out", action="store_true",
                        help="the held-out families and seeds instead of the grid's")
    parser.add_argument("--check", action="store_true",
                        help="first require the direct replay to equal the manager's")
    parser.add_argument("--plot", action="store_true", help="also write hit_ratio.png")
    parser.add_argument("--render", type=Path, default=None, metavar="JSON",
                        help="measure nothing: write the table (and plot) of a saved run")
    parser.add_argument("--jobs", type=int, default=1,
                        help="cells measured in this many processes at once")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also copy the table (and plot) to DIR/hit_ratio.md (.png)")
    args = parser.parse_args(argv)
    if args.render is not None:
        data = json.loads(args.render.read_text())
        _write(data, args.render.stem, args.out, args.docs, args.plot)
        return 0
    run = QUICK if args.quick else MEDIUM if args.medium else FULL
    families = HELD_OUT if args.held_out else GRID
    seeds = HELD_OUT_SEEDS[: len(run.seeds)] if args.held_out else run.seeds
    policies = list(POLICY_NAMES)
    started = time.perf_counter()
    if args.check:
        check(run, families)
    cells = measure(run, families, seeds, policies, args.jobs)
    stem = "hit_ratio_held_out" if args.held_out else "hit_ratio"
    flags = [f for f, on in (("--quick", args.quick), ("--medium", args.medium),
                             ("--held-out", args.held_out)) if on]
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "grid": run.name,
        "length": run.length, "seeds": list(seeds), "sizes": list(run.sizes),
        "policies": policies, "default_policy": DEFAULT_POLICY,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "command": " ".join(["python benchmarks/hit_ratio.py", *flags]),
        "libcachesim": _version("libcachesim"),
    }
    data = {"meta": meta, "cells": cells,
            "targets": {p: targets(cells, p) for p in policies}}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{stem}.json").write_text(json.dumps(data, indent=1) + "\n")
    table = _write(data, stem, args.out, args.docs, args.plot)
    print(table)
    _say(f"done in {meta['elapsed_s']} s")
    return 0


def _write(data: dict[str, Any], stem: str, out: Path, docs: Path | None, with_plot: bool
           ) -> str:
    """The table (and plot) of a run, in ``out`` and, if given, ``docs``."""
    out.mkdir(parents=True, exist_ok=True)
    table = markdown(data)
    (out / f"{stem}.md").write_text(table)
    if with_plot:
        plot(data, out / f"{stem}.png")
    if docs is not None:
        docs.mkdir(parents=True, exist_ok=True)
        (docs / f"{stem}.md").write_text(
            table + (f"\n![miss ratio against cache size]({stem}.png)\n" if with_plot else ""))
        if with_plot:
            (docs / f"{stem}.png").write_bytes((out / f"{stem}.png").read_bytes())
    return table


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
