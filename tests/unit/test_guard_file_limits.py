"""Guard files and guard values the operator got wrong: refused at start, never read whole,
never hanging (issue 23, finding 8)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, GuardConfigError, RuntimeCacheSettings
from snak_runtime._guards import MAX_GUARD_ENTRIES, MAX_GUARD_MS, MAX_GUARDS_FILE_BYTES


def _guards(path: Path, cache: dict[str, object]) -> Path:
    path.write_text(json.dumps({"agent_runtime": {"cache": cache}}))
    return path


def test_a_file_over_one_mib_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:  # sparse: 100 MB on the file system's word, no disk used
        fh.truncate(100 * 1024 * 1024)
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(path)
    assert str(path) in str(info.value)
    assert f"larger than {MAX_GUARDS_FILE_BYTES} bytes" in str(info.value)


def test_a_valid_file_padded_to_just_over_the_limit_is_refused(tmp_path: Path) -> None:
    body = json.dumps({"agent_runtime": {"cache": {"max_entries": 8, "max_ttl_ms": 1000}}})
    path = tmp_path / "padded.json"
    path.write_text(body + " " * (MAX_GUARDS_FILE_BYTES + 1 - len(body)))
    with pytest.raises(GuardConfigError, match="larger than"):
        GuardConfig.from_file(path)
    path.write_text(body + " " * (MAX_GUARDS_FILE_BYTES - len(body)))  # exactly the limit
    assert GuardConfig.from_file(path).max_entries == 8


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_is_refused_as_not_a_regular_file() -> None:
    with pytest.raises(GuardConfigError, match="not a regular file") as info:
        GuardConfig.from_file("/dev/zero")
    assert "/dev/zero" in str(info.value)


@pytest.mark.skipif(sys.platform == "win32", reason="FIFOs are POSIX")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "guards.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer came
    with pytest.raises(GuardConfigError, match="not a regular file") as info:
        GuardConfig.from_file(fifo)
    assert str(fifo) in str(info.value)


def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(tmp_path)
    assert str(tmp_path) in str(info.value)
    assert "agent_runtime.cache" in str(info.value)


@pytest.mark.parametrize(
    ("key", "value", "ceiling"),
    [
        ("max_entries", 10**26, MAX_GUARD_ENTRIES),
        ("max_entries", MAX_GUARD_ENTRIES + 1, MAX_GUARD_ENTRIES),
        ("max_ttl_ms", MAX_GUARD_MS + 1, MAX_GUARD_MS),
        ("max_ttl_ms", 10**40, MAX_GUARD_MS),
        ("max_entries_per_user", MAX_GUARD_ENTRIES + 1, MAX_GUARD_ENTRIES),
    ],
)
def test_a_value_above_its_ceiling_is_refused_naming_the_key(
    tmp_path: Path, key: str, value: int, ceiling: int
) -> None:
    cache: dict[str, object] = {"max_entries": 8, "max_ttl_ms": 1_000, key: value}
    path = _guards(tmp_path / "g.json", cache)
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(path)
    message = str(info.value)
    assert f"agent_runtime.cache.{key}" in message and str(path) in message
    assert f"must be at most {ceiling}" in message
    assert len(message) < 300  # a huge number is described, not printed


def test_the_ceilings_themselves_are_accepted(tmp_path: Path) -> None:
    cache: dict[str, object] = {
        "max_entries": MAX_GUARD_ENTRIES,
        "max_ttl_ms": MAX_GUARD_MS,
        "max_entries_per_user": MAX_GUARD_ENTRIES,
    }
    guards = GuardConfig.from_file(_guards(tmp_path / "g.json", cache))
    assert (guards.max_entries, guards.max_ttl_ms) == (MAX_GUARD_ENTRIES, MAX_GUARD_MS)
    assert MAX_GUARD_MS == 30 * 24 * 3_600_000


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("max_entries", 10**26),
        ("max_entries", MAX_GUARD_ENTRIES + 1),
        ("max_ttl_ms", MAX_GUARD_MS + 1),
        ("max_entries_per_user", 10**26),
    ],
)
def test_a_guard_built_in_code_above_its_ceiling_is_a_value_error_naming_the_field(
    name: str, value: int
) -> None:
    kwargs: dict[str, int] = {name: value}
    with pytest.raises(ValueError, match=rf"^{name} must be at most \d+, got ") as info:
        GuardConfig(**kwargs)  # type: ignore[arg-type]
    assert not isinstance(info.value, GuardConfigError)  # no file involved


def test_a_manager_never_meets_an_absurd_guard() -> None:
    # Before: GuardConfig(max_entries=10**26) was accepted and the manager crashed with
    # OverflowError when it was built with it.
    with pytest.raises(ValueError, match="max_entries"):
        AgentRuntimeManager(
            guards=GuardConfig(max_entries=10**26), settings=RuntimeCacheSettings()
        )
