"""``simulate`` never ignores a flag it was given (issue 27): a combination that cannot apply is
a one-line usage error, ``--requests`` cuts a trace, and a bad cache variable is warned about."""

from __future__ import annotations

from pathlib import Path

import pytest

from snak_runtime.tools._cli import main

_QUICK = ["--invalidations", "0", "--build-ms", "10", "--hold-ms", "0"]


@pytest.fixture
def trace(tmp_path: Path) -> Path:
    path = tmp_path / "requests.csv"
    path.write_text("".join(f"agent-{i % 7},alice,{i * 10}\n" for i in range(63)))
    return path


@pytest.mark.parametrize("flags", [["--agents", "5"], ["--one-time", "0.5"],
                                   ["--agents", "5", "--one-time", "0.5"], ["--users", "3"]])
def test_a_synthetic_workload_flag_beside_a_trace_is_a_usage_error(
    trace: Path, flags: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(trace), *flags, *_QUICK]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1 and "cannot be used with --trace" in captured.err
    for flag in flags[::2]:
        assert flag in captured.err


def test_requests_replays_the_first_requests_of_a_trace(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(trace), "--requests", "10", *_QUICK]) == 0
    assert capsys.readouterr().out.startswith("simulated 10 trace requests for 7 agents")


def test_without_requests_the_whole_trace_is_replayed(
    trace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["simulate", "--trace", str(trace), *_QUICK]) == 0
    assert capsys.readouterr().out.startswith("simulated 63 trace requests for 7 agents")


def test_max_entries_beside_sizes_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "--requests", "200", "--sizes", "8,16", "--max-entries", "4",
                 *_QUICK]) == 2
    err = capsys.readouterr().err
    assert "--max-entries cannot be used with --sizes" in err


def test_a_bad_cache_variable_is_warned_about_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "abc")
    assert main(["simulate", "--requests", "200", *_QUICK]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    assert "AGENT_RUNTIME_CACHE_MAX_ENTRIES" in warnings[0] and "'abc'" in warnings[0]
