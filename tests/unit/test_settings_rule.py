"""One rule for every setting: keyword > environment > default, and a guard caps all of them.

Covers the timings (build, dispose, sweep), the subscriber's backoff cap, the container paths
for each, and the start-up INFO line that says where every effective value came from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig
from snak_runtime._config import (
    BACKOFF_CAP,
    BUILD_TIMEOUT,
    DISPOSE_TIMEOUT,
    MS_SETTINGS,
    SWEEP_INTERVAL,
    MsSetting,
    resolve_limits,
)
from snak_runtime._settings import RuntimeCacheSettings
from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import InvalidationSettings, InvalidationSubscriber

LOGGER = "snak_runtime._config"
MANAGER_TIMINGS = (BUILD_TIMEOUT, DISPOSE_TIMEOUT, SWEEP_INTERVAL)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for setting in MS_SETTINGS:
        monkeypatch.delenv(setting.variable, raising=False)
    for name in ("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "GUARDS_CONFIG_PATH", "REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    yield


def _effective(manager: AgentRuntimeManager[object, object], setting: MsSetting) -> int:
    value: int = getattr(manager.limits, setting.keyword)
    return value


def test_variable_names() -> None:
    assert [s.variable for s in MS_SETTINGS] == [
        "AGENT_RUNTIME_BUILD_TIMEOUT_MS",
        "AGENT_RUNTIME_DISPOSE_TIMEOUT_MS",
        "AGENT_RUNTIME_SWEEP_INTERVAL_MS",
        "AGENT_CFG_BACKOFF_CAP_MS",
    ]


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
def test_default_when_nothing_is_given(setting: MsSetting) -> None:
    manager: AgentRuntimeManager[object, object] = AgentRuntimeManager()
    assert _effective(manager, setting) == setting.default
    assert getattr(manager.limits, setting.keyword.replace("_ms", "_source")) == "default"


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
@pytest.mark.parametrize("with_settings", [False, True], ids=["os.environ", "settings"])
def test_environment_beats_default(
    monkeypatch: pytest.MonkeyPatch, setting: MsSetting, with_settings: bool
) -> None:
    monkeypatch.setenv(setting.variable, "1234")
    settings = RuntimeCacheSettings() if with_settings else None
    manager: AgentRuntimeManager[object, object] = AgentRuntimeManager(settings=settings)
    assert _effective(manager, setting) == 1234
    source = getattr(manager.limits, setting.keyword.replace("_ms", "_source"))
    assert source == f"{setting.variable}=1234"


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
def test_keyword_beats_environment(monkeypatch: pytest.MonkeyPatch, setting: MsSetting) -> None:
    monkeypatch.setenv(setting.variable, "1234")
    keyword: dict[str, Any] = {setting.keyword: 77}
    manager: AgentRuntimeManager[object, object] = AgentRuntimeManager(
        settings=RuntimeCacheSettings(), **keyword
    )
    assert _effective(manager, setting) == 77


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
def test_guard_caps_keyword_and_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, setting: MsSetting
) -> None:
    above = setting.guard + 1
    keyword: dict[str, Any] = {setting.keyword: above}
    manager: AgentRuntimeManager[object, object] = AgentRuntimeManager(**keyword)
    assert _effective(manager, setting) == setting.guard
    monkeypatch.setenv(setting.variable, str(above))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        manager = AgentRuntimeManager()
    assert _effective(manager, setting) == setting.guard
    assert any(
        r.levelno == logging.WARNING
        and f"{setting.variable}={above}" in r.getMessage()
        and f"capped to {setting.guard}" in r.getMessage()
        for r in caplog.records
    )


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
@pytest.mark.parametrize("raw", ["abc", "0", "-5", "1.5"])
def test_bad_environment_value_warns_and_uses_default(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    setting: MsSetting,
    raw: str,
) -> None:
    monkeypatch.setenv(setting.variable, raw)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        manager: AgentRuntimeManager[object, object] = AgentRuntimeManager()
    assert _effective(manager, setting) == setting.default
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(f"{setting.variable}={raw!r} ignored" in m for m in messages), messages


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
@pytest.mark.parametrize("value", [0, -1, True, 1.5, "100"])
def test_bad_keyword_is_a_value_error(setting: MsSetting, value: object) -> None:
    with pytest.raises(ValueError, match=setting.keyword):
        AgentRuntimeManager(**{setting.keyword: value})  # type: ignore[arg-type]


def test_startup_info_states_every_limit_and_its_source(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_MAX_ENTRIES", "500")
    monkeypatch.setenv("AGENT_RUNTIME_DISPOSE_TIMEOUT_MS", "2500")
    with caplog.at_level(logging.INFO, logger=LOGGER):
        AgentRuntimeManager(build_timeout_ms=9_000)
    (info,) = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    for part in (
        "max_entries=64 (AGENT_RUNTIME_CACHE_MAX_ENTRIES=500 capped to guard 64)",
        "default_ttl_ms=300000 (guard (defaults))",
        "build_timeout_ms=9000 (keyword build_timeout_ms=9000)",
        "dispose_timeout_ms=2500 (AGENT_RUNTIME_DISPOSE_TIMEOUT_MS=2500)",
        "sweep_interval_ms=1000 (default)",
    ):
        assert part in info, info
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "capped to 64" in warning
    assert "agent_runtime.cache.max_entries" in warning and "GUARDS_CONFIG_PATH" in warning


def test_ttl_cap_warning_says_how_to_raise_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_CACHE_TTL_MS", "999999999")
    limits = resolve_limits(GuardConfig(), RuntimeCacheSettings())
    (warning,) = limits.warnings
    assert "set agent_runtime.cache.max_ttl_ms in the guards JSON file" in warning
    assert "GUARDS_CONFIG_PATH" in warning


# ---------------------------------------------------------------------------- container paths


@pytest.mark.parametrize("setting", MANAGER_TIMINGS, ids=lambda s: s.keyword)
def test_container_path_beats_environment(
    monkeypatch: pytest.MonkeyPatch, setting: MsSetting
) -> None:
    monkeypatch.setenv(setting.variable, "1234")
    container = RuntimeContainer()
    assert _effective(container.manager(), setting) == 1234  # environment through `settings`
    container = RuntimeContainer()
    getattr(container, setting.keyword).override(55)
    assert _effective(container.manager(), setting) == 55


# ---------------------------------------------------------------------------- backoff cap


def _cap(subscriber: InvalidationSubscriber) -> int:
    cap: int = subscriber._backoff_cap_ms
    return cap


def test_backoff_cap_default_environment_keyword_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://127.0.0.1:1"
    manager: AgentRuntimeManager[object, object] = AgentRuntimeManager()
    assert _cap(InvalidationSubscriber(manager, url)) == BACKOFF_CAP.default
    monkeypatch.setenv(BACKOFF_CAP.variable, "700")
    assert _cap(InvalidationSubscriber(manager, url)) == 700
    assert _cap(InvalidationSubscriber(manager, InvalidationSettings.for_url(url))) == 700
    assert _cap(InvalidationSubscriber(manager, url, backoff_cap_ms=300)) == 300
    monkeypatch.setenv(BACKOFF_CAP.variable, str(BACKOFF_CAP.guard * 2))
    assert _cap(InvalidationSubscriber(manager, url)) == BACKOFF_CAP.guard
    monkeypatch.setenv(BACKOFF_CAP.variable, "50")  # below the base: ignored with a warning
    assert _cap(InvalidationSubscriber(manager, url)) == BACKOFF_CAP.default
    with pytest.raises(ValueError, match="backoff_cap_ms"):
        InvalidationSubscriber(manager, url, backoff_cap_ms=0)


async def test_backoff_cap_container_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")  # nothing listens: retries quietly
    monkeypatch.setenv(BACKOFF_CAP.variable, "700")
    container = RuntimeContainer()
    container.invalidation_backoff_cap_ms.override(900)
    await container.init_resources()  # type: ignore[misc]
    try:
        subscriber = await container.invalidation()
        assert isinstance(subscriber, InvalidationSubscriber)
        assert _cap(subscriber) == 900
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
