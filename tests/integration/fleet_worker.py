"""One server process of a test fleet: its own RuntimeContainer, manager and Redis subscriber.

Run as ``python fleet_worker.py --name w1 --store DIR --agents a0,a1,...`` with ``REDIS_URL``
set. The "configuration database" is ``DIR``: one file per agent holding its current version
(it survives a Redis restart, as snak's Postgres does). The worker caches every agent, prints
``{"type": "ready"}`` once subscribed, then answers one JSON line per command read on stdin:

- ``state``: the version cached for each agent (``null`` if not cached) and the counters
  (the subscriber's, and the manager's rebuilds, loads and removals by cause);
- ``serve``: leases every agent (building a missing one from the store) and reports the
  version it served, i.e. what a request would get;
- ``timings``: wall-clock time of each (agent, version) built, for latency figures;
- ``quit``: shuts the container down and answers ``bye``.

With ``--version-source`` the container's ``version_source`` reads the same files, so a
reconnect repairs only what changed (versioned resync).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeSeed
from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import InvalidationSubscriber

Manager = AgentRuntimeManager[str, object]


class Agent:
    """Stands in for a live agent; the manager disposes it."""

    def __init__(self, agent_id: str, version: int) -> None:
        self.agent_id = agent_id
        self.version = version
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


class Fleet:
    def __init__(self, name: str, store: Path, agents: list[str]) -> None:
        self.name = name
        self.store = store
        self.agents = agents
        self.built: dict[str, float] = {}  # "agent@version" -> time.time() of first build

    def read_version(self, agent_id: str) -> int | None:
        try:
            return int((self.store / agent_id).read_text())
        except FileNotFoundError:
            return None

    async def versions(self, agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        """The version source: one "query" for a batch of agent ids."""
        return {agent_id: self.read_version(agent_id) for agent_id in agent_ids}

    async def load(self, agent_id: str) -> RuntimeSeed[str, object] | None:
        version = self.read_version(agent_id)
        if version is None:  # deleted: nothing to build
            return None
        self.built.setdefault(f"{agent_id}@{version}", time.time())

        async def rebuild() -> RuntimeSeed[str, object] | None:
            return await self.load(agent_id)

        return RuntimeSeed(
            agent_id=agent_id,
            user_id="user",
            cfg_version=version,
            runtime=f"{agent_id}@{version}",
            rebuild=rebuild,
            agent=Agent(agent_id, version),
        )


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--store", required=True, type=Path)
    parser.add_argument("--agents", required=True)
    parser.add_argument("--version-source", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format=f"{args.name} %(levelname)s %(message)s"
    )
    fleet = Fleet(args.name, args.store, args.agents.split(","))

    container = RuntimeContainer()
    container.guards.override(GuardConfig(max_entries=len(fleet.agents) + 8, max_ttl_ms=600_000))
    if args.version_source:
        container.version_source.override(fleet.versions)
    await _maybe_await(container.init_resources())
    manager: Manager = container.manager()
    subscriber = await _maybe_await(container.invalidation())
    if not isinstance(subscriber, InvalidationSubscriber):
        raise SystemExit("REDIS_URL is not set: the worker needs the invalidation resource")
    async with asyncio.timeout(20):
        await subscriber.wait_connected()
    for agent_id in fleet.agents:
        seed = await fleet.load(agent_id)
        if seed is not None:
            await manager.shadow_seed(seed)
    emit({"type": "ready", "name": fleet.name, "size": manager.size})

    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        command = line.strip()
        if command in ("", "quit"):
            break
        if command == "state":
            emit(
                {
                    "type": "state",
                    "name": fleet.name,
                    "versions": {a: manager.version_of(a) for a in fleet.agents},
                    "subscriber": _stats(subscriber),
                    "cache": _cache_stats(manager),
                }
            )
        elif command == "serve":
            served: dict[str, int | str | None] = {}
            for agent_id in fleet.agents:
                try:
                    async with manager.lease(agent_id, user_id="user", build=fleet.load) as lease:
                        served[agent_id] = lease.cfg_version
                except LookupError:
                    served[agent_id] = None  # deleted
                except Exception as exc:
                    served[agent_id] = f"error: {exc!r}"
            emit({"type": "served", "name": fleet.name, "versions": served})
        elif command == "timings":
            emit({"type": "timings", "name": fleet.name, "built": fleet.built})
        else:
            emit({"type": "error", "name": fleet.name, "message": f"unknown command {command!r}"})

    await _maybe_await(container.shutdown_resources())
    emit({"type": "bye", "name": fleet.name, "closed": manager.closed})


def _cache_stats(manager: Manager) -> dict[str, Any]:
    stats = manager.stats()
    return {
        "rebuilds": stats.rebuilds,
        "loads": stats.loads,
        "load_failures": stats.load_failures,
        "removals": dict(stats.removals),
    }


def _stats(subscriber: InvalidationSubscriber) -> dict[str, Any]:
    snapshot = subscriber.stats()
    stats = {f.name: getattr(snapshot, f.name) for f in dataclasses.fields(snapshot)}
    stats["dropped"] = dict(snapshot.dropped)
    return stats


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


if __name__ == "__main__":
    asyncio.run(main())
