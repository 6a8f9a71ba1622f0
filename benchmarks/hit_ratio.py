"""Hit-ratio benchmark (issue 13): how many builds, and build-seconds, each eviction policy costs.

``python benchmarks/hit_ratio.py [--quick] [--plot] [--out DIR] [--docs DIR]``

The manager is driven through its public API: one ``async with manager.lease(agent_id,
build=build)`` per request, in order, where ``build`` advances a ``FakeClock`` by that
agent's build cost (so the manager times it on its own clock) and the TTL outlasts the
trace: capacity is the only reason to miss. The same traces (``traces.py``) go through
libCacheSim's LRU, SIEVE, S3-FIFO, ARC, W-TinyLFU and Bélády (clairvoyant, cost-blind),
and through a W-TinyLFU of ours (``wtinylfu.py``): libCacheSim's 1% window rounds to no
window at 64 entries and its miss ratio goes to ~1.0, which the table shows.

Reported per family, median over seeds: miss ratio and build-seconds (the sum of the build
costs of the misses: what users wait for), each as a ratio to the best online peer (the
best of LRU, SIEVE, S3-FIFO, ARC and our W-TinyLFU on that seed) and to Bélády. Then the
miss-ratio curve against cache size (16 to 1,024 entries) per policy. Writes
``hit_ratio.json`` and ``hit_ratio.md`` (and ``hit_ratio.png`` with ``--plot``) to
``--out``. ``--quick`` (shorter traces, two seeds, three sizes) is what CI runs, without
thresholds. Needs libcachesim (dev extra) and matplotlib for ``--plot`` (bench extra).
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import libcachesim as lcs
from traces import FAMILIES, Trace
from wtinylfu import WTinyLFU

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.testing import FakeClock

HERE = Path(__file__).resolve().parent
CAPACITY = 64  # the original's default max_entries
NEVER_MS = 30 * 24 * 3_600_000  # the guard ceiling (30 days): longer than any trace here
ONLINE = ("LRU", "SIEVE", "S3-FIFO", "ARC", "W-TinyLFU (ours)")
BELADY = "Bélády"
_NO_FUTURE = 2**63 - 1


@dataclass(frozen=True, slots=True)
class Run:
    """Settings: ``--quick`` shrinks them."""

    length: int
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]
    curve_length: int


FULL = Run(length=100_000, seeds=(1, 2, 3, 4, 5), sizes=(16, 32, 64, 128, 256, 512, 1024),
           curve_length=50_000)
QUICK = Run(length=20_000, seeds=(1, 2), sizes=(16, 64, 256), curve_length=20_000)


@dataclass(frozen=True, slots=True)
class Outcome:
    misses: int
    build_ms: int
    requests: int

    @property
    def miss_ratio(self) -> float:
        return self.misses / self.requests

    @property
    def build_s(self) -> float:
        return self.build_ms / 1000


def manager_policies() -> list[str]:
    """Our eviction policies, by name (``"lru"`` alone before the policy registry exists)."""
    try:
        from snak_runtime._policies import POLICY_NAMES
    except ImportError:
        return ["lru"]
    return list(POLICY_NAMES)


def _accepts_eviction() -> bool:
    return "eviction" in inspect.signature(AgentRuntimeManager.__init__).parameters


async def _no_rebuild() -> None:
    return None


async def _replay_manager(trace: Trace, capacity: int, policy: str) -> Outcome:
    clock = FakeClock()
    extra: dict[str, Any] = {"eviction": policy} if _accepts_eviction() else {}
    manager: AgentRuntimeManager[str, None] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=capacity, max_ttl_ms=NEVER_MS),
        settings=RuntimeCacheSettings(max_entries=str(capacity), ttl_ms=str(NEVER_MS)),
        clock=clock, **extra,
    )
    costs = trace.costs_ms
    names = [f"agent-{a}" for a in range(trace.agents)]
    number = {name: a for a, name in enumerate(names)}
    built = [0, 0]  # builds, build milliseconds

    async def build(agent_id: str) -> RuntimeSeed[str, None]:
        cost = costs[number[agent_id]]
        clock.advance(cost)
        built[0] += 1
        built[1] += cost
        return RuntimeSeed(agent_id=agent_id, user_id="user", cfg_version=1,
                           runtime=agent_id, rebuild=_no_rebuild)

    for a in trace.requests:
        async with manager.lease(names[a], build=build):
            pass
    misses = manager.stats().misses
    await manager.aclose()
    if misses != built[0]:
        raise AssertionError(f"{policy}: {misses} misses but {built[0]} builds")
    return Outcome(misses, built[1], len(trace.requests))


def replay_manager(trace: Trace, capacity: int, policy: str) -> Outcome:
    return asyncio.run(_replay_manager(trace, capacity, policy))


def _next_uses(requests: Sequence[int]) -> list[int]:
    """For each request, the position of the next request for the same agent (Bélády)."""
    following = [_NO_FUTURE] * len(requests)
    seen: dict[int, int] = {}
    for i in range(len(requests) - 1, -1, -1):
        a = requests[i]
        following[i] = seen.get(a, _NO_FUTURE)
        seen[a] = i
    return following


PEERS: dict[str, Callable[[int], Any]] = {
    "LRU": lcs.LRU,
    "SIEVE": lcs.Sieve,
    "S3-FIFO": lcs.S3FIFO,
    "ARC": lcs.ARC,
    "W-TinyLFU (libCacheSim)": lcs.WTinyLFU,
    BELADY: lcs.Belady,
}


def replay_peer(trace: Trace, capacity: int, name: str, following: list[int]) -> Outcome:
    # a small hash table: libCacheSim's default (2^24 buckets) costs more than the replay
    cache = PEERS[name](capacity, hashpower=16)
    request = lcs.Request()
    request.obj_size = 1  # capacity counts entries
    costs = trace.costs_ms
    misses = build_ms = 0
    for i, a in enumerate(trace.requests):
        request.obj_id = a + 1
        request.clock_time = i
        request.next_access_vtime = following[i]
        if not cache.get(request):
            misses += 1
            build_ms += costs[a]
    return Outcome(misses, build_ms, len(trace.requests))


def replay_wtinylfu(trace: Trace, capacity: int) -> Outcome:
    cache = WTinyLFU(capacity)
    costs = trace.costs_ms
    misses = build_ms = 0
    for a in trace.requests:
        if not cache.access(a):
            misses += 1
            build_ms += costs[a]
    return Outcome(misses, build_ms, len(trace.requests))


def replay_all(trace: Trace, capacity: int, policies: Sequence[str]) -> dict[str, Outcome]:
    """Every system on one trace: ours as ``snak_runtime[<policy>]``, then the peers."""
    out = {f"snak_runtime[{p}]": replay_manager(trace, capacity, p) for p in policies}
    following = _next_uses(trace.requests)
    for name in PEERS:
        out[name] = replay_peer(trace, capacity, name, following)
    out["W-TinyLFU (ours)"] = replay_wtinylfu(trace, capacity)
    return out


def _say(message: str) -> None:
    print(f"[hit_ratio] {message}", file=sys.stderr, flush=True)


def measure(run: Run, policies: Sequence[str]) -> dict[str, Any]:
    """Per family and seed, every system's outcome, plus ratios to the best online peer
    and to Bélády on the same seed."""
    families: dict[str, Any] = {}
    for family, make in FAMILIES.items():
        rows: list[dict[str, Any]] = []
        for seed in run.seeds:
            started = time.perf_counter()
            outcomes = replay_all(make(seed, run.length), CAPACITY, policies)
            best_miss = min(outcomes[n].misses for n in ONLINE)
            best_build = min(outcomes[n].build_ms for n in ONLINE)
            belady = outcomes[BELADY]
            rows.append({
                name: {
                    "miss_ratio": o.miss_ratio,
                    "build_s": o.build_s,
                    "miss_vs_best": o.misses / best_miss,
                    "build_vs_best": o.build_ms / best_build,
                    "miss_vs_belady": o.misses / belady.misses,
                    "build_vs_belady": o.build_ms / belady.build_ms,
                    "miss_vs_lru": o.misses / outcomes["LRU"].misses,
                }
                for name, o in outcomes.items()
            })
            _say(f"{family} seed {seed}: {time.perf_counter() - started:.1f} s")
        systems = list(rows[0])
        families[family] = {
            name: {key: statistics.median(r[name][key] for r in rows) for key in rows[0][name]}
            for name in systems
        }
    return families


def curve(run: Run, policies: Sequence[str]) -> dict[str, Any]:
    """Miss ratio against cache size per system, per family (first seed only)."""
    out: dict[str, Any] = {}
    for family, make in FAMILIES.items():
        trace = make(run.seeds[0], run.curve_length)
        by_system: dict[str, list[float]] = {}
        for size in run.sizes:
            for name, o in replay_all(trace, size, policies).items():
                by_system.setdefault(name, []).append(o.miss_ratio)
        out[family] = by_system
        _say(f"curve {family} done")
    return out


def default_policy() -> str | None:
    try:
        from snak_runtime._policies import DEFAULT_POLICY
    except ImportError:
        return None
    return str(DEFAULT_POLICY)


def targets(families: dict[str, Any], policy: str) -> list[tuple[str, str, bool]]:
    """Issue 13's targets for one of our policies, as (target, measured, met)."""
    ours = f"snak_runtime[{policy}]"
    build = {f: families[f][ours]["build_vs_best"] for f in families}
    miss = {f: families[f][ours]["miss_vs_best"] for f in families}
    vs_lru = {f: families[f][ours]["miss_vs_lru"] for f in families}
    under = sum(1 for v in build.values() if v <= 0.92)
    need = min(3, len(build))

    def listing(values: dict[str, float]) -> str:
        return ", ".join(f"{f} {v:.3f}x" for f, v in values.items())

    return [
        (f"build-seconds <= 0.92x best online on >= {need} families",
         f"{under} families: {listing(build)}", under >= need),
        ("build-seconds <= 1.00x best online on every family",
         f"worst {max(build.values()):.3f}x", max(build.values()) <= 1.0),
        ("miss ratio <= 1.05x best online on every family",
         f"{listing(miss)}", max(miss.values()) <= 1.05),
        ("miss ratio never above LRU's", f"worst {max(vs_lru.values()):.3f}x of LRU",
         max(vs_lru.values()) <= 1.0),
    ]


def markdown(data: dict[str, Any]) -> str:
    meta = data["meta"]
    lines = [
        "# Hit ratio and build-seconds by eviction policy (issue 13)",
        "",
        f"{meta['date']}; traces of {meta['length']:,} requests, seeds {meta['seeds']}, "
        f"capacity {CAPACITY} entries; {meta['elapsed_s']} s. Command: `{meta['command']}`.",
        "Ratios are medians over seeds of per-seed ratios; *best* is the best online peer "
        f"({', '.join(ONLINE)}) on that seed.",
        "",
    ]
    default = meta.get("default_policy")
    for policy in meta["policies"]:
        lines += [f"## Targets for `eviction=\"{policy}\"`"
                  + (" (the default)" if policy == default else ""), "",
                  "| target | measured | |", "|---|---|---|"]
        for name, measured, met in targets(data["families"], policy):
            lines.append(f"| {name} | {measured} | {'met' if met else 'MISSED'} |")
        lines.append("")
    for family, systems in data["families"].items():
        lines += [f"## {family}", "",
                  "| system | miss ratio | vs best | vs Bélády | build-seconds | vs best "
                  "| vs Bélády |", "|---|---|---|---|---|---|---|"]
        for name, r in systems.items():
            lines.append(
                f"| {name} | {r['miss_ratio']:.4f} | {r['miss_vs_best']:.3f}x "
                f"| {r['miss_vs_belady']:.3f}x | {r['build_s']:,.0f} s "
                f"| {r['build_vs_best']:.3f}x | {r['build_vs_belady']:.3f}x |")
        lines.append("")
    lines += [f"## Miss ratio against cache size (seed {meta['seeds'][0]}, "
              f"{meta['curve_length']:,} requests)", ""]
    sizes = meta["sizes"]
    for family, systems in data["curve"].items():
        lines += [f"### {family}", "", "| system | " + " | ".join(str(s) for s in sizes) + " |",
                  "|---|" + "---|" * len(sizes)]
        for name, ratios in systems.items():
            lines.append(f"| {name} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")
        lines.append("")
    return "\n".join(lines)


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = data["meta"]["sizes"]
    families = list(data["curve"])
    fig, axes = plt.subplots(2, (len(families) + 1) // 2, figsize=(18, 10))
    for ax, family in zip(axes.flat, families, strict=False):
        for name, ratios in data["curve"][family].items():
            if name == "W-TinyLFU (libCacheSim)":
                continue  # degenerate at small sizes; in the tables
            ours = name.startswith("snak_runtime")
            ax.plot(sizes, ratios, marker="o", linewidth=2.5 if ours else 1.2,
                    linestyle="-" if ours else ("dotted" if name == BELADY else "--"),
                    label=name)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sizes, [str(s) for s in sizes])
        ax.set_title(family)
        ax.set_xlabel("entries in the cache")
        ax.set_ylabel("miss ratio")
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    for ax in list(axes.flat)[len(families):]:
        ax.axis("off")
    fig.suptitle("Miss ratio against cache size, per eviction policy")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short traces, 2 seeds (CI)")
    parser.add_argument("--plot", action="store_true", help="also write hit_ratio.png")
    parser.add_argument("--out", type=Path, default=HERE / "results")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also copy the table (and plot) to DIR/hit_ratio.md (.png)")
    args = parser.parse_args(argv)
    run = QUICK if args.quick else FULL
    policies = manager_policies()
    started = time.perf_counter()
    families = measure(run, policies)
    curves = curve(run, policies)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "length": run.length, "seeds": list(run.seeds), "sizes": list(run.sizes),
        "curve_length": run.curve_length,
        "policies": policies, "default_policy": default_policy(),
        "elapsed_s": round(time.perf_counter() - started, 1),
        "command": "python benchmarks/hit_ratio.py" + (" --quick" if args.quick else ""),
        "libcachesim": _version("libcachesim"),
    }
    data = {"meta": meta, "families": families, "curve": curves}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "hit_ratio.json").write_text(json.dumps(data, indent=1) + "\n")
    table = markdown(data)
    (args.out / "hit_ratio.md").write_text(table)
    if args.plot:
        plot(data, args.out / "hit_ratio.png")
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        (args.docs / "hit_ratio.md").write_text(
            table + ("\n![miss ratio against cache size](hit_ratio.png)\n" if args.plot else ""))
        if args.plot:
            (args.docs / "hit_ratio.png").write_bytes((args.out / "hit_ratio.png").read_bytes())
    print(table)
    _say(f"done in {meta['elapsed_s']} s")
    return 0


def _version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


if __name__ == "__main__":
    raise SystemExit(main())
