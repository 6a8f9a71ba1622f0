"""Invalidation over a real Redis server (started by conftest on a loopback port).

Round trip, a fleet of worker processes, an outage, bad payloads, and start/stop with Redis down.
Waits poll real I/O with a deadline; nothing asserts on timing except as a hang guard.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis_server import HOST, RedisServer, free_port

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import (
    MAX_PAYLOAD_BYTES,
    DropReason,
    InvalidationPublisher,
    InvalidationSettings,
    InvalidationSubscriber,
    encode_message,
    publish_invalidation,
)
from snak_runtime.testing import RecordingDisposer
from tests.helpers import Manager

WORKER = Path(__file__).with_name("fleet_worker.py")
CHANNEL = "agent_cfg_invalidate"


# --- helpers --------------------------------------------------------------------------------


async def wait_until(
    predicate: Callable[[], bool], timeout_s: float = 15.0, what: str = "condition"
) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.01)


class Agent:
    def __init__(self, agent_id: str, version: int) -> None:
        self.agent_id = agent_id
        self.version = version

    def __repr__(self) -> str:
        return f"Agent({self.agent_id}@{self.version})"


class ConfigStore:
    """The "configuration database": versions per agent, and when each version was built."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.built: dict[tuple[str, int], float] = {}
        self.fail: set[str] = set()

    async def load(self, agent_id: str) -> RuntimeSeed[str, object] | None:
        if agent_id in self.fail:
            raise RuntimeError(f"config service down for {agent_id}")
        version = self.versions.get(agent_id)
        if version is None:
            return None
        self.built.setdefault((agent_id, version), time.perf_counter())

        async def rebuild() -> RuntimeSeed[str, object] | None:
            return await self.load(agent_id)

        return RuntimeSeed(
            agent_id,
            "user",
            version,
            f"{agent_id}@{version}",
            rebuild,
            agent=Agent(agent_id, version),
        )

    async def seed(self, manager: Manager, agent_id: str, version: int) -> None:
        self.versions[agent_id] = version
        seed = await self.load(agent_id)
        assert seed is not None
        await manager.shadow_seed(seed)


def make_manager(disposer: RecordingDisposer | None = None) -> Manager:
    return AgentRuntimeManager(
        guards=GuardConfig(max_entries=1_000, max_ttl_ms=600_000),
        settings=RuntimeCacheSettings(),
        disposer=disposer or RecordingDisposer(),
    )


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    c = Redis.from_url(redis_server.url)
    try:
        yield c
    finally:
        await c.aclose()


@asynccontextmanager
async def subscribed(
    manager: Manager, url: str, **kwargs: Any
) -> AsyncIterator[InvalidationSubscriber]:
    sub = InvalidationSubscriber(manager, url, **kwargs)
    await sub.start()
    assert sub.connected
    try:
        yield sub
    finally:
        await sub.stop()


# --- round trip -----------------------------------------------------------------------------


async def test_round_trip_update_then_delete(redis_server: RedisServer, client: Redis) -> None:
    store = ConfigStore()
    disposers = [RecordingDisposer(), RecordingDisposer()]
    managers = [make_manager(d) for d in disposers]
    subs = [InvalidationSubscriber(m, redis_server.url) for m in managers]
    for m, s in zip(managers, subs, strict=True):
        await store.seed(m, "a", 1)
        await s.start()
    try:
        store.versions["a"] = 2
        assert await publish_invalidation("a", 2, event="cfg_updated", redis=client) == 2
        await wait_until(lambda: all(m.version_of("a") == 2 for m in managers), what="rebuild")
        for m in managers:
            async with m.lease("a") as lease:
                assert (lease.cfg_version, lease.runtime) == (2, "a@2")

        # snak's delete carries the *old* version: the version rule alone would ignore it.
        del store.versions["a"]
        assert await publish_invalidation("a", 2, event="cfg_deleted", redis=client) == 2
        await wait_until(lambda: all("a" not in m for m in managers), what="eviction")
        for m, d in zip(managers, disposers, strict=True):
            await wait_until(lambda d=d: len(d.disposed) == 2, what="disposal")  # type: ignore[misc]
            assert sorted(repr(a) for a in d.disposed) == ["Agent(a@1)", "Agent(a@2)"]
            assert m.size == 0
        for s in subs:
            st = s.stats()
            assert (st.received, st.applied, st.failures, st.dropped_total) == (2, 2, 0, 0)
    finally:
        for s in subs:
            await s.stop()
        for m in managers:
            await m.aclose()


async def test_publish_helper_accepts_url_settings_or_environment(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = make_manager()
    async with subscribed(manager, redis_server.url) as sub:
        assert await publish_invalidation("x", 1, redis=redis_server.url) == 1
        settings = InvalidationSettings.for_url(redis_server.url)
        assert await publish_invalidation("x", 2, redis=settings) == 1
        monkeypatch.setenv("REDIS_URL", redis_server.url)
        assert await publish_invalidation("x", 3) == 1
        assert await publish_invalidation("x", 3, channel="elsewhere") == 0
        await wait_until(lambda: sub.stats().applied == 3, what="3 applied")
    await manager.aclose()
    monkeypatch.delenv("REDIS_URL")
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        await publish_invalidation("x", 4)


async def test_publisher_constructors(redis_server: RedisServer, client: Redis) -> None:
    manager = make_manager()
    async with subscribed(manager, redis_server.url) as sub:
        async with InvalidationPublisher.from_url(redis_server.url) as by_url:
            assert by_url.channel == CHANNEL
            assert await by_url.publish("x", 1) == 1
            assert await by_url.publish("x", 2, "cfg_updated") == 1
        settings = InvalidationSettings.for_url(redis_server.url, channel="other")
        async with InvalidationPublisher.from_settings(settings) as by_settings:
            assert by_settings.channel == "other"
            assert await by_settings.publish("x", 3) == 0  # nobody listens there
        async with InvalidationPublisher.from_client(client) as by_client:
            assert await by_client.publish("x", 4, "cfg_deleted") == 1
            with pytest.raises(ValueError, match="agent_id"):
                await by_client.publish("", 5)
        assert await client.ping()  # the caller's client is left open
        await wait_until(lambda: sub.stats().applied == 3, what="3 applied")
    await manager.aclose()
    with pytest.raises(RuntimeError, match="REDIS_URL"):
        InvalidationPublisher.from_settings(InvalidationSettings())


async def test_custom_channel_from_environment(
    redis_server: RedisServer, client: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENT_CFG_INVALIDATE_CHANNEL", "cfg_bus")
    manager = make_manager()
    async with subscribed(manager, redis_server.url) as sub:
        assert sub.channel == "cfg_bus"
        assert await client.publish(CHANNEL, encode_message("a", 1)) == 0
        assert await publish_invalidation("a", 1, redis=client) == 1
        await wait_until(lambda: sub.stats().applied == 1)
    await manager.aclose()


# --- bad input ------------------------------------------------------------------------------

BAD: list[tuple[bytes | str, DropReason]] = [
    ("{not json", DropReason.INVALID_JSON),
    (b"\xff\xfe", DropReason.INVALID_JSON),
    ('{"agent_id": "a", "cfg_version": NaN}', DropReason.INVALID_JSON),
    ('["a", 1]', DropReason.NOT_OBJECT),
    ('{"cfg_version": 5}', DropReason.BAD_AGENT_ID),
    ('{"agent_id": "", "cfg_version": 5}', DropReason.BAD_AGENT_ID),
    ('{"agent_id": 7, "cfg_version": 5}', DropReason.BAD_AGENT_ID),
    (json.dumps({"agent_id": "a" * 256, "cfg_version": 5}), DropReason.AGENT_ID_TOO_LONG),
    ('{"agent_id": "a", "cfg_version": "five"}', DropReason.BAD_CFG_VERSION),
    ('{"agent_id": "a", "cfg_version": true}', DropReason.BAD_CFG_VERSION),
    ('{"agent_id": "a", "cfg_version": 1e400}', DropReason.BAD_CFG_VERSION),
    ('{"agent_id": "a"}', DropReason.BAD_CFG_VERSION),
    (
        json.dumps({"agent_id": "a", "cfg_version": 5, "pad": "x" * MAX_PAYLOAD_BYTES}),
        DropReason.TOO_LARGE,
    ),
]


async def test_every_bad_payload_is_dropped_and_the_next_valid_one_applies(
    redis_server: RedisServer, client: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    store = ConfigStore()
    manager = make_manager()
    await store.seed(manager, "a", 0)
    expected: dict[str, int] = {}
    with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
        async with subscribed(manager, redis_server.url) as sub:
            for version, (payload, reason) in enumerate(BAD, start=1):
                await client.publish(CHANNEL, payload)
                expected[reason.value] = expected.get(reason.value, 0) + 1
                store.versions["a"] = version
                await client.publish(CHANNEL, encode_message("a", version))
                await wait_until(lambda v=version: manager.version_of("a") == v)  # type: ignore[misc]
            st = sub.stats()
            assert dict(st.dropped) == expected
            assert (st.received, st.applied, st.failures) == (2 * len(BAD), len(BAD), 0)
    await manager.aclose()
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    # issue 23: rate-limited, one line per reason per interval (then a count at stop())
    assert len(drops) == len(expected) and all(r.levelno == logging.WARNING for r in drops)


async def test_failing_rebuild_is_counted_and_the_loop_goes_on(
    redis_server: RedisServer, client: Redis
) -> None:
    store = ConfigStore()
    manager = make_manager()
    await store.seed(manager, "broken", 1)
    await store.seed(manager, "fine", 1)
    store.fail.add("broken")
    async with subscribed(manager, redis_server.url) as sub:
        await publish_invalidation("broken", 2, redis=client)
        store.versions["fine"] = 2
        await publish_invalidation("fine", 2, redis=client)
        await wait_until(lambda: sub.stats().applied == 1 and sub.stats().failures == 1)
        assert "broken" not in manager  # the stale runtime is not served
        assert manager.version_of("fine") == 2
        assert manager.stats().rebuild_failures == 1
    await manager.aclose()


# --- outages and lifecycle ------------------------------------------------------------------


async def test_start_and_stop_with_redis_down_through_the_container(
    caplog: pytest.LogCaptureFixture,
) -> None:
    container = RuntimeContainer()
    url = f"redis://{HOST}:{free_port()}/0"  # nothing listens there
    container.invalidation_settings.override(InvalidationSettings.for_url(url))
    with caplog.at_level(logging.WARNING, logger="snak_runtime.invalidation"):
        async with asyncio.timeout(10):
            await container.init_resources()  # type: ignore[misc]
    manager = container.manager()
    sub = await container.invalidation()
    assert isinstance(sub, InvalidationSubscriber)
    assert not sub.connected and not manager.closed
    assert any("cannot connect" in r.getMessage() for r in caplog.records)
    await asyncio.sleep(0.3)  # a few retries in the background
    async with asyncio.timeout(10):
        await container.shutdown_resources()  # type: ignore[misc]
    assert manager.closed
    assert sub.stats().pending == 0 and not sub.connected


async def test_container_without_redis_starts_no_subscriber() -> None:
    container = RuntimeContainer()
    container.invalidation_settings.override(InvalidationSettings())
    await container.init_resources()  # type: ignore[misc]
    assert await container.invalidation() is None
    await container.shutdown_resources()  # type: ignore[misc]


async def test_container_stops_the_subscriber_before_the_manager(
    redis_server: RedisServer,
) -> None:
    container = RuntimeContainer()
    container.invalidation_settings.override(InvalidationSettings.for_url(redis_server.url))
    await container.init_resources()  # type: ignore[misc]
    manager = container.manager()
    sub = await container.invalidation()
    assert isinstance(sub, InvalidationSubscriber) and sub.connected
    order: list[str] = []
    original_stop = sub.stop

    async def stop() -> None:
        order.append(f"subscriber stop (manager closed={manager.closed})")
        await original_stop()

    sub.stop = stop  # type: ignore[method-assign]
    await container.shutdown_resources()  # type: ignore[misc]
    assert order == ["subscriber stop (manager closed=False)"]
    assert manager.closed


@pytest.mark.parametrize("pause_s", [0.0, 0.05, 0.5])
async def test_stop_mid_reconnect_is_clean(pause_s: float) -> None:
    manager = make_manager()
    sub = InvalidationSubscriber(
        manager, f"redis://{HOST}:{free_port()}/0", backoff_base_ms=20, backoff_cap_ms=200
    )
    await sub.start()
    assert not sub.connected
    await asyncio.sleep(pause_s)
    async with asyncio.timeout(5):
        await sub.stop()
    await sub.stop()
    await manager.aclose()
    leftovers = [t for t in asyncio.all_tasks() if t.get_name().startswith("snak-invalidation")]
    assert leftovers == []


async def test_connects_by_itself_once_redis_comes_up_and_resyncs(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    late = RedisServer(redis_server.binary)  # not started yet
    store = ConfigStore()
    manager = make_manager()
    sub = InvalidationSubscriber(manager, late.url, backoff_base_ms=20, backoff_cap_ms=200)
    try:
        with caplog.at_level(logging.INFO, logger="snak_runtime.invalidation"):
            await sub.start()
            assert not sub.connected
            await store.seed(manager, "a", 1)  # cached while deaf: may miss invalidations
            late.start()
            await wait_until(lambda: sub.connected, what="connection")
        st = sub.stats()
        assert (st.reconnects, st.resyncs, st.resync_evictions) == (1, 1, 1)
        assert "a" not in manager
        assert any("reconnected" in r.getMessage() for r in caplog.records)
        assert await publish_invalidation("a", 2, redis=late.url) == 1
    finally:
        await sub.stop()
        await manager.aclose()
        late.close()


async def test_in_process_outage_reconnects_and_resyncs(
    redis_server: RedisServer,
) -> None:
    store = ConfigStore()
    manager = make_manager()
    for i in range(5):
        await store.seed(manager, f"a{i}", 1)
    sub = InvalidationSubscriber(manager, redis_server.url, backoff_base_ms=20, backoff_cap_ms=200)
    await sub.start()
    try:
        redis_server.stop()
        await wait_until(lambda: not sub.connected, what="loss noticed")
        for i in range(5):
            store.versions[f"a{i}"] = 2  # changed while Redis is down: the message is lost
            with pytest.raises((RedisConnectionError, OSError)):
                await publish_invalidation(f"a{i}", 2, redis=redis_server.url)
        assert all(manager.version_of(f"a{i}") == 1 for i in range(5))  # stale, for now
        redis_server.start()
        await wait_until(lambda: sub.connected, what="reconnection")
        st = sub.stats()
        assert (st.reconnects, st.resyncs, st.resync_evictions) == (1, 1, 5)
        for i in range(5):
            async with manager.lease(f"a{i}", build=store.load) as lease:
                assert lease.cfg_version == 2
    finally:
        await sub.stop()
        await manager.aclose()


async def test_a_frozen_server_is_noticed_and_resynced_after(redis_server: RedisServer) -> None:
    # A server that stops answering keeps the TCP connection open: only our PING notices.
    store = ConfigStore()
    manager = make_manager()
    await store.seed(manager, "a", 1)
    sub = InvalidationSubscriber(
        manager,
        redis_server.url,
        health_check_interval_s=0.3,
        connect_timeout_ms=300,
        backoff_base_ms=20,
        backoff_cap_ms=200,
    )
    await sub.start()
    try:
        assert sub.connected
        redis_server.pause()
        try:
            await wait_until(lambda: not sub.connected, what="the silence noticed")
        finally:
            redis_server.resume()
        await wait_until(lambda: sub.connected, what="reconnection")
        st = sub.stats()
        assert (st.reconnects, st.resyncs, st.resync_evictions) == (1, 1, 1)
        assert "a" not in manager
        assert await publish_invalidation("a", 2, redis=redis_server.url) == 1
    finally:
        await sub.stop()
        await manager.aclose()


# --- latency (printed, not asserted) --------------------------------------------------------


def first_build_at_or_after(
    built: dict[tuple[str, int], float], agent_id: str, version: int
) -> float | None:
    times = [t for (a, v), t in built.items() if a == agent_id and v >= version]
    return min(times) if times else None


def summarize(latencies_ms: list[float]) -> str:
    ordered = sorted(latencies_ms)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return (
        f"n={len(ordered)} median={statistics.median(ordered):.2f} ms "
        f"p99={p99:.2f} ms max={ordered[-1]:.2f} ms"
    )


async def test_latency_in_process_burst(
    redis_server: RedisServer, client: Redis, capsys: pytest.CaptureFixture[str]
) -> None:
    agents, rounds = 100, 5
    store = ConfigStore()
    manager = make_manager()
    for i in range(agents):
        await store.seed(manager, f"a{i}", 0)
    published: dict[tuple[str, int], float] = {}
    async with subscribed(manager, redis_server.url) as sub:
        for version in range(1, rounds + 1):
            for i in range(agents):
                store.versions[f"a{i}"] = version
                published[(f"a{i}", version)] = time.perf_counter()
                await client.publish(CHANNEL, encode_message(f"a{i}", version))
        await wait_until(
            lambda: all(manager.version_of(f"a{i}") == rounds for i in range(agents)),
            what="burst applied",
        )
        await sub.drain()
        assert sub.stats().received == agents * rounds
    await manager.aclose()
    latencies = []
    for (agent_id, version), sent in published.items():
        done = first_build_at_or_after(store.built, agent_id, version)
        assert done is not None
        latencies.append(max(0.0, done - sent) * 1000)
    with capsys.disabled():
        print(f"\n[latency] in-process, {agents} agents x {rounds} rounds: {summarize(latencies)}")


# --- a fleet of worker processes ------------------------------------------------------------


class Worker:
    """A fleet_worker.py process; one JSON line per answer on its stdout."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.log = log

    @classmethod
    async def spawn(
        cls,
        name: str,
        url: str,
        store: Path,
        agents: list[str],
        *extra_args: str,
        extra_env: dict[str, str] | None = None,
    ) -> Worker:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REDIS_")}
        env.pop("AGENT_CFG_INVALIDATE_CHANNEL", None)
        env["REDIS_URL"] = url
        env.update(extra_env or {})
        log = store.parent / f"{name}.log"
        with log.open("wb") as stderr:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(WORKER),
                "--name",
                name,
                "--store",
                str(store),
                "--agents",
                ",".join(agents),
                *extra_args,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=env,
            )
        return cls(name, proc, log)

    async def read(self, kind: str, timeout_s: float = 30.0) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout_s):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise AssertionError(f"{self.name} exited:\n{self.log.read_text()[-3000:]}")
                answer: dict[str, Any] = json.loads(line)
                if answer["type"] == kind:
                    return answer

    async def ask(self, command: str, kind: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command.encode() + b"\n")
        await self.proc.stdin.drain()
        return await self.read(kind)

    async def quit(self) -> None:
        if self.proc.returncode is None:
            try:
                await self.ask("quit", "bye")
            except (AssertionError, TimeoutError, ConnectionError):
                self.proc.kill()
        async with asyncio.timeout(10):
            await self.proc.wait()


@asynccontextmanager
async def spawn_fleet(
    n: int,
    url: str,
    store: Path,
    agents: list[str],
    *extra_args: str,
    extra_env: dict[str, str] | None = None,
) -> AsyncIterator[list[Worker]]:
    workers = await asyncio.gather(
        *(
            Worker.spawn(f"w{i}", url, store, agents, *extra_args, extra_env=extra_env)
            for i in range(n)
        )
    )
    try:
        await asyncio.gather(*(w.read("ready") for w in workers))
        yield list(workers)
    finally:
        await asyncio.gather(*(w.quit() for w in workers), return_exceptions=True)


def write_version(store: Path, agent_id: str, version: int | None) -> None:
    path = store / agent_id
    if version is None:
        path.unlink(missing_ok=True)
        return
    tmp = path.with_suffix(".tmp")
    tmp.write_text(str(version))
    tmp.replace(path)


async def converge(
    workers: list[Worker], expected: dict[str, int | None], timeout_s: float = 30.0
) -> list[dict[str, Any]]:
    """Poll every worker until its cache holds exactly ``expected``; return the last states."""
    deadline = time.monotonic() + timeout_s
    while True:
        states = await asyncio.gather(*(w.ask("state", "state") for w in workers))
        if all(s["versions"] == expected for s in states):
            return list(states)
        if time.monotonic() > deadline:
            diffs = {
                s["name"]: {a: v for a, v in s["versions"].items() if v != expected[a]}
                for s in states
            }
            raise AssertionError(f"fleet did not converge: {diffs}")
        await asyncio.sleep(0.05)


@pytest.mark.slow  # a multi-process fleet: the full suite (--full)
async def test_fleet_burst_converges_on_every_process(
    redis_server: RedisServer, client: Redis, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n_agents, rounds, n_deleted = 40, 5, 5
    store = tmp_path / "store"
    store.mkdir()
    agents = [f"agent-{i}" for i in range(n_agents)]
    for a in agents:
        write_version(store, a, 1)
    published: dict[tuple[str, int], float] = {}
    async with spawn_fleet(3, redis_server.url, store, agents) as workers:
        start = time.monotonic()
        for version in range(2, rounds + 2):
            for a in agents:
                write_version(store, a, version)
                published[(a, version)] = time.time()
                assert await publish_invalidation(a, version, redis=client) == 3
        expected: dict[str, int | None] = dict.fromkeys(agents, rounds + 1)
        for a in agents[:n_deleted]:  # deletes carry the old version
            write_version(store, a, None)
            assert await publish_invalidation(a, rounds + 1, event="cfg_deleted", redis=client) == 3
            expected[a] = None
        sent_s = time.monotonic() - start
        states = await converge(workers, expected)
        converged_s = time.monotonic() - start
        for s in states:
            st = s["subscriber"]
            assert st["received"] == n_agents * rounds + n_deleted
            assert st["failures"] == 0 and st["dropped"] == {} and st["reconnects"] == 0
        served = await asyncio.gather(*(w.ask("serve", "served") for w in workers))
        assert all(s["versions"] == expected for s in served)
        timings = await asyncio.gather(*(w.ask("timings", "timings") for w in workers))

    latencies: list[float] = []
    for t in timings:
        built = {
            (key.rsplit("@", 1)[0], int(key.rsplit("@", 1)[1])): at
            for key, at in t["built"].items()
        }
        for (a, version), sent in published.items():
            done = first_build_at_or_after(built, a, version)
            assert done is not None, (t["name"], a, version)
            latencies.append(max(0.0, done - sent) * 1000)
    with capsys.disabled():
        print(
            f"\n[fleet] 3 processes, {n_agents} agents, {len(published)} updates + "
            f"{n_deleted} deletes published in {sent_s:.2f} s; all converged "
            f"{converged_s:.2f} s after the first publish; "
            f"publish->rebuilt per process: {summarize(latencies)}"
        )


@pytest.mark.slow  # a multi-process fleet: the full suite (--full)
async def test_fleet_outage_reconnects_and_serves_nothing_stale(
    redis_server: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    n_agents = 20
    store = tmp_path / "store"
    store.mkdir()
    agents = [f"agent-{i}" for i in range(n_agents)]
    for a in agents:
        write_version(store, a, 1)
    async with spawn_fleet(3, redis_server.url, store, agents) as workers:
        for a in agents[:10]:
            write_version(store, a, 2)
            assert await publish_invalidation(a, 2, redis=redis_server.url) == 3
        await converge(workers, {a: 2 if i < 10 else 1 for i, a in enumerate(agents)})

        redis_server.stop()
        lost = 0
        for a in agents:  # configuration keeps changing; these messages cannot get through
            write_version(store, a, 3)
            try:
                await publish_invalidation(a, 3, redis=redis_server.url)
            except (RedisConnectionError, OSError):
                lost += 1
        assert lost == n_agents
        await asyncio.sleep(0.5)  # workers retry against a dead port
        outage_start = time.monotonic()
        redis_server.start()

        async def all_reconnected() -> list[dict[str, Any]]:
            while True:
                states = await asyncio.gather(*(w.ask("state", "state") for w in workers))
                if all(
                    s["subscriber"]["connected"] and s["subscriber"]["resyncs"] >= 1 for s in states
                ):
                    return list(states)
                await asyncio.sleep(0.05)

        async with asyncio.timeout(30):
            states = await all_reconnected()
        reconnect_s = time.monotonic() - outage_start
        for s in states:  # every entry cached before the outage was evicted as possibly stale
            assert s["subscriber"]["resync_evictions"] == n_agents
            assert all(v is None or v == 3 for v in s["versions"].values())
        served = await asyncio.gather(*(w.ask("serve", "served") for w in workers))
        for s in served:
            assert s["versions"] == dict.fromkeys(agents, 3), s

        # Live delivery resumed after the restart.
        write_version(store, agents[0], 4)
        assert await publish_invalidation(agents[0], 4, redis=redis_server.url) == 3
        await converge(workers, {a: 4 if a == agents[0] else 3 for a in agents})
    with capsys.disabled():
        print(
            f"\n[outage] 3 processes, {n_agents} agents, {lost} invalidations lost while down; "
            f"all resubscribed and resynced {reconnect_s:.2f} s after the restart"
        )
