"""Shared fixtures: a clean environment, a fake clock, a recording disposer, manager and seed
factories, and a whole-snapshot stats assertion (STYLE.md §8).

Also the two suites and the Hypothesis profiles:

- ``python -m pytest`` runs the fast suite: every behaviour test. Tests marked ``slow``
  (benchmarks, the wheel build, multi-process fleets, Sentinel) are deselected, never skipped.
- ``python -m pytest --full`` runs everything, with the ``full`` Hypothesis profile (ten times
  the examples): what CI runs once, at the newest versions.

Hypothesis profiles bound property tests by example counts, never by time (``deadline=None``,
no too-slow health check): ``fast`` (the default), ``ci`` (under ``CI=true``: no example
database, failing examples printed as blobs), ``full`` (``--full``). ``HYPOTHESIS_PROFILE=name``
(or ``--hypothesis-profile=name``) picks one explicitly.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from snak_runtime import (
    AgentRuntimeManager,
    GuardConfig,
    RuntimeCacheSettings,
    RuntimeManagerClosed,
    RuntimeSeed,
)
from snak_runtime.testing import FakeClock, RecordingDisposer
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, Rebuild

# --- the fast and the full suite, and the Hypothesis profiles ----------------------------------

settings.register_profile(
    "fast", max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("ci", settings.get_profile("fast"), database=None, print_blob=True)
settings.register_profile("full", settings.get_profile("fast"), max_examples=1_000, print_blob=True)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--full",
        action="store_true",
        help="run the full suite: also the tests marked slow, with the 'full' Hypothesis profile",
    )


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("hypothesis_profile", None):
        return  # --hypothesis-profile: loaded by Hypothesis's own plugin
    in_ci = os.environ.get("CI", "").lower() == "true"
    default = "full" if config.getoption("--full") else "ci" if in_ci else "fast"
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE") or default)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Without ``--full``, deselect (not skip) the slow tests: CI=true skips nothing."""
    if config.getoption("--full"):
        return
    slow = [item for item in items if item.get_closest_marker("slow")]
    if slow:
        config.hook.pytest_deselected(items=slow)
        items[:] = [item for item in items if not item.get_closest_marker("slow")]


ENV_VARS = (
    "AGENT_RUNTIME_CACHE_MAX_ENTRIES",
    "AGENT_RUNTIME_CACHE_TTL_MS",
    "AGENT_RUNTIME_CACHE_TTL_SECONDS",
    "AGENT_RUNTIME_CACHE_REFRESH_AHEAD_MS",
    "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING",
    "AGENT_RUNTIME_CACHE_IDLE_TTL_MS",
    "AGENT_RUNTIME_CACHE_TTL_JITTER",
    "AGENT_RUNTIME_CACHE_EVICTION",
    "AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER",
    "GUARDS_CONFIG_PATH",
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "AGENT_CFG_INVALIDATE_CHANNEL",
    "AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS",
    "AGENT_CFG_RECONCILE_INTERVAL_MS",
    "AGENT_CFG_GAP_TOLERANCE_MESSAGES",
    "AGENT_CFG_GAP_TOLERANCE_MS",
    "AGENT_RUNTIME_BUILD_TIMEOUT_MS",
    "AGENT_RUNTIME_DISPOSE_TIMEOUT_MS",
    "AGENT_RUNTIME_SWEEP_INTERVAL_MS",
    "AGENT_CFG_BACKOFF_CAP_MS",
)

# Small guards so capacity and expiry are reached in a few steps.
SMALL_MAX_ENTRIES = 3
SMALL_MAX_TTL_MS = 1_000


class Agent:
    """A stand-in agent object: identity matters, the name helps reading failures."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Agent({self.name!r})"


async def _no_rebuild() -> RuntimeSeed[str, object] | None:
    raise AssertionError("rebuild() was not expected to be called")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test sees the cache, guard or Redis variables of the machine it runs on."""
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def disposer() -> RecordingDisposer:
    return RecordingDisposer()


@pytest.fixture
async def make_manager(
    fake_clock: FakeClock, disposer: RecordingDisposer
) -> AsyncIterator[MakeManager]:
    """``make_manager(**kw)``: a manager with small guards, the fake clock and the recording
    disposer unless overridden. Every manager it built is closed at teardown."""
    built: list[Manager] = []

    def factory(**kw: Any) -> Manager:
        kw.setdefault(
            "guards", GuardConfig(max_entries=SMALL_MAX_ENTRIES, max_ttl_ms=SMALL_MAX_TTL_MS)
        )
        kw.setdefault("settings", RuntimeCacheSettings())
        kw.setdefault("clock", fake_clock)
        kw.setdefault("disposer", disposer)
        manager: Manager = AgentRuntimeManager(**kw)
        built.append(manager)
        return manager

    yield factory
    for manager in built:
        # bound to another loop (the loop-binding test) or already closed: nothing to do
        with contextlib.suppress(RuntimeError, RuntimeManagerClosed):
            await manager.aclose(grace_ms=1)


@pytest.fixture
def make_seed() -> MakeSeed:
    """``make_seed(agent_id, cfg_version, *, user_id="u1", runtime=None, agent=<new Agent>,
    rebuild=<fails the test if called>, ttl_ms=None)``; the runtime defaults to
    ``"<agent_id>@v<cfg_version>#<n>"`` so every seed's runtime is distinct."""
    counter = itertools.count()
    missing: Any = object()

    def factory(
        agent_id: str,
        cfg_version: int = 1,
        *,
        user_id: str = "u1",
        runtime: str | None = None,
        agent: object = missing,
        rebuild: Rebuild | None = None,
        ttl_ms: int | None = None,
    ) -> RuntimeSeed[str, object]:
        n = next(counter)
        if runtime is None:
            runtime = f"{agent_id}@v{cfg_version}#{n}"
        if agent is missing:
            agent = Agent(f"{agent_id}@v{cfg_version}#{n}")
        return RuntimeSeed(
            agent_id=agent_id,
            user_id=user_id,
            cfg_version=cfg_version,
            runtime=runtime,
            rebuild=rebuild if rebuild is not None else _no_rebuild,
            agent=agent,
            ttl_ms=ttl_ms,
        )

    return factory


@pytest.fixture
def assert_stats() -> AssertStats:
    """``assert_stats(manager, hits=1, misses=2, ...)`` compares the named fields of
    ``manager.stats()`` in one assertion; ``removals={...}`` compares the non-zero counts by
    cause."""

    def check(manager: AgentRuntimeManager[Any, Any], **expected: Any) -> None:
        snapshot = manager.stats()
        actual: dict[str, Any] = {}
        for name in expected:
            value = getattr(snapshot, name)
            if name == "removals":
                value = {cause: n for cause, n in value.items() if n}
            actual[name] = value
        assert actual == expected

    return check
