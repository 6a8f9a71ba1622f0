"""Loss detection while connected, over a real server (issue 26): a publish that never reached
the channel is repaired once later messages show its outbox id missing, long before the
periodic reconciliation (set to a day here). Waits poll real I/O under a hang guard; nothing
asserts on time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

from redis_server import RedisServer

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings, RuntimeSeed
from snak_runtime.invalidation import InvalidationPublisher, InvalidationSubscriber
from tests.helpers import Manager


async def until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 20  # hang guard only
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_lost_publish_is_repaired_by_the_gap_not_the_interval(
    redis_server: RedisServer,
) -> None:
    versions = {f"a{i}": 1 for i in range(5)}

    async def source(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        return {a: versions.get(a) for a in agent_ids}

    def seed(agent_id: str) -> RuntimeSeed[str, object]:
        async def rebuild() -> RuntimeSeed[str, object] | None:
            return seed(agent_id)

        v = versions[agent_id]
        return RuntimeSeed(agent_id, "u", v, f"{agent_id}@{v}", rebuild)

    manager: Manager = AgentRuntimeManager(
        guards=GuardConfig(max_entries=10, max_ttl_ms=600_000), settings=RuntimeCacheSettings()
    )
    for agent_id in versions:
        await manager.shadow_seed(seed(agent_id))
    sub = InvalidationSubscriber(
        manager, redis_server.url, version_source=source,
        reconcile_interval_ms=86_400_000, gap_tolerance_messages=2, gap_tolerance_ms=60_000,
    )
    publisher = InvalidationPublisher.from_url(redis_server.url)
    try:
        await sub.start()
        await until(lambda: sub.connected, "the subscription")
        await publisher.publish("a0", 1, outbox_id=100, processed_at=time.time())
        versions["a1"] = 2  # outbox row 101 committed; its publish is lost
        for outbox_id, agent_id in ((102, "a2"), (103, "a3")):
            await publisher.publish(agent_id, 1, outbox_id=outbox_id, processed_at=time.time())
        await until(lambda: manager.version_of("a1") == 2, "the gap repair")
        await sub.drain()
        s = sub.stats()
        assert (s.gaps_detected, s.gap_reconciliations, s.reconciliations) == (1, 1, 0)
        assert s.lag_count == 3
    finally:
        await publisher.aclose()
        await sub.stop()
        await manager.aclose(grace_ms=10)
