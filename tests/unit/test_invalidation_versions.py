"""The version check behind versioned resync and reconciliation, without Redis.

A real manager and a dict standing in for the user's database; the subscriber is never
started: its resync and its version check are driven directly.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.invalidation import InvalidationSettings, InvalidationSubscriber, VersionSource
from snak_runtime.invalidation._versions import (
    BATCH_SIZE,
    MAX_RECONCILE_INTERVAL_MS,
    MAX_SOURCE_TIMEOUT_MS,
    resolve_timings,
)
from snak_runtime.testing import RecordingDisposer
from tests.helpers import Manager, settle

URL = "redis://127.0.0.1:1/0"  # never connected to


class Database:
    """The configuration versions (the truth), and the version source reading them."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.calls: list[list[str]] = []
        self.rebuilds: list[tuple[str, int]] = []
        self.override: dict[str, object] = {}

    async def source(self, agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        self.calls.append(list(agent_ids))
        answer: dict[str, object] = {a: self.versions.get(a) for a in agent_ids}
        answer.update((k, v) for k, v in self.override.items() if k in answer)
        return answer  # type: ignore[return-value]  # garbage on purpose in some tests

    def seed(self, agent_id: str) -> RuntimeSeed[str, object]:
        version = self.versions[agent_id]

        async def rebuild() -> RuntimeSeed[str, object] | None:
            self.rebuilds.append((agent_id, self.versions[agent_id]))
            return self.seed(agent_id) if agent_id in self.versions else None

        return RuntimeSeed(agent_id, "u", version, f"{agent_id}@{version}", rebuild)


@pytest.fixture
async def manager() -> Manager:
    m: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=2_000, max_ttl_ms=600_000),
        settings=RuntimeCacheSettings(),
        disposer=RecordingDisposer(),
    )
    return m


async def cache(manager: Manager, db: Database, versions: dict[str, int]) -> None:
    db.versions.update(versions)
    for agent_id in versions:
        await manager.shadow_seed(db.seed(agent_id))


def subscriber(
    manager: Manager,
    source: VersionSource | None,
    *,
    version_source_timeout_ms: int | None = None,
    reconcile_interval_ms: int | None = None,
) -> InvalidationSubscriber:
    return InvalidationSubscriber(
        manager,
        URL,
        version_source=source,
        version_source_timeout_ms=version_source_timeout_ms,
        reconcile_interval_ms=reconcile_interval_ms,
    )


# --- the check ------------------------------------------------------------------------------


async def test_only_changed_agents_are_rebuilt_and_gone_or_unusable_evicted_as_resync(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database()
    await cache(manager, db, {f"a{i}": 5 for i in range(8)})
    db.versions.update(a0=6, a1=9)  # changed
    db.versions["a2"] = 4  # older than cached: a late replica, kept
    del db.versions["a3"]  # deleted: None
    db.override = {"a4": "7", "a5": True, "a6": -1}  # not versions
    removed: list[tuple[str, str]] = []
    manager.on_removal(lambda agent_id, cause: removed.append((agent_id, cause)))
    sub = subscriber(manager, db.source)
    with caplog.at_level(logging.WARNING):
        await sub._resync()
        await sub.drain()
    assert {a: manager.version_of(a) for a in db.versions} == {
        "a0": 6, "a1": 9, "a2": 5, "a4": None, "a5": None, "a6": None, "a7": 5,
    }
    assert "a3" not in manager
    assert sorted(db.rebuilds) == [("a0", 6), ("a1", 9)]
    assert sorted(removed) == [
        ("a0", "invalidated"), ("a1", "invalidated"),
        ("a3", "resync"), ("a4", "resync"), ("a5", "resync"), ("a6", "resync"),
    ]
    s = sub.stats()
    assert (s.version_checked, s.version_repaired, s.version_unusable) == (8, 6, 3)
    assert (s.version_source_failures, s.resyncs, s.resync_evictions) == (0, 1, 4)
    assert (s.applied, s.failures, s.received) == (0, 0, 0)  # repairs are not messages
    unusable = [r.getMessage() for r in caplog.records if "not a version" in r.getMessage()]
    # issue 23: rate-limited, one line per reason per interval (the count is in the stats)
    assert len(unusable) == 1 and all("'a" in m for m in unusable)
    assert manager.stats().removals["explicit"] == 0


async def test_source_is_asked_in_bounded_batches(manager: Manager) -> None:
    db = Database()
    await cache(manager, db, {f"a{i}": 1 for i in range(BATCH_SIZE * 2 + 10)})
    sub = subscriber(manager, db.source)
    assert sub._check is not None
    assert await sub._check.run() == 0
    assert [len(c) for c in db.calls] == [BATCH_SIZE, BATCH_SIZE, 10]
    assert sorted(a for c in db.calls for a in c) == sorted(db.versions)
    assert sub.stats().version_checked == len(db.versions)


async def test_a_load_in_flight_is_checked_once_it_installs(manager: Manager) -> None:
    db = Database()
    db.versions["a"] = 1
    started, release = asyncio.Event(), asyncio.Event()

    async def slow_build(agent_id: str) -> RuntimeSeed[str, object]:
        seed = db.seed(agent_id)  # reads version 1 ...
        started.set()
        await release.wait()  # ... and takes its time
        return seed

    async def lease() -> int:
        async with manager.lease("a", user_id="u", build=slow_build) as got:
            return got.cfg_version

    reader = asyncio.create_task(lease())
    await started.wait()
    assert manager.resync_view() == {"a": None}
    db.versions["a"] = 2  # changed while the build was in flight
    sub = subscriber(manager, db.source)
    await sub._resync()
    release.set()
    assert await reader == 1  # the lease got what was built ...
    await sub.drain()
    assert manager.version_of("a") == 2 and db.rebuilds == [("a", 2)]  # ... then repaired


@pytest.mark.parametrize("fault", ["raises", "hangs", "not a mapping"])
async def test_a_failing_source_at_resync_falls_back_to_evicting_everything(
    manager: Manager, caplog: pytest.LogCaptureFixture, fault: str
) -> None:
    db = Database()
    await cache(manager, db, {"a": 1, "b": 1})

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        if fault == "raises":
            raise ConnectionError("database down")
        if fault == "hangs":
            await asyncio.Event().wait()
        return [1, 2]  # type: ignore[return-value]

    sub = subscriber(manager, source, version_source_timeout_ms=50)
    with caplog.at_level(logging.WARNING):
        await sub._resync()
    assert manager.size == 0
    assert manager.stats().removals["resync"] == 2
    s = sub.stats()
    assert (s.version_source_failures, s.resyncs, s.resync_evictions) == (1, 1, 2)
    assert any(
        "version source failed" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


async def test_without_a_source_resync_evicts_everything_as_resync_with_a_warning(
    manager: Manager, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database()
    await cache(manager, db, {"a": 1, "b": 1})
    sub = subscriber(manager, None)
    with caplog.at_level(logging.WARNING):
        await sub._resync()
    assert manager.size == 0
    assert manager.stats().removals["resync"] == 2
    assert manager.stats().removals["explicit"] == 0
    assert sub.stats().resync_evictions == 2
    assert any("no version source" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("fault", ["raises", "hangs", "not a mapping"])
async def test_a_failing_source_at_reconciliation_keeps_the_cache_and_retries(
    manager: Manager, fault: str
) -> None:
    db = Database()
    await cache(manager, db, {"a": 1, "b": 1})
    db.versions["a"] = 2  # a publish that never happened
    broken = True
    calls = 0
    fourth_call = asyncio.Event()  # so three calls have failed and been counted

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        nonlocal calls
        calls += 1
        if calls == 4:
            fourth_call.set()
        if broken:
            if fault == "raises":
                raise ConnectionError("database down")
            if fault == "hangs":
                await asyncio.Event().wait()
            return None  # type: ignore[return-value]
        return await db.source(agent_ids)

    sub = subscriber(manager, source, version_source_timeout_ms=50, reconcile_interval_ms=10)
    sub._connected.set()  # as if subscribed: reconciliation runs only while connected
    task = asyncio.create_task(sub._reconcile_forever())
    try:
        async with asyncio.timeout(60):
            await fourth_call.wait()
        assert sub.stats().version_source_failures >= 3
        assert manager.size == 2 and manager.version_of("a") == 1  # kept, not emptied
        assert sub.stats().reconciliations == 0
        repaired = asyncio.Event()
        manager.on_removal(lambda agent_id, cause: repaired.set())  # "a" replaced
        broken = False
        async with asyncio.timeout(60):
            await repaired.wait()
        await settle()
        assert manager.version_of("a") == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    s = sub.stats()
    assert s.reconciliations >= 1 and s.version_repaired == 1
    assert manager.stats().removals["resync"] == 0 and manager.version_of("b") == 1


# --- settings -------------------------------------------------------------------------------


def timings(
    has_source: bool = True, timeout: int | None = None, interval: int | None = None
) -> tuple[int, int]:
    t = resolve_timings(
        InvalidationSettings(),
        has_source=has_source,
        source_timeout_ms=timeout,
        reconcile_interval_ms=interval,
    )
    return t.source_timeout_ms, t.reconcile_interval_ms


def test_defaults() -> None:
    assert timings() == (10_000, 60_000)
    assert timings(has_source=False) == (10_000, 0)


def test_keyword_beats_environment_beats_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS", "2500")
    monkeypatch.setenv("AGENT_CFG_RECONCILE_INTERVAL_MS", "0")
    assert timings() == (2_500, 0)
    assert timings(timeout=700, interval=1_500) == (700, 1_500)
    assert timings(has_source=False) == (2_500, 0)  # no source: nothing to reconcile


@pytest.mark.parametrize("raw", ["abc", "--5", "1.5", "-1"])
def test_bad_environment_value_warns_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, raw: str
) -> None:
    monkeypatch.setenv("AGENT_CFG_RECONCILE_INTERVAL_MS", raw)
    monkeypatch.setenv("AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS", raw)
    with caplog.at_level(logging.WARNING):
        assert timings() == (10_000, 60_000)
    messages = [r.getMessage() for r in caplog.records]
    for var in ("AGENT_CFG_RECONCILE_INTERVAL_MS", "AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS"):
        assert any(m.startswith(f"{var}={raw!r} ignored") for m in messages), messages


def test_ceilings_cap_keyword_and_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert timings(timeout=10**9, interval=10**12) == (
            MAX_SOURCE_TIMEOUT_MS, MAX_RECONCILE_INTERVAL_MS,
        )
        monkeypatch.setenv("AGENT_CFG_RECONCILE_INTERVAL_MS", str(10**12))
        assert timings()[1] == MAX_RECONCILE_INTERVAL_MS
    assert sum("capped" in r.getMessage() for r in caplog.records) == 3


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("version_source_timeout_ms", 0),
        ("version_source_timeout_ms", -1),
        ("version_source_timeout_ms", True),
        ("reconcile_interval_ms", -1),
        ("reconcile_interval_ms", 1.5),
    ],
)
async def test_bad_keyword_is_a_value_error(
    manager: Manager, keyword: str, value: object
) -> None:
    with pytest.raises(ValueError, match=keyword):
        subscriber(manager, Database().source, **{keyword: value})  # type: ignore[arg-type]


async def test_reconciliation_without_a_source_is_a_value_error(manager: Manager) -> None:
    with pytest.raises(ValueError, match="version_source"):
        subscriber(manager, None, reconcile_interval_ms=1_000)


async def test_a_source_needs_the_manager_as_target() -> None:
    class Target:
        async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

        async def evict(self, agent_id: str) -> bool:
            return False

        async def evict_all(self) -> int:
            return 0

    with pytest.raises(TypeError, match="AgentRuntimeManager"):
        InvalidationSubscriber(Target(), URL, version_source=Database().source)


def test_container_path_settings_object_and_not_a_redis_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = InvalidationSettings.model_validate(
        {"AGENT_CFG_RECONCILE_INTERVAL_MS": "5000", "AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS": "750"}
    )
    t = resolve_timings(
        settings, has_source=True, source_timeout_ms=None, reconcile_interval_ms=None
    )
    assert (t.source_timeout_ms, t.reconcile_interval_ms) == (750, 5_000)
    assert not settings.configured  # nothing connects because of these two
    monkeypatch.setenv("AGENT_CFG_RECONCILE_INTERVAL_MS", "1000")
    assert not InvalidationSettings().configured


async def test_a_repair_in_progress_is_not_queued_or_counted_twice(manager: Manager) -> None:
    db = Database()
    db.versions["a"] = 1
    gate = asyncio.Event()
    fast = db.seed("a")

    async def slow_rebuild() -> RuntimeSeed[str, object] | None:
        await gate.wait()  # a rebuild slower than the reconciliation interval
        return await fast.rebuild()

    await manager.shadow_seed(RuntimeSeed("a", "u", 1, fast.runtime, slow_rebuild))
    sub = subscriber(manager, db.source)
    assert sub._check is not None
    assert await sub._check.run() == 0  # up to date
    db.versions["a"] = 2
    assert await sub._check.run() == 1
    for _ in range(5):
        await asyncio.sleep(0)
    assert await sub._check.run() == 0  # the rebuild to 2 is still running
    assert sub.stats().version_repaired == 1 and sub.stats().pending == 1
    gate.set()
    await sub.drain()
    assert manager.version_of("a") == 2 and db.rebuilds == [("a", 2)]
    assert await sub._check.run() == 0 and sub.stats().version_checked == 4
