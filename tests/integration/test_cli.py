"""``python -m snak_runtime demo|config``: output and exit codes, through a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from snak_runtime import __main__ as entry_point
from snak_runtime.tools._cli import COMMANDS, main

ROOT = Path(__file__).resolve().parents[2]
# The machine's own cache, guard and Redis settings must not reach the CLI under test.
_OURS = ("AGENT_RUNTIME_", "GUARDS_CONFIG_PATH", "REDIS_", "AGENT_CFG_")


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(_OURS)}
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-m", "snak_runtime", *args],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=300,  # generous: a loaded machine is slow, never wrong
        check=False,
    )


def _guards_json(**cache: object) -> str:
    return json.dumps({"global": {}, "agent_runtime": {"cache": cache}})


def _guards_file(tmp_path: Path, **cache: object) -> Path:
    path = tmp_path / "guards.json"
    path.write_text(_guards_json(**cache))
    return path


def test_script_entry_point_exists() -> None:
    assert entry_point.main is main
    assert {"demo", "config"} <= set(COMMANDS)


# ---------------------------------------------------------------------------- demo


def test_demo_runs_the_scenario_and_prints_stats() -> None:
    result = run_cli("demo")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    out = result.stdout
    assert "no Redis, no files" in out
    assert "max_entries=64 from guard (defaults)" in out
    for expected in (
        "acquire support-bot            -> miss",
        "miss, built v1",
        "hit v1",
        "denied",
        "rebuilt v2",
        "duplicate event ignored",
        "evict sales-bot                -> removed",
        "miss: expired, removed",
        "3 of 3 agents disposed",
    ):
        assert expected in out, expected
    stats_text, notes = out.split("stats:\n", 1)[1].split("which counter counts what:\n")
    table = dict(line.split(maxsplit=1) for line in stats_text.splitlines() if line)
    assert table["hits"] == "2"
    assert table["misses"] == "3"
    assert table["denied"] == "1"
    assert table["loads"] == "1"
    assert table["rebuilds"] == "1"
    assert table["disposals"] == "3"
    assert table["size"] == "0"
    assert table["removals"] == "expired=1, invalidated=1, explicit=1"
    # `evict` said "removed" yet evictions is 0: the output says why.
    assert table["evictions"] == "0"
    assert "(cause explicit: in removals, not in evictions)" in out
    assert "  evictions  capacity removals only" in notes
    assert "  removals   every entry that left the cache, by cause: explicit = evict()" in notes


def test_demo_honours_the_guard_file(tmp_path: Path) -> None:
    path = _guards_file(tmp_path, max_entries=4, max_ttl_ms=2_000)
    result = run_cli("demo", GUARDS_CONFIG_PATH=str(path))
    assert result.returncode == 0, result.stderr
    assert f"max_entries=4 from guard file {path}" in result.stdout
    assert "(simulated clock moves 2000 ms, the default TTL)" in result.stdout


# ---------------------------------------------------------------------------- config


def test_config_defaults() -> None:
    result = run_cli("config")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = result.stdout.splitlines()
    assert lines[1].split() == ["max_entries", "64", "from", "guard", "(defaults)"]
    assert lines[2].split() == ["default_ttl_ms", "300000", "from", "guard", "(defaults)"]
    assert "built-in defaults (GUARDS_CONFIG_PATH unset)" in result.stdout
    assert "AGENT_RUNTIME_CACHE_TTL_MS                (unset)" in result.stdout
    assert lines[-1] == "warnings: 0"


def test_config_shows_sources_from_the_environment_and_guard_file(tmp_path: Path) -> None:
    path = _guards_file(tmp_path, max_entries=10, max_ttl_ms=60_000)
    result = run_cli(
        "config",
        GUARDS_CONFIG_PATH=str(path),
        AGENT_RUNTIME_CACHE_MAX_ENTRIES="5",
        AGENT_RUNTIME_CACHE_TTL_SECONDS="30",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "max_entries              5   from AGENT_RUNTIME_CACHE_MAX_ENTRIES=5" in out
    assert "default_ttl_ms       30000   from AGENT_RUNTIME_CACHE_TTL_SECONDS=30" in out
    assert f"guard ceilings: file {path} (GUARDS_CONFIG_PATH)" in out
    assert "AGENT_RUNTIME_CACHE_MAX_ENTRIES           '5'" in out
    assert out.splitlines()[-1] == "warnings: 0"


def test_config_shows_the_per_user_quota_capped_by_its_optional_guard(tmp_path: Path) -> None:
    path = _guards_file(tmp_path, max_entries=64, max_ttl_ms=60_000, max_entries_per_user=8)
    result = run_cli(
        "config", GUARDS_CONFIG_PATH=str(path), AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER="20"
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  max_entries_per_user     8   from AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER=20 " \
        "capped to guard 8" in lines
    assert "  max_entries_per_user     8" in lines  # the guard ceiling
    assert "  AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER  '20'" in lines
    assert lines[-2:] == [
        "warnings: 1",
        "  - AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER=20 is above the guard "
        "agent_runtime.cache.max_entries_per_user=8; capped to 8 (to raise the guard, set "
        "agent_runtime.cache.max_entries_per_user in the guards JSON file named by "
        "GUARDS_CONFIG_PATH)",
    ]


def test_config_lists_every_warning_once_on_stdout() -> None:
    result = run_cli(
        "config",
        AGENT_RUNTIME_CACHE_MAX_ENTRIES="1e3",
        AGENT_RUNTIME_CACHE_TTL_MS="abc",
        AGENT_RUNTIME_CACHE_TTL_SECONDS="0",
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # the warnings are the report, not log noise
    out = result.stdout
    assert "warnings: 3" in out
    warnings = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(warnings) == 3
    assert "AGENT_RUNTIME_CACHE_MAX_ENTRIES='1e3'" in warnings[0]
    assert "AGENT_RUNTIME_CACHE_TTL_MS='abc'" in warnings[1]
    assert "AGENT_RUNTIME_CACHE_TTL_SECONDS=0" in warnings[2]
    assert "max_entries             64   from guard (defaults)" in out


def test_config_reports_capping_to_the_guard() -> None:
    result = run_cli("config", AGENT_RUNTIME_CACHE_TTL_MS="999999999")
    assert result.returncode == 0
    assert "capped to guard 300000" in result.stdout
    assert "warnings: 1" in result.stdout


# ---------------------------------------------------------------------------- bad guard file


@pytest.mark.parametrize("command", ["config", "demo"])
@pytest.mark.parametrize(
    ("content", "key"),
    [
        (None, "agent_runtime.cache"),
        ("[1, 2", "agent_runtime.cache"),
        (
            json.dumps({"agent_runtime": {"cache": {"max_entries": True, "max_ttl_ms": 1}}}),
            "max_entries",
        ),
        (json.dumps({"agent_runtime": {"cache": {"max_entries": 1}}}), "max_ttl_ms"),
    ],
    ids=["missing", "invalid-json", "boolean", "missing-key"],
)
def test_bad_guard_file_is_one_line_and_exit_2(
    tmp_path: Path, command: str, content: str | None, key: str
) -> None:
    path = tmp_path / "guards.json"
    if content is not None:
        path.write_text(content)
    result = run_cli(command, GUARDS_CONFIG_PATH=str(path))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("snak-runtime: error: ")
    assert str(path) in lines[0]
    assert key in lines[0]
    assert "Traceback" not in result.stderr


def test_no_command_is_a_usage_error() -> None:
    result = run_cli()
    assert result.returncode == 2
    assert "usage: snak-runtime" in result.stderr


def test_help_lists_the_commands() -> None:
    result = run_cli("--help")
    assert result.returncode == 0
    assert "demo" in result.stdout and "config" in result.stdout


# ---------------------------------------------------------------------------- in process


def test_main_returns_the_exit_code(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["config"]) == 0
    assert "warnings: 0" in capsys.readouterr().out
    monkeypatch.setenv("GUARDS_CONFIG_PATH", str(tmp_path / "absent.json"))
    assert main(["config"]) == 2
    assert "absent.json" in capsys.readouterr().err


# ---------------------------------------------------------------------------- simulate

_QUICK = ("--agents", "20", "--requests", "200", "--rate", "100", "--invalidations", "0")


def _simulated_limits(stdout: str) -> tuple[str, str]:
    (line,) = [line for line in stdout.splitlines() if line.strip().startswith("cache")]
    fields = dict(item.split("=") for item in line.split() if "=" in item)
    return fields["max_entries"], fields["ttl_ms"]


def test_simulate_reads_the_guard_file_as_config_does(tmp_path: Path) -> None:
    path = _guards_file(tmp_path, max_entries=500, max_ttl_ms=60_000)
    env = {"GUARDS_CONFIG_PATH": str(path), "AGENT_RUNTIME_CACHE_MAX_ENTRIES": "500"}
    config = run_cli("config", **env)
    assert "max_entries            500" in config.stdout
    result = run_cli("simulate", *_QUICK, **env)
    assert result.returncode == 0, result.stderr
    assert _simulated_limits(result.stdout) == ("500", "60000")


def test_simulate_with_a_missing_guard_file_is_one_line_and_exit_2() -> None:
    result = run_cli("simulate", *_QUICK, GUARDS_CONFIG_PATH="/nope")
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert result.stderr.startswith("snak-runtime: error: ") and "/nope" in result.stderr


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (("--rate", "inf"), "--rate"),
        (("--rate", "nan"), "--rate"),
        (("--rate", "1e-300"), "--rate"),
        (("--zipf", "1000"), "--zipf"),
        (("--hold-ms", "1e300"), "--hold-ms"),
        (("--build-ms", "-1"), "--build-ms"),
        (("--agents", "0"), "--agents"),
        (("--requests", "many"), "--requests"),
        (("--max-entries", "0"), "--max-entries"),
        (("--ttl-ms", "1.5"), "--ttl-ms"),
        (("--build-timeout-ms", "0"), "--build-timeout-ms"),
        (("--invalidations", "1e9"), "--invalidations"),
        (("--requests", "1000000", "--rate", "0.5"), "--requests / --rate"),
        (("--policy", "fifo"), "--policy"),
        (("--sizes", "16,0"), "--sizes"),
        (("--sizes", ","), "--sizes"),
        (("--sizes", "16,x"), "--sizes"),
        (("--trace", "/nonexistent/trace.csv"), "--trace"),
    ],
)
def test_simulate_rejects_a_bad_flag_in_one_line(
    args: tuple[str, ...], flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["simulate", *args])
    except SystemExit as exc:  # argparse's own exit, with our one-line message
        code = int(str(exc.code))
    assert code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("snak-runtime simulate: error: ")
    assert flag in lines[0]
    assert "_s" not in lines[0].replace("_ms", "")  # no internal field names (zipf_s, rate_per_s)


@pytest.mark.parametrize("args", [("--zipf", "1000"), ("--requests", "1000000", "--rate", "0.5")])
def test_simulate_bad_flag_in_a_real_process_exits_2_without_traceback(
    args: tuple[str, ...],
) -> None:
    result = run_cli("simulate", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_counts_builds_slower_than_the_timeout() -> None:
    result = run_cli("simulate", *_QUICK, "--build-ms", "31000")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no traceback, no log line per failed build
    out = result.stdout
    assert "failed requests 200" in out
    assert "build_timeout_ms=30000" in out
    quick = run_cli("simulate", *_QUICK, "--build-ms", "50", "--build-timeout-ms", "40")
    assert quick.returncode == 0, quick.stderr
    assert "failed requests 200" in quick.stdout and "build_timeout_ms=40" in quick.stdout


def test_simulate_draws_no_progress_bar_into_a_pipe() -> None:
    result = run_cli("simulate", *_QUICK)
    assert result.returncode == 0
    assert result.stderr == ""
    assert "\r" not in result.stdout


def test_simulate_draws_the_progress_bar_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    assert main(["simulate", *_QUICK]) == 0
    err = capsys.readouterr().err
    assert err.startswith("\r[") and err.endswith("200/200 requests\n")


def test_simulate_compares_policies_over_cache_sizes(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["simulate", *_QUICK, "--policy", "lru", "--policy", "cost-aware",
                 "--sizes", "4,16"])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("miss ratio (builds) by cache size and eviction policy")
    assert lines[1].split() == ["max_entries", "lru", "cost-aware"]
    rows = [line.split() for line in lines[2:]]
    assert [row[0] for row in rows] == ["4", "16"]
    misses = {row[0]: [float(cell.rstrip("%")) for cell in row[1::3]] for row in rows}
    assert all(big <= small for small, big in zip(misses["4"], misses["16"], strict=True))


def test_simulate_replays_a_trace_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "requests.csv"
    trace.write_text("# agent_id,user_id,timestamp_ms\n"
                     "a,alice,0\nb,alice,100\na,alice,200\na,bob,300\n\nc\n")
    code = main(["simulate", "--trace", str(trace), "--max-entries", "2", "--policy", "lru",
                 "--invalidations", "0", "--build-ms", "10", "--hold-ms", "0"])
    assert code == 0
    out = capsys.readouterr().out
    assert out.startswith("simulated 5 trace requests for 3 agents")
    assert "eviction=lru" in out
    assert "(1 hits, 3 misses)" in out  # "a" hit once; bob's request is denied
    assert "denied          1" in out


def test_simulate_rejects_a_bad_trace_line_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "requests.csv"
    trace.write_text("a,alice,10\nb,alice,5\n")
    assert main(["simulate", "--trace", str(trace)]) == 2
    err = capsys.readouterr().err
    assert err.strip() == (f"snak-runtime simulate: error: --trace: {trace} line 2: "
                           "timestamp 5 goes back in time (previous 10)")


# ---------------------------------------------------------------------------- every setting


def test_config_shows_every_setting_and_how_to_raise_the_guard() -> None:
    result = run_cli(
        "config",
        AGENT_RUNTIME_CACHE_MAX_ENTRIES="500",
        AGENT_RUNTIME_BUILD_TIMEOUT_MS="5000",
        AGENT_RUNTIME_SWEEP_INTERVAL_MS="nope",
        AGENT_CFG_BACKOFF_CAP_MS="99999999",
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    rows = {line.split()[0]: line.split(maxsplit=3)[1:] for line in out.splitlines()[1:7]}
    assert rows["build_timeout_ms"] == ["5000", "from", "AGENT_RUNTIME_BUILD_TIMEOUT_MS=5000"]
    assert rows["dispose_timeout_ms"] == ["10000", "from", "default"]
    assert rows["sweep_interval_ms"] == ["1000", "from", "default"]
    assert rows["backoff_cap_ms"] == [
        "300000", "from", "AGENT_CFG_BACKOFF_CAP_MS=99999999 capped to guard 300000"
    ]  # fmt: skip
    hint = "set agent_runtime.cache.max_entries in the guards JSON file named by GUARDS_CONFIG_PATH"
    assert "guards JSON file named by GUARDS_CONFIG_PATH" in out  # the ceilings section says how
    warnings = [line for line in out.splitlines() if line.startswith("  - ")]
    assert len(warnings) == 3
    assert "AGENT_RUNTIME_CACHE_MAX_ENTRIES=500" in warnings[0] and hint in warnings[0]
    assert "AGENT_RUNTIME_SWEEP_INTERVAL_MS='nope' ignored" in warnings[1]
    assert "AGENT_CFG_BACKOFF_CAP_MS=99999999" in warnings[2]
    for variable in (
        "AGENT_RUNTIME_BUILD_TIMEOUT_MS",
        "AGENT_RUNTIME_DISPOSE_TIMEOUT_MS",
        "AGENT_RUNTIME_SWEEP_INTERVAL_MS",
        "AGENT_CFG_BACKOFF_CAP_MS",
    ):
        assert f"  {variable} " in out
