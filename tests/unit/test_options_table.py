"""One declaration per option (issue 24): the table in ``_options`` and what must agree with it.

Typed settings (a bad keyword is a ValidationError naming the field; a bad variable is a
warning and a fall-through), the environment reader, the ``config`` command, the container
paths, the settings table of docs/configuration.md and the ``simulate`` flags are each held
to the table.
"""

from __future__ import annotations

import ast
import logging
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from snak_runtime import GuardConfig
from snak_runtime._config import _Environment, resolve_limits
from snak_runtime._options import CACHE_OPTIONS, OPTIONS, CacheValues
from snak_runtime._settings import RuntimeCacheSettings
from snak_runtime.containers import RuntimeContainer
from snak_runtime.tools._cli import build_parser, main

ROOT = Path(__file__).resolve().parents[2]
KINDS = {"int": "int | None", "bool": "bool | None", "float": "float | None",
         "str": "str | None", "secret": "str | None"}
VALID = {"int": "7", "bool": "true", "float": "0.25", "str": "lru", "secret": "x"}


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for option in OPTIONS:
        monkeypatch.delenv(option.variable, raising=False)


# typed settings: keywords


@pytest.mark.parametrize(
    ("field", "bad"),
    [("max_entries", "abc"), ("max_entries", -1), ("max_entries", 0), ("max_entries", True),
     ("max_entries", 64.0), ("max_entries", "64.0"), ("max_entries", "1e3"),
     ("ttl_ms", -5), ("build_timeout_ms", 0), ("refresh_ahead_ms", "x"),
     ("stale_while_rebuilding", 3), ("stale_while_rebuilding", "maybe"),
     ("ttl_jitter", True), ("ttl_jitter", 0.9), ("ttl_jitter", "nan"),
     ("max_entries_per_user", 0), ("idle_ttl_ms", 1.5)],
)
def test_a_bad_keyword_is_a_validation_error_naming_the_field(field: str, bad: object) -> None:
    with pytest.raises(ValidationError) as caught:
        RuntimeCacheSettings(**{field: bad})
    assert [error["loc"] for error in caught.value.errors()] == [(field,)]


def test_keyword_text_of_a_value_is_typed() -> None:
    s = RuntimeCacheSettings(max_entries="32", stale_while_rebuilding="on", ttl_jitter="0.1")
    assert (s.max_entries, s.stale_while_rebuilding, s.ttl_jitter) == (32, True, 0.1)
    assert RuntimeCacheSettings(max_entries=" +7 ").max_entries == 7


def test_the_readme_override_gives_an_int() -> None:
    container = RuntimeContainer()
    container.settings.override(RuntimeCacheSettings(max_entries="32"))
    assert container.settings().max_entries == 32
    assert container.manager().max_entries == 32


# typed settings: environment


@pytest.mark.parametrize("raw", ["abc", "64.0", "true", "-1", "0"])
def test_a_bad_variable_warns_naming_it_and_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", raw)
    settings = RuntimeCacheSettings()  # never raises
    assert settings.max_entries is None
    with caplog.at_level(logging.WARNING):
        limits = resolve_limits(GuardConfig(), settings)
    assert limits.max_entries == 64
    (warning,) = limits.warnings
    assert f"AGENT_RUNTIME_CACHE_MAX_ENTRIES={raw!r} ignored" in warning
    assert warning in caplog.messages


@pytest.mark.parametrize("option", [o for o in CACHE_OPTIONS if o.kind != "str"],
                         ids=lambda o: o.name)
def test_every_typed_variable_is_dropped_with_a_warning_when_bad(
    monkeypatch: pytest.MonkeyPatch, option: Any
) -> None:
    monkeypatch.setenv(option.variable, "not a value")
    settings = RuntimeCacheSettings()
    assert getattr(settings, option.name) is None
    assert [args[:2] for _, args in settings.rejected_environment] == [
        (option.variable, "not a value")
    ]


def test_settings_and_the_plain_reader_read_every_row_alike(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for option in CACHE_OPTIONS:
        monkeypatch.setenv(option.variable, VALID[option.kind])
    typed = RuntimeCacheSettings()
    plain = _Environment.read()
    for option in CACHE_OPTIONS:
        assert getattr(typed, option.name) == getattr(plain, option.name) is not None, option


def test_the_typed_fields_are_the_table_rows() -> None:
    annotations = CacheValues.__annotations__
    assert list(annotations) == [o.name for o in CACHE_OPTIONS]
    for option in CACHE_OPTIONS:
        assert annotations[option.name] == KINDS[option.kind], option.name
    assert list(RuntimeCacheSettings.model_fields) == [o.name for o in CACHE_OPTIONS]


# config, container, docs, simulate


def test_config_shows_every_row_with_a_value_and_masks_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://user:hunter2@example:6379/0")
    monkeypatch.setenv("REDIS_PASSWORD", "hunter2")
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_EVICTION", "lru")
    assert main(["config"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    for option in OPTIONS:
        assert re.search(rf"^  {re.escape(option.variable)} ", out, re.M), option.variable
    shown = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    names = {"ttl_ms": "default_ttl_ms"}
    for option in OPTIONS:
        if option.name not in ("ttl_seconds", "guards_config_path"):  # folded into the TTL/guards
            assert names.get(option.name, option.name) in shown, option.name
    assert re.search(r"^  eviction +lru +from AGENT_RUNTIME_CACHE_EVICTION=lru$", out, re.M)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_every_container_path_resolves(option: Any) -> None:
    container = RuntimeContainer()
    first, *rest = option.container.split(".")
    provider = getattr(container, first)
    value = provider()
    for part in rest:
        value = getattr(value, part)  # the provided object has the field


def _docs_rows() -> list[list[str]]:
    text = (ROOT / "docs" / "configuration.md").read_text()
    start = text.index("| keyword | environment variable | container path | default | guard |")
    rows = []
    for line in text[start:].splitlines()[2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_the_docs_settings_table_matches_the_table(option: Any) -> None:
    rows = [row for row in _docs_rows() if f"`{option.variable}`" in row[1]]
    assert len(rows) == 1, f"{option.variable}: one row in docs/configuration.md"
    keyword, _, container, default, guard = rows[0]
    assert (option.keyword or option.name) in keyword
    assert f"`{option.container.split('.')[0]}`" in container
    if isinstance(option.default, int) and not isinstance(option.default, bool):
        assert str(option.default) in default
    if isinstance(option.ceiling, int):
        assert str(option.ceiling) in guard
    elif isinstance(option.ceiling, str) and option.ceiling.startswith("agent_runtime."):
        assert f"`{option.ceiling}`" in guard


def test_simulate_flags_of_the_table_exist() -> None:
    action: Any = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    simulate = action.choices["simulate"]
    flags = {flag for each in simulate._actions for flag in each.option_strings}
    for option in OPTIONS:
        if option.flag is not None:
            assert option.flag in flags, option.flag


def test_no_import_cycle_between_config_and_expiry_options() -> None:
    tree = ast.parse((ROOT / "snak_runtime" / "_expiry_options.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "_config" not in imported


# fleet timings: typed too


def test_fleet_timings_are_typed_and_a_bad_variable_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from snak_runtime.invalidation import InvalidationSettings

    monkeypatch.setenv("AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS", "2500")
    monkeypatch.setenv("AGENT_CFG_RECONCILE_INTERVAL_MS", "1.5")
    settings = InvalidationSettings()  # never raises on the environment
    assert (settings.version_source_timeout_ms, settings.reconcile_interval_ms) == (2500, None)
    assert [args[:2] for _, args in settings.rejected_environment] == [
        ("AGENT_CFG_RECONCILE_INTERVAL_MS", "1.5")
    ]
    given = InvalidationSettings.model_validate({"AGENT_CFG_BACKOFF_CAP_MS": "7000"})
    assert given.backoff_cap_ms == 7000
    with pytest.raises(ValidationError, match=r"backoff_cap_ms|AGENT_CFG_BACKOFF_CAP_MS"):
        InvalidationSettings.model_validate({"AGENT_CFG_BACKOFF_CAP_MS": True})


def test_resolve_limits_refuses_an_unknown_keyword() -> None:
    with pytest.raises(TypeError, match="no_such_option"):
        resolve_limits(GuardConfig(), RuntimeCacheSettings(), no_such_option=1)
