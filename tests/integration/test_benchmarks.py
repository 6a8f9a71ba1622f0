"""The benchmark runs in its quick mode and writes its JSON and Markdown (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

@pytest.mark.timeout(180)
def test_quick_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=170, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "results.json").read_text())
    groups = {s["group"] for s in data["series"]}
    assert groups == {"hit", "install", "flight", "expiry"}
    hit = [s for s in data["series"] if s["group"] == "hit"]
    assert {s["size"] for s in hit} == {64, 1_000, 10_000, 100_000}
    assert {s["dist"] for s in hit} == {"uniform", "zipf"}
    assert all(len(s["samples_ns"]) == data["meta"]["rounds"] for s in hit)
    assert {row["system"] for row in data["memory"]} >= {"TTLCache"}
    table = (tmp_path / "results.md").read_text()
    assert "## Targets (issue 5)" in table
    assert "acquire+release" in table and "TTLCache" in table
    assert "met" in table or "MISSED" in table


@pytest.mark.timeout(300)
def test_quick_hit_ratio_benchmark_reports_every_family_and_policy(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hit_ratio.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=290, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "hit_ratio.json").read_text())
    families = data["families"]
    assert set(families) == {"zipf-0.9", "zipf-1.1", "one-hit", "scans", "shifting", "sessions"}
    for systems in families.values():
        assert {"LRU", "SIEVE", "S3-FIFO", "ARC", "Bélády", "W-TinyLFU (ours)"} <= set(systems)
        # our manager with eviction="lru" replays exactly as libCacheSim's LRU
        assert systems["snak_runtime[lru]"]["miss_ratio"] == systems["LRU"]["miss_ratio"]
        # nobody beats the clairvoyant bound on misses
        assert all(r["miss_vs_belady"] >= 1.0 for r in systems.values())
    for policy in data["meta"]["policies"]:
        assert all(f"snak_runtime[{policy}]" in systems for systems in families.values())
    table = (tmp_path / "hit_ratio.md").read_text()
    assert "## Targets for `eviction=\"lru\"`" in table
    assert "Miss ratio against cache size" in table
