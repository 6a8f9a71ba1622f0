"""Smoke test of ``benchmarks/fleet.py`` (issue 26): a tiny fleet runs end to end and prints
its table. Figures are the benchmark's to report, never asserted here (no timing in tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from redis_server import find_server_binary

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fleet.py"


def test_a_small_fleet_runs_and_reports_every_level() -> None:
    if find_server_binary() is None:
        pytest.skip("no redis-server/valkey-server (the dev extra ships one)")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--processes", "2", "--levels", "2,4", "--agents", "20",
         "--deliveries", "40", "--rate", "400"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    rows = [line.split("|")[1].strip() for line in out.splitlines() if line.startswith("|")]
    assert [row for row in rows if row.isdigit()] == ["2", "4"]  # one row per level
    assert "mode eager" in out
    assert "saturates a core" in out or "no CPU slope measured" in out
    assert "gap detections in the fleet: 0" in out
