"""``simulate --policy adaptive`` (issue 25) compares the adaptive policy with ``lru`` and
``cost-aware`` on a user's own trace."""

from __future__ import annotations

from pathlib import Path

import pytest

from snak_runtime.tools._cli import main


def test_simulate_compares_adaptive_with_lru_and_cost_aware_on_a_trace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "requests.csv"
    # a loop over 5 agents through a cache of 4: LRU misses every request
    rows = [f"agent-{i % 5},alice,{100 * i}" for i in range(200)]
    trace.write_text("# agent_id,user_id,timestamp_ms\n" + "\n".join(rows) + "\n")
    code = main(["simulate", "--trace", str(trace), "--policy", "adaptive", "--policy", "lru",
                 "--policy", "cost-aware", "--sizes", "4", "--invalidations", "0",
                 "--build-ms", "10", "--hold-ms", "0"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split() == ["max_entries", "adaptive", "lru", "cost-aware"]
    cells = lines[2].split()
    assert cells[0] == "4"
    adaptive, lru = (float(cell.rstrip("%")) for cell in cells[1::3][:2])
    assert lru == 100.0 and adaptive < lru
