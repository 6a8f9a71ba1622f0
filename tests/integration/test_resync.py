"""Versioned resync and reconciliation against a real server (started by conftest).

A fleet outage repairs only what changed; a publish that never happened is repaired by
reconciliation; a version source that raises, hangs or returns garbage falls back (at a
reconnect) or is retried (at reconciliation), and nothing stale is served afterwards.
Waits poll with generous deadlines; the counts are asserted, the times printed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_server import RedisServer
from test_redis import (
    ConfigStore,
    Manager,
    Worker,
    make_manager,
    publish_invalidation,
    spawn_fleet,
    wait_until,
    write_version,
)

from snak_runtime import RuntimeNotCached
from snak_runtime.invalidation import InvalidationSubscriber

DEADLINE_S = 60.0


async def poll_states(
    workers: list[Worker], done: Any, what: str, timeout_s: float = DEADLINE_S
) -> list[dict[str, Any]]:
    """Ask every worker for its state until ``done(states)``; fail after the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = list(await asyncio.gather(*(w.ask("state", "state") for w in workers)))
        if done(states):
            return states
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}: {states}")
        await asyncio.sleep(0.05)


@pytest.mark.slow  # a multi-process fleet: the full suite (--full)
@pytest.mark.parametrize("with_source", [True, False], ids=["version-source", "no-source"])
async def test_fleet_outage_rebuilds_only_what_changed(
    redis_server: RedisServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_source: bool,
) -> None:
    n_agents, n_changed, n_deleted = 50, 20, 5
    store = tmp_path / "store"
    store.mkdir()
    agents = [f"agent-{i}" for i in range(n_agents)]
    changed, deleted = agents[:n_changed], agents[n_changed : n_changed + n_deleted]
    for a in agents:
        write_version(store, a, 1)
    args = ("--version-source",) if with_source else ()
    env = {"AGENT_CFG_RECONCILE_INTERVAL_MS": "0"}  # the resync alone must repair it
    async with spawn_fleet(3, redis_server.url, store, agents, *args, extra_env=env) as workers:
        await poll_states(
            workers,
            lambda ss: all(s["versions"] == dict.fromkeys(agents, 1) for s in ss),
            "50 agents cached in every worker",
        )
        redis_server.stop(kill=True)
        await poll_states(
            workers, lambda ss: not any(s["subscriber"]["connected"] for s in ss), "the loss"
        )
        lost = 0
        for a in changed:
            write_version(store, a, 2)
        for a in deleted:
            write_version(store, a, None)
        for a in changed + deleted:
            with pytest.raises((RedisConnectionError, OSError)):
                await publish_invalidation(a, 2, redis=redis_server.url)
            lost += 1
        restarted = time.monotonic()
        redis_server.start()
        expected: dict[str, int | None] = {
            a: 2 if a in changed else None if a in deleted else 1 for a in agents
        }

        def resynced(states: list[dict[str, Any]]) -> bool:
            return all(
                s["subscriber"]["connected"]
                and s["subscriber"]["resyncs"] == 1
                and s["subscriber"]["pending"] == 0
                and (not with_source or s["versions"] == expected)
                for s in states
            )

        states = await poll_states(workers, resynced, "every worker resynced")
        resync_s = time.monotonic() - restarted
        served = await asyncio.gather(*(w.ask("serve", "served") for w in workers))
        after = await asyncio.gather(*(w.ask("state", "state") for w in workers))
        timings = await asyncio.gather(*(w.ask("timings", "timings") for w in workers))

    for s, serve, later, t in zip(states, served, after, timings, strict=True):
        assert serve["versions"] == expected, serve  # only the newest versions are served
        sub, cache = s["subscriber"], s["cache"]
        assert sub["reconnects"] == 1
        rebuilt_or_built = sorted(k for k in t["built"] if not k.endswith("@1"))
        assert rebuilt_or_built == sorted(f"{a}@2" for a in changed)
        if with_source:
            # Exactly the changed agents were rebuilt, the deleted ones evicted as `resync`.
            assert cache["rebuilds"] == n_changed and later["cache"]["rebuilds"] == n_changed
            assert cache["removals"] == {
                "expired": 0, "idle": 0, "capacity": 0, "invalidated": n_changed,
                "replaced": 0, "explicit": 0, "shutdown": 0, "resync": n_deleted, "refreshed": 0,
                "quota": 0,
            }
            assert (sub["version_checked"], sub["version_repaired"]) == (n_agents, 25)
            assert (sub["resync_evictions"], sub["version_source_failures"]) == (n_deleted, 0)
            # Serving built only the 5 deleted (and found nothing): no rebuild storm.
            assert later["cache"]["loads"] - cache["loads"] == n_deleted
        else:
            # Before versioned resync: every entry evicted, every agent built again.
            assert cache["rebuilds"] == 0
            assert cache["removals"]["resync"] == n_agents
            assert sub["resync_evictions"] == n_agents
            assert later["cache"]["loads"] - cache["loads"] == n_agents
    rebuilds = [s["cache"]["rebuilds"] for s in states]
    loads = [
        later["cache"]["loads"] - s["cache"]["loads"]
        for s, later in zip(states, after, strict=True)
    ]
    with capsys.disabled():
        print(
            f"\n[resync {'with' if with_source else 'without'} a version source] 3 processes, "
            f"{n_agents} cached agents, {n_changed} changed + {n_deleted} deleted while the "
            f"server was down ({lost} publishes lost): per worker {rebuilds} rebuilds at the "
            f"resync, then {loads} builds serving all {n_agents} (the {n_deleted} deleted find "
            f"nothing); resynced {resync_s:.2f} s after the restart"
        )


class VersionTable:
    """The configuration database in process, and a version source with switchable faults."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store
        self.fault: str | None = None
        self.calls = 0

    async def source(self, agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        self.calls += 1
        if self.fault == "raises":
            raise ConnectionError("the configuration database is down")
        if self.fault == "hangs":
            await asyncio.Event().wait()
        if self.fault == "garbage":
            return "not a mapping"  # type: ignore[return-value]
        return {a: self.store.versions.get(a) for a in agent_ids}


async def test_a_lost_publish_is_repaired_by_reconciliation(
    redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    store = ConfigStore()
    manager = make_manager()
    for i in range(10):
        await store.seed(manager, f"a{i}", 1)
    table = VersionTable(store)
    sub = InvalidationSubscriber(
        manager, redis_server.url, version_source=table.source, reconcile_interval_ms=200
    )
    await sub.start()
    try:
        assert sub.connected
        # The publisher committed and crashed before PUBLISH: nothing reaches the channel.
        store.versions.update(a3=2, a7=5)
        del store.versions["a9"]
        changed = time.monotonic()
        await wait_until(
            lambda: (manager.version_of("a3"), manager.version_of("a7"), "a9" in manager)
            == (2, 5, False),
            timeout_s=DEADLINE_S,
            what="reconciliation",
        )
        repair_s = time.monotonic() - changed
        await sub.drain()
        st = sub.stats()
        assert (st.reconnects, st.resyncs, st.received) == (0, 0, 0)  # never disconnected
        assert st.reconciliations >= 1 and st.version_repaired == 3
        assert st.resync_evictions == 1
        stats = manager.stats()
        assert stats.rebuilds == 2 and stats.removals["resync"] == 1
        assert all(manager.version_of(f"a{i}") == 1 for i in (0, 1, 2, 4, 5, 6, 8))
    finally:
        await sub.stop()
        await manager.aclose()
    with capsys.disabled():
        print(f"\n[reconcile] a lost publish repaired {repair_s:.2f} s after the change "
              f"(interval 200 ms)")


async def kill_pubsub_connections(client: Redis) -> None:
    """Drop the subscriber's connection without stopping the server (it must reconnect)."""
    assert await client.client_kill_filter(_type="pubsub") >= 1


@pytest.mark.parametrize("fault", ["raises", "hangs", "garbage"])
async def test_a_failing_source_is_retried_then_falls_back_and_serves_nothing_stale(
    redis_server: RedisServer, fault: str
) -> None:
    store = ConfigStore()
    manager = make_manager()
    for agent_id in ("a", "b", "c", "d"):
        await store.seed(manager, agent_id, 1)
    table = VersionTable(store)
    sub = InvalidationSubscriber(
        manager,
        redis_server.url,
        version_source=table.source,
        version_source_timeout_ms=200,
        reconcile_interval_ms=100,
        backoff_base_ms=20,
        backoff_cap_ms=200,
    )
    client = Redis.from_url(redis_server.url)
    await sub.start()
    try:
        # At reconciliation: counted, retried, the cache kept whole.
        table.fault = fault
        store.versions["a"] = 2  # a lost publish
        await wait_until(
            lambda: sub.stats().version_source_failures >= 3, DEADLINE_S, "3 failed checks"
        )
        assert manager.size == 4 and manager.stats().removals["resync"] == 0
        table.fault = None
        await wait_until(lambda: manager.version_of("a") == 2, DEADLINE_S, "the retry's repair")

        # At a reconnect: the fallback evicts everything (cause resync).
        table.fault = fault
        store.versions["b"] = 2
        del store.versions["c"]
        await kill_pubsub_connections(client)
        await wait_until(
            lambda: sub.connected and sub.stats().resyncs == 1, DEADLINE_S, "the resync"
        )
        assert manager.size == 0
        assert manager.stats().removals["resync"] == 4
        assert sub.stats().resync_evictions == 4
        table.fault = None
        served = {}
        for agent_id in ("a", "b", "c", "d"):
            try:
                async with manager.lease(agent_id, build=store.load) as lease:
                    served[agent_id] = lease.cfg_version
            except RuntimeNotCached:
                served[agent_id] = None
        assert served == {"a": 2, "b": 2, "c": None, "d": 1}
    finally:
        await sub.stop()
        await client.aclose()
        await manager.aclose()


async def test_the_container_takes_a_version_source(redis_server: RedisServer) -> None:
    from snak_runtime.containers import RuntimeContainer
    from snak_runtime.invalidation import InvalidationSettings

    store = ConfigStore()
    table = VersionTable(store)
    container = RuntimeContainer()
    container.invalidation_settings.override(
        InvalidationSettings.for_url(redis_server.url)
    )
    container.version_source.override(table.source)
    await container.init_resources()  # type: ignore[misc]
    try:
        manager: Manager = container.manager()
        sub = await container.invalidation()
        assert isinstance(sub, InvalidationSubscriber) and sub.connected
        await store.seed(manager, "a", 1)
        await store.seed(manager, "b", 1)
        store.versions["a"] = 2
        del store.versions["b"]
        killer = Redis.from_url(redis_server.url)
        try:
            await kill_pubsub_connections(killer)
        finally:
            await killer.aclose()
        await wait_until(lambda: sub.stats().resyncs == 1, DEADLINE_S, "the resync")
        await sub.drain()
        assert (manager.version_of("a"), "b" in manager) == (2, False)
        assert sub.stats().version_checked == 2 and table.calls >= 1
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
