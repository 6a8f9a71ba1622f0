"""The operator benchmark (benchmarks/snapshot.py) keeps running (no timing checks)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow  # a benchmark: the full suite (python -m pytest --full)


def test_snapshot_benchmark_runs_and_writes_its_samples(tmp_path: Path) -> None:
    out = tmp_path / "snapshot.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "snapshot.py"), "--quick", "--json", str(out)],
        # far above a run on a loaded machine, below the suite's 900 s hang guard
        capture_output=True, text=True, timeout=840, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert {row["size"] for row in rows} == {64, 1_000, 10_000}
    systems = {row["system"] for row in rows}
    assert {"snapshot()", "peek(one id)", "evict_user (a user's 10 entries)"} <= systems
    assert all(len(row["samples_ns"]) == 3 and row["median_ns"] > 0 for row in rows)
    assert "| snapshot() |" in done.stdout
