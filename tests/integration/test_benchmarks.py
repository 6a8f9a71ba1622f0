"""The benchmark runs in its quick mode and writes its JSON and Markdown (no timing checks)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "benchmarks" / "run.py")
# Far above a run on a loaded machine (the hit-ratio one took over 290 s at load 5-10), below
# the suite's 900 s hang guard so a hang names its command.
SUBPROCESS_LIMIT_S = 840

pytestmark = pytest.mark.slow  # benchmarks: the full suite (python -m pytest --full)


def test_quick_benchmark_writes_json_and_markdown(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
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


def test_side_by_side_against_a_git_ref_reports_ratios(tmp_path: Path) -> None:
    # HEAD, extracted with git archive, against the working tree, and the working tree with a
    # constructor keyword against without it: three sides, three ratios per benchmark.
    done = subprocess.run(
        [sys.executable, RUN, "--quick", "--rounds", "15", "--baseline", "HEAD",
         "--option", "sweep_interval_ms=2000", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads((tmp_path / "compare.json").read_text())["compare"]
    assert result["rounds"] == 15
    assert set(result["sides"]) == {"baseline", "new", "new+options"}
    assert result["sides"]["baseline"]["label"].startswith("HEAD at ")
    assert result["sides"]["new+options"]["options"] == {"sweep_interval_ms": 2000}
    assert result["sides"]["new"]["options"] == {}
    keys = ["new+options/new", "new/baseline", "new+options/baseline"]
    assert result["ratios"] == keys
    systems = ["acquire+release", "acquire_with_agent+release", "async with lease",
               "miss: lease+build+install", "on_invalidate+rebuild", "evict+shadow_seed"]
    rows = result["rows"]
    assert {(r["system"], r["size"], r["dist"]) for r in rows} == {
        (name, size, dist) for name in systems for size in (64, 10_000)
        for dist in ("uniform", "zipf")}
    for row in rows:
        for side in result["sides"]:
            assert len(row["samples_ns"][side]) == 15
            assert all(ns > 0 for ns in row["samples_ns"][side])
        for key in keys:
            ratio = row["ratios"][key]
            assert math.isfinite(ratio["ratio"]) and ratio["ratio"] > 0
            assert ratio["round_ratio_p25"] <= ratio["ratio"] <= ratio["round_ratio_p75"]
    assert set(result["summary"]) == set(systems)
    for by_key in result["summary"].values():
        assert set(by_key) == set(keys)
        assert all(0 < v["geomean"] <= v["worst"] + 1e-12 for v in by_key.values())
    table = (tmp_path / "compare.md").read_text()
    assert "new/baseline geomean" in table and "new+options/new geomean" in table
    assert "Budget (new/baseline geomean <= 1.05x)" in table
    assert "async with lease | 10,000 | zipf" in table


def test_side_by_side_refuses_a_bad_ref_and_a_bad_keyword(tmp_path: Path) -> None:
    bad_ref = subprocess.run(
        [sys.executable, RUN, "--baseline", "no-such-ref-anywhere", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert bad_ref.returncode == 2
    assert "'no-such-ref-anywhere' is not a commit" in bad_ref.stderr
    bad_keyword = subprocess.run(
        [sys.executable, RUN, "--quick", "--option", "no_such_keyword=1", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert bad_keyword.returncode == 2
    assert "no_such_keyword" in bad_keyword.stderr
    assert not (tmp_path / "compare.json").exists()


def test_refresh_ahead_benchmark_reports_both_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "refresh_ahead.py"), "--quick",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    table = (tmp_path / "refresh_ahead.md").read_text()
    assert "| refresh-ahead off | refresh_ahead_ms=12000 |" in table
    row = next(line for line in table.splitlines() if "of which waited" in line)
    off, on = (cell.strip() for cell in row.strip("|").split("|")[1:])
    assert int(off.replace(",", "")) > 0 and on == "0"


def test_quick_hit_ratio_benchmark_reports_every_family_and_policy(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "hit_ratio.py"), "--quick", "--jobs", "2",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads((tmp_path / "hit_ratio.json").read_text())
    cells = data["cells"]
    assert set(cells) == {"zipf-0.7", "zipf-0.9", "zipf-1.1", "one-hit", "scans", "shifting",
                          "conversations", "loop-1.1x", "lcs-zipf", "lcs-uniform"}
    peers = {"LRU", "SIEVE", "S3-FIFO", "ARC", "2Q", "LeCaR", "Cacheus", "LHD", "GDSF",
             "Bélády", "W-TinyLFU (ours)"}
    for by_size in cells.values():
        for by_model in by_size.values():
            assert set(by_model) == {"lognormal", "cheap-popular", "dear-popular"}
            for systems in by_model.values():
                assert peers <= set(systems)
                # our manager with eviction="lru" replays exactly as libCacheSim's LRU
                assert systems["snak_runtime[lru]"]["miss_ratio"] == systems["LRU"]["miss_ratio"]
                # nobody beats the clairvoyant bound on misses
                assert all(r["miss_vs_belady"] >= 1.0 for r in systems.values())
                for policy in data["meta"]["policies"]:
                    assert f"snak_runtime[{policy}]" in systems
    table = (tmp_path / "hit_ratio.md").read_text()
    assert "## Summary per policy and cost model" in table
    assert "Miss ratio against cache size" in table
    again = subprocess.run(  # --render: the same table from the saved run, nothing measured
        [sys.executable, str(ROOT / "benchmarks" / "hit_ratio.py"), "--render",
         str(tmp_path / "hit_ratio.json"), "--out", str(tmp_path / "again")],
        capture_output=True, text=True, timeout=SUBPROCESS_LIMIT_S, check=False,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert (tmp_path / "again" / "hit_ratio.md").read_text() == table
