"""Side by side: the hit path and the slow paths (miss -> build -> install, on_invalidate with
its rebuild, evict) of this working tree against a git ref of the project, and
the working tree with some constructor keywords against the working tree without them.

``python benchmarks/run.py --baseline REF [--option NAME=VALUE ...]`` (see run.py).

Each side runs in its own worker process (this file, ``--worker``) that imports
``snak_runtime`` from its own copy: the ref's package is extracted with ``git archive``,
the working tree's copied, side by side in a temporary directory, so both versions are
measured in one run whatever the ref is. The worker touches the public API only
(``AgentRuntimeManager``, ``RuntimeSeed``, ``shadow_seed``, ``acquire``,
``acquire_with_agent``, ``release``, ``lease``), so older refs work as long as they have
those. The parent takes the sides in turn sample by sample, in a rotating order (A B, B A,
...), so drifting machine noise hits every side alike; each sample is preceded by a short
untimed pass that warms the caches after the switch of process, and is the fastest of
three runs of the key sequence (on a loaded machine most runs are cut by a preemption; the
fastest is the least disturbed; it roughly halved the spread of the ratios between
identical sides). Every worker is pinned to the same CPU: left to the scheduler, each
process tends to stay on its own core, and when the cores are unequally busy (a shared
machine) one side ran 20% slower than the other for a whole run, whatever the
interleaving. Every worker gets the same ``PYTHONHASHSEED``, so that its dicts of the same
keys have the same layout. The median of the rounds is reported per side, and per
benchmark the median of the per-round ratios: the two samples of a round ran a few
milliseconds apart, so a burst of load from elsewhere mostly cancels out of their ratio
(the ratio of the medians is in the JSON too).
"""

from __future__ import annotations

import ast
import asyncio
import functools
import gc
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# The hit-path benchmarks compared (the names of hit_path.py's table).
ACQUIRE = "acquire+release"
ACQUIRE_AGENT = "acquire_with_agent+release"
LEASE = "async with lease"
HIT_SYSTEMS = (ACQUIRE, ACQUIRE_AGENT, LEASE)
# The slow paths (issue 24): a lease that misses, builds and installs (evicting the least
# recently used entry to make room); on_invalidate with a newer version, whose rebuild
# installs a new generation; evict of a cached entry, then shadow_seed to put it back.
MISS = "miss: lease+build+install"
INVALIDATE = "on_invalidate+rebuild"
EVICT = "evict+shadow_seed"
SLOW_SYSTEMS = (MISS, INVALIDATE, EVICT)
SYSTEMS = HIT_SYSTEMS + SLOW_SYSTEMS
SLOW_DIVISOR = 8  # a slow-path sample runs this many times fewer operations than a hit's
SIZES = (64, 10_000)
DISTS = ("uniform", "zipf")
QUICK_ROUNDS = 31
FULL_ROUNDS = 101
WARM_OPS = 200  # untimed operations before each sample
REPEATS = 3  # a sample is the fastest of this many runs of the key sequence
BUDGET = 1.05  # the speed rule: new options off cost at most this much of the code before

# Side names.
BASELINE = "baseline"
NEW = "new"
OPTIONS = "new+options"


class CompareError(Exception):
    """A side could not be set up (bad ref, bad option, a worker that failed)."""


def parse_option(text: str) -> tuple[str, Any]:
    """``NAME=VALUE``: VALUE as a Python literal (``3``, ``True``, ``'x'``), else a string."""
    name, sep, raw = text.partition("=")
    if not sep or not name.isidentifier():
        raise ValueError(f"--option wants NAME=VALUE, got {text!r}")
    try:
        value: Any = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return name, value


# --- the worker: one side, in its own process -------------------------------------------

Run = Callable[[list[str]], Awaitable[None]]


class _Runtime:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


async def _systems(keys: list[str], options: dict[str, Any]) -> tuple[dict[str, Run], Any]:
    from common import make_manager, make_seed

    manager = make_manager(len(keys), **options)
    for key in keys:
        await manager.shadow_seed(make_seed(key, _Runtime(key)))

    async def run_acquire(seq: list[str]) -> None:
        acquire, release = manager.acquire, manager.release
        for key in seq:
            await acquire(key)
            release(key)

    async def run_acquire_agent(seq: list[str]) -> None:
        acquire, release = manager.acquire_with_agent, manager.release
        for key in seq:
            await acquire(key)
            release(key)

    async def run_lease(seq: list[str]) -> None:
        lease = manager.lease
        for key in seq:
            async with lease(key):
                pass

    runs = {ACQUIRE: run_acquire, ACQUIRE_AGENT: run_acquire_agent, LEASE: run_lease}
    runs.update(await _slow_systems(keys, options))
    return runs, manager


async def _slow_systems(keys: list[str], options: dict[str, Any]) -> dict[str, Run]:
    """The slow paths, each on a manager of its own (LRU, so that a miss always misses)."""
    from common import make_manager, make_seed

    options = {"eviction": "lru", **options}
    # miss: a pool of ids twice the capacity, taken in turn: each was evicted since its last
    # lease (LRU), so every lease misses, builds, installs and evicts one entry
    missing = make_manager(len(keys), **options)
    pool = [f"miss-{key}" for key in keys] + [f"miss2-{key}" for key in keys]
    cursor = [0]

    async def build(agent_id: str) -> Any:
        return make_seed(agent_id, _Runtime(agent_id))

    async def run_miss(seq: list[str]) -> None:
        lease, n, i = missing.lease, len(pool), cursor[0]
        for _ in seq:
            async with lease(pool[i % n], build=build):
                pass
            i += 1
        cursor[0] = i

    # invalidate: every event is one version newer than the cached entry's
    invalidated = make_manager(len(keys), **options)
    versions = dict.fromkeys(keys, 1)

    def seed_of(agent_id: str) -> Any:
        seed = make_seed(agent_id, _Runtime(agent_id), version=versions[agent_id])

        async def rebuild() -> Any:
            return seed_of(agent_id)

        return type(seed)(seed.agent_id, seed.user_id, seed.cfg_version, seed.runtime, rebuild)

    for key in keys:
        await invalidated.shadow_seed(seed_of(key))

    async def run_invalidate(seq: list[str]) -> None:
        invalidate = invalidated.on_invalidate
        for key in seq:
            version = versions[key] + 1
            versions[key] = version
            await invalidate(key, version)

    evicted = make_manager(len(keys), **options)
    seeds = {key: make_seed(key, _Runtime(key)) for key in keys}
    for seed in seeds.values():
        await evicted.shadow_seed(seed)

    async def run_evict(seq: list[str]) -> None:
        evict, shadow_seed = evicted.evict, evicted.shadow_seed
        for key in seq:
            await evict(key)
            await shadow_seed(seeds[key])

    return {MISS: run_miss, INVALIDATE: run_invalidate, EVICT: run_evict}


async def _serve(options: dict[str, Any], ops: int, seed: int) -> None:
    from common import agent_keys, key_sequence, settle, timed

    runs: dict[tuple[str, int], Run] = {}
    seqs: dict[tuple[int, str], list[str]] = {}
    managers = []
    for size in SIZES:
        keys = agent_keys(size)
        systems, manager = await _systems(keys, options)
        managers.append(manager)
        runs.update({(name, size): run for name, run in systems.items()})
        for dist in DISTS:
            seqs[size, dist] = key_sequence(keys, dist, ops, seed + size)
    settle()
    _reply({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("quit"):
            break
        run = runs[request["system"], request["size"]]
        seq = seqs[request["size"], request["dist"]]
        if request["system"] in SLOW_SYSTEMS:
            seq = seq[: max(1, len(seq) // SLOW_DIVISOR)]
        await run(seq[:WARM_OPS])
        timings = [await timed(functools.partial(run, seq), len(seq)) for _ in range(REPEATS)]
        _reply({"ns": min(timings)})
    for manager in managers:
        close = getattr(manager, "aclose", None)
        if close is not None:
            await close()


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def worker_main(argv: list[str]) -> int:
    """``compare.py --worker SRC OPTIONS_JSON OPS SEED CPU``: ``snak_runtime`` from ``SRC``."""
    src, options_json, ops, seed, cpu = argv
    if int(cpu) >= 0:
        os.sched_setaffinity(0, {int(cpu)})
    sys.path.insert(0, src)
    import snak_runtime

    where = Path(snak_runtime.__file__ or "").resolve()
    if not where.is_relative_to(Path(src).resolve()):
        _reply({"error": f"snak_runtime imported from {where}, not from {src}"})
        return 1
    try:
        gc.disable()
        asyncio.run(_serve(json.loads(options_json), int(ops), int(seed)))
    except Exception as exc:
        _reply({"error": f"{type(exc).__name__}: {exc}"})
        raise
    return 0


# --- the parent: sources, workers, interleaved rounds, report ---------------------------


def _git(*args: str, cwd: Path = ROOT) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CompareError(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def _package_root(tree: Path) -> Path:
    for candidate in (tree, tree / "src"):
        if (candidate / "snak_runtime" / "__init__.py").is_file():
            return candidate
    raise CompareError(f"no snak_runtime package in {tree}")


def _commit(ref: str) -> str:
    try:
        return _git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
    except CompareError:
        raise CompareError(f"{ref!r} is not a commit of the repository at {ROOT}") from None


def _extract(commit: str, into: Path, scratch: Path) -> None:
    """The package of ``commit`` (``git archive``) as ``into/snak_runtime``."""
    archive = subprocess.run(["git", "archive", "--format=tar", commit], cwd=ROOT,
                             capture_output=True, check=False)
    if archive.returncode != 0:
        raise CompareError(f"git archive {commit}: {archive.stderr.decode().strip()}")
    tar_path = scratch / "ref.tar"
    tar_path.write_bytes(archive.stdout)
    with tarfile.open(tar_path) as tar:
        tar.extractall(scratch / "tree", filter="data")
    shutil.copytree(_package_root(scratch / "tree") / "snak_runtime", into / "snak_runtime")


@contextmanager
def sources(baseline: str | None) -> Iterator[tuple[Path, Path | None, str | None]]:
    """Copies of the working tree's package and of the ref's, side by side in one temporary
    directory (paths of the same length: each side loads its modules the same way), and
    the ref's commit."""
    commit = _commit(baseline) if baseline is not None else None
    with tempfile.TemporaryDirectory(prefix="snak-compare-") as tmp:
        work = Path(tmp) / "work"
        shutil.copytree(_package_root(ROOT) / "snak_runtime", work / "snak_runtime",
                        ignore=shutil.ignore_patterns("__pycache__"))
        base = None
        if commit is not None:
            base = Path(tmp) / "base"
            scratch = Path(tmp) / "scratch"
            scratch.mkdir()
            _extract(commit, base, scratch)
            shutil.rmtree(scratch)
        yield work, base, commit


def _working_tree() -> str:
    try:
        head = _git("rev-parse", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", "snak_runtime")
    except CompareError:
        return "working tree"
    return f"working tree at {head[:10]}" + (" + uncommitted changes" if dirty else "")


@dataclass(slots=True)
class Side:
    name: str
    label: str
    src: Path
    options: dict[str, Any]
    proc: subprocess.Popen[str] | None = None
    samples: dict[tuple[str, int, str], list[float]] = field(default_factory=dict)

    def start(self, ops: int, seed: int, cpu: int | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "compare.py"), "--worker", str(self.src),
             json.dumps(self.options), str(ops), str(seed), str(-1 if cpu is None else cpu)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=HERE,
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
        )

    def ask(self, request: dict[str, Any] | None = None) -> dict[str, Any]:
        assert self.proc is not None
        stdin: IO[str] | None = self.proc.stdin
        stdout: IO[str] | None = self.proc.stdout
        assert stdin is not None and stdout is not None
        if request is not None:
            stdin.write(json.dumps(request) + "\n")
            stdin.flush()
        line = stdout.readline()
        reply: dict[str, Any] = json.loads(line) if line else {"error": "worker exited"}
        if "error" in reply:
            raise CompareError(f"{self.name} ({self.label}): {reply['error']}")
        return reply

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            if self.proc.poll() is None and self.proc.stdin is not None:
                self.proc.stdin.write(json.dumps({"quit": True}) + "\n")
                self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def _ratio_pairs(sides: list[Side]) -> list[tuple[str, str]]:
    names = [side.name for side in sides]
    pairs = []
    if OPTIONS in names:
        pairs.append((OPTIONS, NEW))
    if BASELINE in names:
        pairs.append((NEW, BASELINE))
        if OPTIONS in names:
            pairs.append((OPTIONS, BASELINE))
    return pairs


def shared_cpu() -> int | None:
    """The one CPU every worker is pinned to (None where affinity is not supported)."""
    getaffinity = getattr(os, "sched_getaffinity", None)
    return max(getaffinity(0)) if getaffinity is not None else None


def _measure(sides: list[Side], rounds: int, ops: int, seed: int,
             say: Callable[[str], None]) -> None:
    cpu = shared_cpu()
    try:
        for side in sides:
            side.start(ops, seed, cpu)
        for side in sides:
            side.ask()  # ready: keys installed
        cells = [(name, size, dist) for size in SIZES for dist in DISTS for name in SYSTEMS]
        for side in sides:
            side.samples = {cell: [] for cell in cells}
        for r in range(rounds):
            order = sides[r % len(sides):] + sides[:r % len(sides)]
            for cell in cells:
                name, size, dist = cell
                for side in order:
                    reply = side.ask({"system": name, "size": size, "dist": dist})
                    side.samples[cell].append(float(reply["ns"]))
            if (r + 1) % 5 == 0 or r + 1 == rounds:
                say(f"side by side: round {r + 1}/{rounds}")
    finally:
        for side in sides:
            side.stop()


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 2:
        return (values[0], values[0]) if values else (math.nan, math.nan)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def _summarise(sides: list[Side], rounds: int, ops: int) -> dict[str, Any]:
    by_name = {side.name: side for side in sides}
    pairs = _ratio_pairs(sides)
    rows = []
    for cell in sides[0].samples:
        name, size, dist = cell
        row: dict[str, Any] = {"system": name, "size": size, "dist": dist,
                               "median_ns": {}, "samples_ns": {}, "ratios": {}}
        for side in sides:
            row["median_ns"][side.name] = statistics.median(side.samples[cell])
            row["samples_ns"][side.name] = side.samples[cell]
        for top, bottom in pairs:
            paired = [a / b for a, b in zip(by_name[top].samples[cell],
                                            by_name[bottom].samples[cell], strict=True)]
            low, high = _quartiles(paired)
            row["ratios"][f"{top}/{bottom}"] = {
                "ratio": statistics.median(paired),
                "ratio_of_medians": row["median_ns"][top] / row["median_ns"][bottom],
                "round_ratio_p25": low, "round_ratio_p75": high,
            }
        rows.append(row)
    summary: dict[str, dict[str, dict[str, float]]] = {}
    for name in SYSTEMS:
        summary[name] = {}
        for top, bottom in pairs:
            key = f"{top}/{bottom}"
            ratios = [row["ratios"][key]["ratio"] for row in rows if row["system"] == name]
            summary[name][key] = {
                "geomean": math.exp(statistics.fmean(math.log(x) for x in ratios)),
                "worst": max(ratios),
            }
    return {
        "rounds": rounds, "ops_per_sample": ops, "cpu": shared_cpu(), "warm_ops": WARM_OPS,
        "repeats": REPEATS,
        "budget": BUDGET,
        "sides": {side.name: {"label": side.label, "options": side.options} for side in sides},
        "ratios": [f"{top}/{bottom}" for top, bottom in pairs],
        "summary": summary, "rows": rows,
    }


def run_compare(baseline: str | None, options: dict[str, Any], *, quick: bool,
                rounds: int | None, ops: int, seed: int,
                say: Callable[[str], None]) -> dict[str, Any]:
    """Measure the sides named by ``baseline`` and ``options``; raises CompareError."""
    rounds = rounds if rounds is not None else (QUICK_ROUNDS if quick else FULL_ROUNDS)
    if rounds < 1:
        raise CompareError("--rounds must be at least 1")
    if baseline is None and not options:
        raise CompareError("nothing to compare: give --baseline REF or --option NAME=VALUE")
    label = _working_tree()
    with sources(baseline) as (work, base, commit):
        sides = [Side(NEW, label, work, {})]
        if options:
            shown = ", ".join(f"{k}={v!r}" for k, v in options.items())
            sides.append(Side(OPTIONS, f"{label} with {shown}", work, dict(options)))
        if base is not None and commit is not None:
            sides.insert(0, Side(BASELINE, f"{baseline} at {commit[:10]}", base, {}))
        say(f"side by side: {' | '.join(f'{s.name} = {s.label}' for s in sides)}")
        _measure(sides, rounds, ops, seed, say)
    return _summarise(sides, rounds, ops)


def _x(ratio: float) -> str:
    return f"{ratio:.3f}x"


def compare_markdown(result: dict[str, Any], meta: dict[str, Any]) -> str:
    ratios: list[str] = result["ratios"]
    sides: dict[str, Any] = result["sides"]
    lines = [
        "# Side by side: hit path and slow paths",
        "",
        f"{meta['machine']}, {meta['python']}, {meta['date']}. Each side in its own process,",
        f"taking turns sample by sample (rotating order), median of {result['rounds']} rounds "
        f"of {result['ops_per_sample']:,} operations",
        f"(each the fastest of {result['repeats']} runs after {result['warm_ops']} untimed "
        f"ones), all pinned to CPU {result['cpu']}. "
        "A ratio is the median of the per-round ratios; spread: their 25th-75th percentiles.",
        "",
    ]
    lines += [f"- **{name}**: {side['label']}" for name, side in sides.items()]
    lines += ["", "## Summary (over sizes and distributions)", ""]
    head = ["benchmark"] + [f"{key} geomean | {key} worst" for key in ratios]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---" * (1 + 2 * len(ratios)) + "|")
    for name, by_key in result["summary"].items():
        cells = [name] + [f"{_x(by_key[k]['geomean'])} | {_x(by_key[k]['worst'])}"
                          for k in ratios]
        lines.append("| " + " | ".join(cells) + " |")
    if f"{NEW}/{BASELINE}" in ratios:
        key = f"{NEW}/{BASELINE}"
        over = [name for name, by_key in result["summary"].items()
                if by_key[key]["geomean"] > result["budget"]]
        lines += ["", f"Budget ({key} geomean <= {result['budget']}x): "
                  + (f"over for {', '.join(over)}" if over else "within, every benchmark")]
    lines += ["", "## Per size and distribution", ""]
    head = ["benchmark", "size", "dist"] + [f"{name} µs" for name in sides] + [
        f"{key} (spread)" for key in ratios]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---" * len(head) + "|")
    for row in result["rows"]:
        cells = [row["system"], f"{row['size']:,}", row["dist"]]
        cells += [f"{row['median_ns'][name] / 1000:.3f}" for name in sides]
        for key in ratios:
            r = row["ratios"][key]
            cells.append(f"{_x(r['ratio'])} ({r['round_ratio_p25']:.2f}-"
                         f"{r['round_ratio_p75']:.2f})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        raise SystemExit(worker_main(sys.argv[2:]))
    raise SystemExit("compare.py is run by run.py: python benchmarks/run.py --baseline REF")
