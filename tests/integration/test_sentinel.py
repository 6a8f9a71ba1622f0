"""Invalidation through Redis Sentinel (issue 17), against real processes on loopback ports.

The session's deployment (conftest ``sentinel_cluster``): a master, a replica and three sentinels.
The failover test SIGKILLs the master during a burst of invalidations and checks that a fleet of
three worker processes follows it to the promoted replica. Waits poll with generous deadlines;
nothing asserts on timing.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_server import HOST, free_port
from sentinel_cluster import SentinelCluster
from test_redis import WORKER, Worker, write_version

from snak_runtime import GuardConfig, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import (
    InvalidationPublisher,
    InvalidationSettings,
    InvalidationSubscriber,
    RedisConfigError,
    SentinelEndpoint,
    publish_invalidation,
)
from tests.helpers import Manager

# A master, a replica and three sentinels started for the session: the full suite (--full).
pytestmark = pytest.mark.slow


def sentinel_env(cluster: SentinelCluster, master: str | None = None) -> dict[str, str]:
    return {
        "REDIS_SENTINELS": cluster.sentinels_env,
        "REDIS_SENTINEL_MASTER": master or cluster.service,
    }


async def wait_for(what: str, check: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """Poll ``check()`` (awaited if it returns an awaitable) until it is truthy; return that."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)


def seed(agent_id: str, version: int) -> RuntimeSeed[str, object]:
    async def rebuild() -> RuntimeSeed[str, object] | None:
        return seed(agent_id, version + 1)

    return RuntimeSeed(
        agent_id=agent_id, user_id="u", cfg_version=version, runtime=f"{agent_id}@{version}",
        rebuild=rebuild,
    )  # fmt: skip


@asynccontextmanager
async def container_from_env(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> AsyncIterator[tuple[Manager, InvalidationSubscriber]]:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container = RuntimeContainer()
    container.guards.override(GuardConfig(max_entries=16, max_ttl_ms=600_000))
    await container.init_resources()  # type: ignore[misc]
    try:
        subscriber = await container.invalidation()
        assert isinstance(subscriber, InvalidationSubscriber)
        yield container.manager(), subscriber
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


# --- configuration through the container ----------------------------------------------------


async def test_round_trip_through_sentinel_from_the_environment(
    sentinel_cluster: SentinelCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with container_from_env(monkeypatch, sentinel_env(sentinel_cluster)) as (manager, sub):
        async with asyncio.timeout(20):
            await sub.wait_connected()
        assert isinstance(sub.endpoint, SentinelEndpoint)
        await manager.shadow_seed(seed("a", 1))
        # The publisher reads the same variables and finds the same master.
        assert await publish_invalidation("a", 2) == 1
        await wait_for("the rebuild", lambda: manager.version_of("a") == 2)
        assert await publish_invalidation("a", 2, event="cfg_deleted") == 1
        await wait_for("the eviction", lambda: "a" not in manager)
        assert sub.stats().applied == 2 and sub.stats().reconnects == 0


async def test_a_bad_entry_beside_good_ones_fails_start_naming_it(
    sentinel_cluster: SentinelCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 23: a malformed list fails start-up (before: a WARNING, the rest used).
    env = sentinel_env(sentinel_cluster)
    env["REDIS_SENTINELS"] = f"{HOST}:{free_port()}:9,{env['REDIS_SENTINELS']}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    container = RuntimeContainer()
    with pytest.raises(RedisConfigError, match=r"^REDIS_SENTINELS entry '127\.0\.0\.1:"):
        await container.init_resources()  # type: ignore[misc]
    await container.shutdown_resources()  # type: ignore[misc]


@pytest.mark.parametrize("fault", ["unknown master", "no sentinel"])
async def test_bad_sentinel_configuration_warns_naming_the_variable_and_runs_on(
    sentinel_cluster: SentinelCluster,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: str,
) -> None:
    env = sentinel_env(sentinel_cluster)
    if fault == "unknown master":
        env["REDIS_SENTINEL_MASTER"] = "no-such-master"
        expected = (
            "REDIS_SENTINEL_MASTER='no-such-master' is not a master the sentinels in "
            f"REDIS_SENTINELS monitor (they monitor [{sentinel_cluster.service!r}])"
        )
    else:
        nobody = [free_port(), free_port()]
        env["REDIS_SENTINELS"] = ",".join(f"{HOST}:{p}" for p in nobody)
        expected = "no sentinel in REDIS_SENTINELS answers: " + ", ".join(
            f"{HOST}:{p} (ConnectionError)" for p in nobody
        )
    # A hang guard: a stuck await fails here, with its traceback, instead of timing out.
    with caplog.at_level(logging.WARNING):
        async with asyncio.timeout(60), container_from_env(monkeypatch, env) as (manager, sub):
            assert not sub.connected
            warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warned) == 1 and "cannot connect" in warned[0], warned
            assert expected in warned[0]
            # The service keeps working without invalidations; the subscriber keeps retrying.
            await manager.shadow_seed(seed("a", 1))
            assert manager.version_of("a") == 1
            with pytest.raises(RedisConnectionError, match="REDIS_SENTINEL"):
                await publish_invalidation("a", 2)
            await asyncio.sleep(0.5)  # a few retries: quiet (DEBUG), still not connected
            assert not sub.connected
            assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1


# --- a fleet follows a failover ---------------------------------------------------------------


async def spawn_worker(
    name: str, env: dict[str, str], store: Path, agents: list[str], *extra: str
) -> Worker:
    full = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
    full.pop("AGENT_CFG_INVALIDATE_CHANNEL", None)
    full.update(env)
    log = store.parent / f"{name}.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(WORKER), "--name", name, "--store", str(store),
            "--agents", ",".join(agents), *extra,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=stderr, env=full,
        )  # fmt: skip
    return Worker(name, proc, log)


class Fleet:
    """Three workers; one command at a time per worker (their stdout is one stream)."""

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self._locks = {w.name: asyncio.Lock() for w in workers}
        self.served_max: dict[tuple[str, str], int] = {}  # (worker, agent) -> newest served
        self.regressions: list[str] = []
        self.served_at: list[float] = []  # time.monotonic() of each completed serve round

    async def ask(self, worker: Worker, command: str, kind: str) -> dict[str, Any]:
        async with self._locks[worker.name]:
            answer: dict[str, Any] = await worker.ask(command, kind)
            return answer

    async def states(self) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.ask(w, "state", "state") for w in self.workers)))

    async def serve(self) -> list[dict[str, Any]]:
        """Serve every agent on every worker; record any version older than one served before."""
        answers = await asyncio.gather(*(self.ask(w, "serve", "served") for w in self.workers))
        for answer in answers:
            for agent, version in answer["versions"].items():
                assert isinstance(version, int), (answer["name"], agent, version)
                key = (answer["name"], agent)
                before = self.served_max.get(key, 0)
                if version < before:
                    self.regressions.append(f"{key}: served {version} after {before}")
                self.served_max[key] = max(before, version)
        self.served_at.append(time.monotonic())
        return list(answers)

    async def keep_serving(self, stop: asyncio.Event) -> int:
        rounds = 0
        while not stop.is_set():
            await self.serve()
            rounds += 1
            await asyncio.sleep(0.02)
        return rounds


@pytest.mark.parametrize("with_source", [True, False], ids=["versioned-resync", "evict-all"])
async def test_fleet_follows_a_failover(
    sentinel_cluster: SentinelCluster,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    with_source: bool,
) -> None:
    n_agents, rounds, kill_after = 20, 6, 50
    store = tmp_path / "store"
    store.mkdir()
    agents = [f"agent-{i}" for i in range(n_agents)]
    for a in agents:
        write_version(store, a, 1)
    settings = InvalidationSettings.for_sentinels(
        sentinel_cluster.sentinels_env, sentinel_cluster.service
    )
    # The resync after the failover alone must repair the fleet (no periodic reconciliation).
    env = {**sentinel_env(sentinel_cluster), "AGENT_CFG_RECONCILE_INTERVAL_MS": "0"}
    extra = ["--version-source"] if with_source else []
    workers = list(
        await asyncio.gather(*(spawn_worker(f"w{i}", env, store, agents, *extra) for i in range(3)))
    )
    fleet = Fleet(workers)
    stop_serving = asyncio.Event()
    server: asyncio.Task[int] | None = None
    # A long-lived publisher, as a configuration service keeps one; it must follow too.
    publisher = InvalidationPublisher.from_settings(settings)
    try:
        await asyncio.gather(*(w.read("ready") for w in workers))
        server = asyncio.create_task(fleet.keep_serving(stop_serving))

        # A burst of invalidations; the master dies part-way through it.
        delivered, lost, old_port, killed_at = 0, 0, 0, 0.0
        for version in range(2, rounds + 2):
            for a in agents:
                if delivered + lost == kill_after:
                    old_port, killed_at = await asyncio.to_thread(sentinel_cluster.kill_master)
                write_version(store, a, version)  # the database first, then the message
                try:
                    receivers = await publisher.publish(a, version)
                except RedisConnectionError:
                    lost += 1
                    continue
                delivered += 1
                # Before the kill every worker listens; a publish that got through after it
                # (the burst outlasting the failover on a slow machine) may find fewer.
                assert receivers == 3 or killed_at, (a, version, receivers)
        assert killed_at and lost > 0, (delivered, lost)
        promotion = await asyncio.to_thread(sentinel_cluster.wait_promoted, old_port, killed_at)

        # Every worker resubscribes on the new master, counted as a reconnect, and resyncs.
        async def resubscribed() -> list[dict[str, Any]]:
            states = await fleet.states()
            ok = all(
                s["subscriber"]["connected"]
                and (s["subscriber"]["reconnects"], s["subscriber"]["resyncs"]) == (1, 1)
                for s in states
            )
            return states if ok else []

        before = await wait_for("every worker to resubscribe", resubscribed, timeout_s=45)
        resubscribed_s = time.monotonic() - killed_at

        # What the dead master never delivered, the resync repairs: every cache comes to hold
        # the newest version of every agent (the serving loop builds whatever was evicted).
        newest = rounds + 1

        async def resynced() -> list[dict[str, Any]]:
            states = await fleet.states()
            ok = all(s["versions"] == dict.fromkeys(agents, newest) for s in states)
            return states if ok else []

        repaired = await wait_for("every worker to hold the newest versions", resynced, 45)
        repaired_s = time.monotonic() - killed_at
        for s in repaired:
            sub, removals = s["subscriber"], s["cache"]["removals"]
            if with_source:  # only the stale entries were rebuilt, none evicted
                assert sub["version_checked"] >= n_agents and sub["version_source_failures"] == 0
                assert sub["resync_evictions"] == 0 and removals.get("resync", 0) == 0, s
            else:  # every cached entry was evicted as possibly stale
                assert sub["resync_evictions"] == n_agents == removals["resync"], s

        # Publishes after the promotion reach all three: one-shot ones through the settings,
        # and the long-lived publisher's, whose connection died with the old master.
        last = rounds + 2
        for i, a in enumerate(agents):
            write_version(store, a, last)
            if i % 2:
                assert await publisher.publish(a, last) == 3
            else:
                assert await publish_invalidation(a, last, redis=settings) == 3

        async def converged() -> bool:
            served = await fleet.serve()
            return all(s["versions"] == dict.fromkeys(agents, last) for s in served)

        await wait_for("every worker to serve the newest versions", converged, timeout_s=45)
        converged_s = time.monotonic() - killed_at
        stop_serving.set()
        serve_rounds = await server
        server = None

        after = await fleet.states()
        for b, s in zip(before, after, strict=True):
            sub = s["subscriber"]
            assert sub["received"] - b["subscriber"]["received"] >= n_agents, s["name"]
            assert sub["reconnects"] == 1 and sub["dropped"] == {} and sub["connected"]
        assert fleet.regressions == []
        # The fleet kept serving while it had no master (what it had cached, or built fresh).
        during = sum(killed_at < t < killed_at + resubscribed_s for t in fleet.served_at)
        assert serve_rounds > 0 and during > 0
    finally:
        stop_serving.set()
        if server is not None and not server.done():
            server.cancel()
        await asyncio.gather(*([server] if server else []), return_exceptions=True)
        await asyncio.gather(*(w.quit() for w in workers), return_exceptions=True)
        await publisher.aclose()
    with capsys.disabled():
        print(
            f"\n[sentinel failover, {'versioned resync' if with_source else 'evict-all resync'}] "
            f"3 processes, {n_agents} agents; master SIGKILLed after "
            f"{delivered} of {n_agents * rounds} publishes ({lost} lost while it was down); "
            f"promotion {promotion.seconds:.2f} s after the kill, every worker resubscribed "
            f"{resubscribed_s:.2f} s and held every newest version {repaired_s:.2f} s, "
            f"every worker serving the post-promotion versions "
            f"{converged_s:.2f} s after the kill; {len(fleet.served_at)} serve rounds on each "
            f"worker ({during} while resubscribing), none older than before"
        )
