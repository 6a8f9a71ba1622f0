"""The benchmark of issue 5: ``python benchmarks/run.py [--quick] [--plot] [--docs DIR]``.

Runs every part in one process and one event loop, then writes ``results.json`` (raw
samples) and ``results.md`` (targets and tables) to ``--out`` (``benchmarks/results/``),
plus ``results.png`` with ``--plot``. ``--docs DIR`` also copies the table and the plot to
``DIR/bench.md`` and ``DIR/bench.png``. Needs the ``bench`` extra: pip install -e '.[bench]'.

``--baseline REF`` and/or ``--option NAME=VALUE`` run only the side-by-side hit path of
compare.py instead: this working tree against the git ref REF, and/or with the constructor
keywords against without them; it writes ``compare.json`` and ``compare.md`` to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import gc
import json
import os
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

from common import FULL, QUICK, Series, Settings
from compare import CompareError, compare_markdown, parse_option, run_compare
from expiry import run_expiry
from hit_path import run_hit_path, run_install
from memory import run_memory
from report import markdown
from single_flight import run_single_flight

HERE = Path(__file__).resolve().parent
NOTES = [
    "Manager: default MonotonicClock, no removal listener, guard max_entries = size and a",
    "1 h TTL on the hit path; agents are None except in the expiry and memory parts.",
    "Peers hold the same keys and value objects; TTLCache and aiocache use `get`.",
    "The cyclic GC is off while timing (as timeit) and runs between parts.",
    "Install: seeds and values are made before timing.",
    "Single flight: the build awaits `asyncio.sleep(0)` once; the cost per waiter",
    "includes creating and gathering its task (see the gather reference line).",
    "Expiry: the sweeper's loop (pop_expired in batches of 1024, yielding between) driven",
    "directly; disposal runs the default disposer on each agent's `aclose`.",
    "Memory: after install, before any read (a lease or acquire_with_agent then caches",
    "a view per generation: see the second manager row when present).",
]


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"


def _say(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def _where() -> dict[str, str]:
    return {
        "machine": _machine(),
        "python": f"Python {platform.python_version()}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def _compare(args: argparse.Namespace, settings: Settings, options: dict[str, Any]) -> int:
    started = time.perf_counter()
    try:
        result = run_compare(args.baseline, options, quick=settings.quick, rounds=args.rounds,
                             ops=settings.hit_ops, seed=settings.seed, say=_say)
    except CompareError as exc:
        _say(f"side by side failed: {exc}")
        return 2
    meta: dict[str, Any] = {"quick": settings.quick, **_where(),
                            "elapsed_s": round(time.perf_counter() - started, 1)}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "compare.json").write_text(
        json.dumps({"meta": meta, "compare": result}, indent=1) + "\n")
    table = compare_markdown(result, meta)
    (args.out / "compare.md").write_text(table)
    _say(f"done in {meta['elapsed_s']} s")
    print(table)
    print(f"\nwritten: {args.out / 'compare.json'}, {args.out / 'compare.md'}")
    return 0


async def _run_all(settings: Settings) -> tuple[list[Series], list[dict[str, Any]]]:
    # The cyclic GC runs only between samples (see common.settle), never inside one.
    gc.disable()
    series: list[Series] = []
    series += await run_hit_path(settings, _say)
    series += await run_install(settings, _say)
    series += await run_single_flight(settings, _say)
    series += await run_expiry(settings, _say)
    memory = await run_memory(settings, _say)
    gc.enable()
    return series, memory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="fewer rounds (under 30 s)")
    parser.add_argument("--plot", action="store_true", help="also write results.png")
    parser.add_argument("--out", type=Path, default=HERE / "results",
                        help="output directory (default: benchmarks/results)")
    parser.add_argument("--docs", type=Path, default=None,
                        help="also write DIR/bench.md (and DIR/bench.png with --plot)")
    parser.add_argument("--baseline", metavar="REF", default=None,
                        help="compare the hit path side by side with this git ref of the project")
    parser.add_argument("--option", metavar="NAME=VALUE", action="append", default=[],
                        help="a manager constructor keyword for the new side only (repeatable): "
                             "reports with/without ratios")
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the side-by-side comparison (default 101; 31 with --quick)")
    args = parser.parse_args(argv)
    settings = QUICK if args.quick else FULL
    if args.baseline is not None or args.option:
        try:
            options = dict(parse_option(text) for text in args.option)
        except ValueError as exc:
            parser.error(str(exc))
        return _compare(args, settings, options)

    started = time.perf_counter()
    series, memory = asyncio.run(_run_all(settings))
    elapsed = time.perf_counter() - started
    meta: dict[str, Any] = {
        "quick": settings.quick,
        "rounds": settings.rounds,
        "settings": {k: getattr(settings, k) for k in settings.__slots__},
        **_where(),
        "elapsed_s": round(elapsed, 1),
        "versions": {name: version(name) for name in
                     ("snak-runtime", "cachetools", "async-lru", "aiocache")},
        "notes": NOTES,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"meta": meta, "series": [s.as_json() for s in series], "memory": memory}
    (args.out / "results.json").write_text(json.dumps(payload, indent=1) + "\n")
    table = markdown(series, memory, meta)
    (args.out / "results.md").write_text(table)
    if args.plot:
        from plot import plot

        plot(series, args.out / "results.png",
             f"snak_runtime: cost per operation vs cache size ({meta['machine']})")
    if args.docs is not None:
        args.docs.mkdir(parents=True, exist_ok=True)
        (args.docs / "bench.md").write_text(
            table.replace("results.png", "bench.png")
            + ("\n![cost per operation against cache size](bench.png)\n" if args.plot else ""))
        if args.plot:
            (args.docs / "bench.png").write_bytes((args.out / "results.png").read_bytes())
    _say(f"done in {elapsed:.1f} s")
    print(table)
    print(f"\nwritten: {args.out / 'results.json'}, {args.out / 'results.md'}"
          + (f", {args.out / 'results.png'}" if args.plot else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
