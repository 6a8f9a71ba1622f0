"""Issue 23, finding 2: the version source and the manager are user code, bounded by us.

A source that swallows ``CancelledError`` is abandoned at its timeout; one that raises
``CancelledError`` or answers with a mapping whose lookups raise is a failed call; the listener
and the reconciler are supervised (an unexpected exit is an ERROR and a restart); ``stop()``
returns within its bound whatever it waits for. Waits on real time are hang guards only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pytest

from snak_runtime.invalidation import InvalidationSubscriber, _subscriber, encode_message
from snak_runtime.invalidation._versions import VersionSourceFailed
from tests.helpers import MakeManager, MakeSeed, Manager, settle
from tests.unit.invalidation_fakes import FakeBus, RecordingTarget

URL = "redis://127.0.0.1:1"
HANG_GUARD_S = 120.0  # a hang guard only: no correct run comes near it, loaded or not


async def finished(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` ends within the hang guard (never an assertion on how fast)."""
    done, _ = await asyncio.wait({task}, timeout=HANG_GUARD_S)
    return bool(done)


async def cached(make_manager: MakeManager, make_seed: MakeSeed, *ids: str) -> Manager:
    manager = make_manager()
    for agent_id in ids:
        await manager.shadow_seed(make_seed(agent_id))
    return manager


class Swallower:
    """A version source that ignores cancellation until ``release``, then fails or answers."""

    def __init__(self, fail_late: bool = False) -> None:
        self.release = asyncio.Event()
        self.cancellations = 0
        self.calls = 0
        self.fail_late = fail_late

    async def __call__(self, agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        self.calls += 1
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                self.cancellations += 1  # swallowed: on with the query, as if nothing happened
        if self.fail_late:
            raise ConnectionError("late failure")
        return dict.fromkeys(agent_ids, 1)


async def test_a_source_that_swallows_cancellation_is_abandoned_at_its_timeout(
    make_manager: MakeManager, make_seed: MakeSeed, caplog: pytest.LogCaptureFixture
) -> None:
    manager = await cached(make_manager, make_seed, "a", "b")
    source = Swallower(fail_late=True)
    sub = InvalidationSubscriber(manager, URL, version_source=source, version_source_timeout_ms=20)
    from snak_runtime.invalidation import _bounded

    before = _bounded.abandoned_count()
    resync = asyncio.create_task(sub._resync())
    try:
        assert await finished(resync), "the resync hung on a source that swallows cancellation"
        await resync
        st = sub.stats()
        assert (st.version_source_failures, st.version_source_abandoned, st.resyncs) == (1, 1, 1)
        assert manager.size == 0  # the fallback of a failed source at a reconnect
        assert _bounded.abandoned_count() == before + 1 and source.cancellations >= 1
        with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
            source.release.set()
            await settle()
        assert _bounded.abandoned_count() == before
        late = [r for r in caplog.records if "failed later" in r.getMessage()]
        assert len(late) == 1 and "late failure" in late[0].getMessage()
    finally:
        source.release.set()
        resync.cancel()
        await asyncio.gather(resync, return_exceptions=True)
        await settle()


async def test_a_source_raising_cancelled_error_is_a_failed_call(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    manager = await cached(make_manager, make_seed, "a")

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        raise asyncio.CancelledError  # nobody cancelled us

    sub = InvalidationSubscriber(manager, URL, version_source=source)
    assert sub._check is not None
    with pytest.raises(VersionSourceFailed, match="CancelledError"):
        await sub._check.run()
    assert sub.stats().version_source_failures == 1
    assert manager.size == 1


class HostileMapping(Mapping[str, int]):
    def __getitem__(self, key: str) -> int:
        raise RuntimeError("lookup failed")

    def __iter__(self) -> Iterator[str]:
        raise RuntimeError("iteration failed")

    def __len__(self) -> int:
        return 1


async def test_a_mapping_whose_lookups_raise_is_a_failed_call_not_a_reconnect_loop(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    manager = await cached(make_manager, make_seed, "a", "b")

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        return HostileMapping()

    sub = InvalidationSubscriber(manager, URL, version_source=source)
    assert sub._check is not None
    with pytest.raises(VersionSourceFailed, match="RuntimeError"):
        await sub._check.run()
    await sub._resync()  # before: RuntimeError out of the resync, so reconnect, forever
    st = sub.stats()
    assert (st.version_source_failures, st.resyncs, st.resync_evictions) == (2, 1, 2)


# --- supervision --------------------------------------------------------------------------------


async def wait_for(predicate: Any, what: str) -> None:
    async with asyncio.timeout(HANG_GUARD_S):  # hang guard only
        while not predicate():
            await asyncio.sleep(0.002)


async def test_the_listener_is_restarted_after_an_unexpected_exit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    target = RecordingTarget()
    sub = InvalidationSubscriber(target, URL, backoff_base_ms=1, backoff_cap_ms=5)
    real_receive = sub._receive
    calls = 0

    async def receive(pubsub: Any, run: Any = None) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError  # raised by code it called; nobody cancelled it
        await real_receive(pubsub, run)

    monkeypatch.setattr(sub, "_receive", receive)
    with caplog.at_level(logging.ERROR, logger="snak_runtime.invalidation"):
        await sub.start()
        try:
            await wait_for(lambda: sub.connected and calls == 2, "the restart")
            bus.push(encode_message("a", 1))
            await wait_for(lambda: sub.stats().applied == 1, "a message after the restart")
            st = sub.stats()
            assert (st.restarts, st.reconnects, st.resyncs) == (1, 1, 1)
            assert target.calls == [("evict_all", "*", None), ("invalidate", "a", 1)]
        finally:
            await sub.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "listener ended unexpectedly" in errors[0]


async def test_the_reconciler_is_restarted_after_an_unexpected_exit(
    monkeypatch: pytest.MonkeyPatch,
    make_manager: MakeManager,
    make_seed: MakeSeed,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    manager = await cached(make_manager, make_seed, "a")

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        return dict.fromkeys(agent_ids, 1)

    sub = InvalidationSubscriber(
        manager,
        URL,
        version_source=source,
        reconcile_interval_ms=1,
        backoff_base_ms=1,
        backoff_cap_ms=5,
    )
    assert sub._check is not None
    check = sub._check
    real_run = check.run
    calls = 0

    async def run() -> int:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise asyncio.CancelledError  # before: the reconciler ended, silently, for good
        return await real_run()

    monkeypatch.setattr(check, "run", run)
    with caplog.at_level(logging.ERROR, logger="snak_runtime.invalidation"):
        await sub.start()
        try:
            await wait_for(lambda: sub.stats().reconciliations >= 1, "a reconciliation")
            assert sub.stats().restarts == 1 and manager.size == 1
        finally:
            await sub.stop()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "reconciler ended unexpectedly" in errors[0]


# --- stop() ------------------------------------------------------------------------------------


class StuckTarget(RecordingTarget):
    """``on_invalidate`` ignores cancellation until ``release``."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        self.entered.set()
        while not self.release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # ignores cancellation
                await self.release.wait()


async def test_stop_returns_within_its_bound_when_a_manager_call_never_returns(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    target = StuckTarget()
    sub = InvalidationSubscriber(target, URL, stop_timeout_ms=50)
    await sub.start()
    bus.push(encode_message("a", 1))
    await asyncio.wait_for(target.entered.wait(), HANG_GUARD_S)
    stopping = asyncio.create_task(sub.stop())
    try:
        with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
            assert await finished(stopping), "stop() waited for a call that never returns"
        assert any("abandoned" in r.getMessage() for r in caplog.records)
        assert not sub.connected and sub.stats().pending == 0
    finally:
        target.release.set()
        await settle()
        await asyncio.gather(stopping, return_exceptions=True)


async def test_stop_returns_within_its_bound_during_a_stuck_resync(
    monkeypatch: pytest.MonkeyPatch, make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    manager = await cached(make_manager, make_seed, "a")
    source = Swallower()
    sub = InvalidationSubscriber(
        manager,
        URL,
        version_source=source,
        version_source_timeout_ms=300_000,
        connect_timeout_ms=100,
    )
    sub._resync_due = True  # as after an outage: the first subscription resyncs
    starting = asyncio.create_task(sub.start())
    await wait_for(lambda: source.calls == 1, "the resync to ask the source")
    stopping = asyncio.create_task(sub.stop())
    try:
        assert await finished(stopping), "stop() waited for a version source that never returns"
        assert manager.size == 1  # nothing evicted: the resync was stopped, not failed
    finally:
        source.release.set()
        await settle()
        await asyncio.gather(stopping, starting, return_exceptions=True)
        await settle()
