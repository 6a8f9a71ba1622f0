"""Refresh-ahead under a steady Zipf workload (issue 15), with and without, side by side.

The real manager runs in ``simulate``'s virtual time: a 5-minute TTL, an hour of traffic,
builds far shorter than the refresh window, a cache large enough for every agent, no
invalidations. It prints, for both runs: requests that waited for a build, those of the
agents requested at least once per refresh window (after their cold start), and lease
latency percentiles (virtual ms: a hit costs 0). Writes ``refresh_ahead.md`` to ``--out``.

    python benchmarks/refresh_ahead.py            # the full hour (about 20 s of CPU)
    python benchmarks/refresh_ahead.py --quick    # ten virtual minutes, 1-minute TTL
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

from snak_runtime.tools._simulate import SimulationConfig, SimulationResult, simulate

FULL = SimulationConfig(
    agents=200, zipf_s=1.1, requests=180_000, rate_per_s=50.0, build_ms=250.0,
    hold_ms=100.0, invalidations_per_s=0.0, max_entries=256, ttl_ms=300_000,
    hot_window_ms=60_000,
)
QUICK = dataclasses.replace(FULL, requests=30_000, ttl_ms=60_000, hot_window_ms=12_000)


def _rows(off: SimulationResult, on: SimulationResult) -> list[tuple[str, str, str]]:
    def both(f: str) -> tuple[str, str]:
        return f.format(r=off), f.format(r=on)

    return [
        ("requests", *both("{r.requests:,}")),
        ("virtual time", *both("{r.virtual_s:,.0f} s")),
        ("hit rate", *both("{r.hit_rate:.2%}")),
        ("builds (loads)", *both("{r.builds:,}")),
        ("refreshes (failed)", *both("{r.refreshes:,} ({r.refresh_failures})")),
        ("expirations", *both("{r.expirations:,}")),
        ("requests that waited for a build", *both("{r.waited:,}")),
        ("hot agents (requested at least once per window)", *both("{r.hot_agents:,}")),
        ("  their requests after the cold start", *both("{r.hot_requests:,}")),
        ("  of which waited for a build", *both("{r.hot_waited:,}")),
        ("lease latency p50 (virtual ms; hit = 0)", *both("{r.p50_ms:.1f}")),
        ("lease latency p99", *both("{r.p99_ms:.1f}")),
        ("lease latency max", *both("{r.max_ms:.1f}")),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run (CI, tests)")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results"))
    args = parser.parse_args()
    base = QUICK if args.quick else FULL
    window = base.hot_window_ms
    assert window is not None
    started = time.process_time()
    off = simulate(base)
    on = simulate(dataclasses.replace(base, refresh_ahead_ms=window))
    cpu_s = time.process_time() - started
    lines = [
        f"Steady Zipf workload ({base.agents} agents, s={base.zipf_s}, {base.rate_per_s:g} "
        f"requests/s, builds {base.build_ms:g} ms, holds {base.hold_ms:g} ms, TTL "
        f"{base.ttl_ms} ms, max_entries {base.max_entries}, no invalidations), "
        f"refresh window {window} ms; simulate, virtual time ({cpu_s:.1f} s of CPU).",
        "",
        "| | refresh-ahead off | refresh_ahead_ms=" + str(window) + " |",
        "|---|---:|---:|",
        *(f"| {name} | {a} | {b} |" for name, a, b in _rows(off, on)),
    ]
    text = "\n".join(lines)
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "refresh_ahead.md").write_text(text + "\n")


if __name__ == "__main__":
    main()
