"""The public names of CONTRACT §1 import from the documented paths."""

from __future__ import annotations

import importlib
import inspect
import subprocess
import sys

import pytest

import snak_runtime

CONTRACT_NAMES = {
    "AgentRuntimeManager",
    "RuntimeSeed",
    "AcquiredRuntime",
    "RuntimeLease",
    "GuardConfig",
    "RuntimeCacheSettings",
    "CacheStats",
    "RuntimeNotCached",
    "RuntimeManagerClosed",
    "Clock",
    "MonotonicClock",
    "Disposer",
    "DefaultDisposer",
}
# Exported beyond §1: the removal causes (§9 names their strings), the guard file's error
# (the README names it), the operator's entry record (issue 18) and the version.
EXTRA_NAMES = {"RemovalCause", "GuardConfigError", "EntryInfo", "__version__"}


def test_contract_import_statement() -> None:
    from snak_runtime import (  # noqa: F401
        AcquiredRuntime,
        AgentRuntimeManager,
        CacheStats,
        Clock,
        DefaultDisposer,
        Disposer,
        GuardConfig,
        GuardConfigError,
        MonotonicClock,
        RuntimeCacheSettings,
        RuntimeLease,
        RuntimeManagerClosed,
        RuntimeNotCached,
        RuntimeSeed,
    )
    from snak_runtime.testing import FakeClock

    assert issubclass(GuardConfigError, ValueError)
    clock = FakeClock()
    clock.advance(5)
    assert clock.now_ms() == 5


def test_all_matches_public_exports() -> None:
    assert set(snak_runtime.__all__) == CONTRACT_NAMES | EXTRA_NAMES
    assert len(snak_runtime.__all__) == len(set(snak_runtime.__all__))
    public = {name for name in dir(snak_runtime) if not name.startswith("_")}
    modules = {m for m in public if inspect.ismodule(getattr(snak_runtime, m))}
    assert public - modules == CONTRACT_NAMES | {
        "RemovalCause",
        "GuardConfigError",
        "EntryInfo",
    }


@pytest.mark.parametrize("name", sorted(CONTRACT_NAMES | EXTRA_NAMES))
def test_every_exported_name_resolves(name: str) -> None:
    module = importlib.import_module("snak_runtime")
    assert getattr(module, name) is not None


def test_error_hierarchy() -> None:
    assert issubclass(snak_runtime.RuntimeNotCached, LookupError)
    assert issubclass(snak_runtime.RuntimeManagerClosed, RuntimeError)


def test_default_providers_satisfy_their_protocols() -> None:
    assert isinstance(snak_runtime.MonotonicClock(), snak_runtime.Clock)
    assert isinstance(snak_runtime.DefaultDisposer(), snak_runtime.Disposer)


def test_constructor_is_keyword_only_with_contract_defaults() -> None:
    params = inspect.signature(snak_runtime.AgentRuntimeManager).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    defaults = {name: p.default for name, p in params.items()}
    assert {
        k: defaults[k]
        for k in ("settings", "logger", "build_timeout_ms", "sweep_interval_ms",
                  "dispose_timeout_ms")
    } == {
        "settings": None,
        "logger": None,
        # None = not given: the environment variable, then the default applies (README table).
        "build_timeout_ms": None,
        "sweep_interval_ms": None,
        "dispose_timeout_ms": None,
    }
    assert set(defaults) >= {"guards", "clock", "disposer"}


def test_manager_docstring_says_not_thread_safe() -> None:
    doc = snak_runtime.AgentRuntimeManager.__doc__ or ""
    assert "thread-safe" in doc.lower()


def test_import_does_not_load_pydantic_settings() -> None:
    """pydantic-settings is most of the import time: it loads with RuntimeCacheSettings only."""
    code = (
        "import sys, snak_runtime\n"
        "m = snak_runtime.AgentRuntimeManager()\n"
        "assert 'pydantic_settings' not in sys.modules, 'loaded by import or manager'\n"
        "from snak_runtime import RuntimeCacheSettings\n"
        "assert 'pydantic_settings' in sys.modules\n"
        "assert RuntimeCacheSettings.__name__ == 'RuntimeCacheSettings'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300)


def test_entry_info_is_a_frozen_slotted_typed_record() -> None:
    import dataclasses

    info = snak_runtime.EntryInfo(
        agent_id="a", user_id="u", cfg_version=1, age_ms=0, expires_in_ms=5, pins=0,
        detached_pins=0, hits=0, last_build_ms=None,
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.pins = 1  # type: ignore[misc]
    assert not hasattr(info, "__dict__")
    hints = {f.name: f.type for f in dataclasses.fields(snak_runtime.EntryInfo)}
    assert hints == {
        "agent_id": "str",
        "user_id": "str",
        "cfg_version": "int",
        "age_ms": "int",
        "expires_in_ms": "int",
        "pins": "int",
        "detached_pins": "int",
        "hits": "int",
        "last_build_ms": "float | None",
    }
