"""The Markdown report: targets of issue 5 (met or missed, with the measured ratio) and
one table per part, every cost also given as a ratio to the floor of the same run."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from common import DISTS, SIZES, Series
from expiry import AFTER, BEFORE, SWEEP, SWEEP_DISPOSE, WAITING
from hit_path import (
    ACQUIRE,
    ACQUIRE_AGENT,
    FLOOR,
    HIT_SYSTEMS,
    INSTALL,
    INSTALL_SYSTEMS,
    LEASE,
    LEASE_METRICS,
    MANAGER_HIT,
    TTL_LOCK,
    TTL_SET,
)
from memory import MANAGER, MANAGER_READ, TTL
from single_flight import FLIGHT_SYSTEMS, ONE_ID, SUSPENDED


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    limit: str
    measured: str
    met: bool


class Results:
    """Medians by (group, system, size, dist)."""

    def __init__(self, series: Iterable[Series]) -> None:
        self.series = {(s.group, s.system, s.size, s.dist): s for s in series}

    def median(self, group: str, system: str, size: int, dist: str) -> float:
        found = self.series.get((group, system, size, dist))
        return found.median_ns if found is not None else math.nan

    def floor(self, size: int, dist: str = "uniform") -> float:
        return self.median("hit", FLOOR, size, dist)

    def find(self, group: str, system: str) -> Series | None:
        for (g, name, _, _), s in self.series.items():
            if g == group and name == system:
                return s
        return None


def _us(ns: float) -> str:
    return "n/a" if math.isnan(ns) else f"{ns / 1000:.3f} µs"


def _x(ratio: float) -> str:
    return "n/a" if math.isnan(ratio) else f"{ratio:.2f}x"


def _worst(pairs: list[tuple[float, str]]) -> tuple[float, str]:
    pairs = [p for p in pairs if not math.isnan(p[0])]
    return max(pairs) if pairs else (math.nan, "")


def targets(res: Results, memory: list[dict[str, Any]]) -> list[Target]:
    out: list[Target] = []
    for system, limit in ((ACQUIRE, 6.0), (ACQUIRE_AGENT, 6.0), (LEASE, 10.0)):
        ratio, where = _worst([
            (res.median("hit", system, size, dist) / res.floor(size, dist), f"{size:,} {dist}")
            for size in SIZES for dist in DISTS
        ])
        out.append(Target(f"{system} vs floor at the same size (worst)", f"<= {limit:g}x",
                          f"{_x(ratio)} at {where}", ratio <= limit))
    flat: list[tuple[float, str]] = []
    for system in MANAGER_HIT:
        for dist in DISTS:
            flat.append((res.median("hit", system, SIZES[-1], dist)
                         / res.median("hit", system, SIZES[0], dist), f"{system}, {dist}"))
    flat.append((res.median("install", INSTALL, SIZES[-1], "new ids")
                 / res.median("install", INSTALL, SIZES[0], "new ids"), "shadow_seed install"))
    ratio, where = _worst(flat)
    floor_growth = _worst([(res.floor(SIZES[-1], d) / res.floor(SIZES[0], d), d) for d in DISTS])
    out.append(Target(f"flat: cost at {SIZES[-1]:,} / cost at {SIZES[0]} (worst operation)",
                      "<= 3x", f"{_x(ratio)} ({where}); the floor itself: {_x(floor_growth[0])}",
                      ratio <= 3.0))
    versus: list[tuple[float, str]] = []
    for system in MANAGER_HIT:
        for size in SIZES:
            for dist in DISTS:
                versus.append((res.median("hit", system, size, dist)
                               / res.median("hit", TTL_LOCK, size, dist),
                               f"{system}, {size:,} {dist}"))
    ratio, where = _worst(versus)
    out.append(Target("hit path vs TTLCache.get + Lock, every size (worst)", "< 1x",
                      f"{_x(ratio)} ({where})", ratio < 1.0))
    observed = [
        res.median("hit", LEASE_METRICS, size, dist) / res.median("hit", LEASE, size, dist)
        for size in SIZES for dist in DISTS
    ]
    observed = [r for r in observed if not math.isnan(r)]
    if observed:
        mid = statistics.median(observed)
        out.append(Target(
            "lease with a Prometheus collector registered / without (median over sizes)",
            "unchanged (<= 1.1x, noise)",
            f"{_x(mid)} (range {_x(min(observed))} to {_x(max(observed))})", mid <= 1.1))
    ratio, where = _worst([
        (res.median("install", INSTALL, size, "new ids")
         / res.median("install", TTL_SET, size, "new ids"), f"{size:,}") for size in SIZES
    ])
    out.append(Target("install at capacity vs TTLCache set + Lock, every size (worst)", "< 1x",
                      f"{_x(ratio)} (at {where})", ratio < 1.0))
    per_entry = {row["system"]: row["bytes_per_entry"] for row in memory}
    if MANAGER in per_entry and TTL in per_entry:
        ratio = per_entry[MANAGER] / per_entry[TTL]
        read = per_entry.get(MANAGER_READ, math.nan) / per_entry[TTL]
        out.append(Target(
            "memory per entry vs TTLCache (after install; after a read of each)", "<= 2x",
            f"{_x(ratio)} ({per_entry[MANAGER]:.0f} B vs {per_entry[TTL]:.0f} B); "
            f"{_x(read)} after reads", max(ratio, read) <= 2.0))
    one = res.find("flight", ONE_ID)
    if one is not None:
        builds = one.extra.get("builds_per_round", [])
        per_waiter = one.median_ns
        tasks = res.median("flight", SUSPENDED, one.size, "-")
        ok = bool(builds) and all(b == 1 for b in builds) and per_waiter - tasks < 5000
        out.append(Target(
            f"single flight: {one.size:,} waiters on one id",
            "1 build, < 5 µs/waiter (manager's share: minus a task that suspends once)",
            f"builds per round {sorted(set(builds))}; {_us(per_waiter)}/waiter, "
            f"{_us(per_waiter - tasks)} net of the {_us(tasks)} a gathered task suspending "
            "once costs", ok))
    before = res.find("expiry", BEFORE)
    waiting = res.find("expiry", WAITING)
    if before is not None and waiting is not None:
        ratio = waiting.median_ns / before.median_ns
        out.append(Target("hit while expired entries wait to be swept / before they expired",
                          "unchanged (<= 1.3x, noise)", _x(ratio), ratio <= 1.3))
    return out


def _hit_table(res: Results, dist: str) -> list[str]:
    head = "| system | " + " | ".join(f"{size:,} entries" for size in SIZES) + " |"
    lines = [head, "|---" * (len(SIZES) + 1) + "|"]
    for system in HIT_SYSTEMS:
        cells = []
        for size in SIZES:
            ns = res.median("hit", system, size, dist)
            cells.append(f"{_us(ns)} ({_x(ns / res.floor(size, dist))})")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines


def _install_table(res: Results) -> list[str]:
    lines = ["| system | " + " | ".join(f"{size:,} entries" for size in SIZES) + " |",
             "|---" * (len(SIZES) + 1) + "|"]
    for system in INSTALL_SYSTEMS:
        cells = []
        for size in SIZES:
            ns = res.median("install", system, size, "new ids")
            cells.append(f"{_us(ns)} ({_x(ns / res.floor(size))})")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return lines


def markdown(series: list[Series], memory: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    res = Results(series)
    lines = [
        "# snak_runtime benchmark",
        "",
        f"One run of `python benchmarks/run.py{' --quick' if meta['quick'] else ''}` on "
        f"{meta['machine']}; {meta['python']}; {meta['date']}. Every number is the median of "
        f"{meta['rounds']} interleaved rounds in one process and one event loop, and the "
        "ratios (`x`) are against the floor measured in the same run at the same size "
        "(an awaited coroutine doing one dict lookup). Absolute times move with the "
        "machine; read the ratios.",
        "",
        "## Targets (issue 5)",
        "",
        "| target | limit | measured | |",
        "|---|---|---|---|",
    ]
    for t in targets(res, memory):
        lines.append(f"| {t.name} | {t.limit} | {t.measured} | {'met' if t.met else 'MISSED'} |")
    for dist in DISTS:
        label = "uniform keys" if dist == "uniform" else "Zipf(1.1) keys"
        lines += ["", f"## Hit path, {label} (per operation, x floor)", ""]
        lines += _hit_table(res, dist)
    lines += ["", "## Install at capacity: a new id, one LRU eviction (x floor, uniform)", ""]
    lines += _install_table(res)
    lines += ["", "## Single flight (per waiter, tasks created and gathered)", "",
              "| system | per waiter | x floor (64) | builds per round |", "|---|---|---|---|"]
    for system in FLIGHT_SYSTEMS:
        s = res.find("flight", system)
        if s is None:
            continue
        builds = s.extra.get("builds_per_round")
        shown = "-" if builds is None else ", ".join(str(b) for b in sorted(set(builds)))
        lines.append(f"| {system} ({s.size:,} waiters) | {_us(s.median_ns)} | "
                     f"{_x(s.median_ns / res.floor(SIZES[0]))} | {shown} |")
    lines += ["", "## Expiry (live hits: 1,000 live keys beside the expired ones)", "",
              "| measurement | cost | x floor (100,000) |", "|---|---|---|"]
    for key in (BEFORE, WAITING, AFTER, SWEEP, SWEEP_DISPOSE):
        s = res.find("expiry", key)
        if s is not None:
            lines.append(f"| {s.system} | {_us(s.median_ns)} | "
                         f"{_x(s.median_ns / res.floor(SIZES[-1]))} |")
    lines += ["", f"## Memory per entry at {memory[0]['entries']:,} entries (tracemalloc)" if memory
              else "", "", "| system | bytes per entry | x TTLCache |", "|---|---|---|"]
    ttl = next((row["bytes_per_entry"] for row in memory if row["system"] == TTL), math.nan)
    for row in memory:
        lines.append(f"| {row['system']} | {row['bytes_per_entry']:.0f} | "
                     f"{_x(row['bytes_per_entry'] / ttl)} |")
    lines += ["", "Notes: " + " ".join(meta.get("notes", [])), ""]
    return "\n".join(lines)
