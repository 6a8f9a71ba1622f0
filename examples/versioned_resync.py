"""Versioned resync: a version source written as one SQL query, on a real SQLite database.

Run it with ``python examples/versioned_resync.py redis://127.0.0.1:6379/0`` (it needs the
``redis`` extra and a server). Five agents are cached; then the database changes without any
publish (the publisher crashed between its commit and ``PUBLISH``): one agent gets a new
version, one is deleted. Reconciliation compares the cached versions with the database and
repairs just those two: one rebuild, one eviction with cause ``resync``, three entries untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from snak_runtime import AgentRuntimeManager, CacheStats, GuardConfig, RuntimeSeed
from snak_runtime.invalidation import InvalidationStats, InvalidationSubscriber, VersionSource

SCHEMA = """
CREATE TABLE agents (
    id          TEXT PRIMARY KEY,
    cfg_version INTEGER NOT NULL,
    deleted_at  TEXT
)
"""

# The whole version source: one query for a batch of ids (at most 256 per call).
VERSIONS_QUERY = "SELECT id, cfg_version FROM agents WHERE deleted_at IS NULL AND id IN ({})"


def sqlite_version_source(path: Path) -> VersionSource:
    """``async (agent_ids) -> {agent_id: cfg_version}``; a deleted or unknown id is absent."""

    def query(agent_ids: list[str]) -> dict[str, int | None]:
        with contextlib.closing(sqlite3.connect(path)) as db:
            sql = VERSIONS_QUERY.format(",".join("?" * len(agent_ids)))
            return dict(db.execute(sql, agent_ids).fetchall())

    async def versions(agent_ids: Sequence[str]) -> Mapping[str, int | None]:
        return await asyncio.to_thread(query, list(agent_ids))  # sqlite3 blocks: off the loop

    return versions


def read_version(path: Path, agent_id: str) -> int | None:
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute(
            "SELECT cfg_version FROM agents WHERE id = ? AND deleted_at IS NULL", (agent_id,)
        ).fetchone()
    return None if row is None else int(row[0])


Build = Callable[[str], Awaitable[RuntimeSeed[str, object] | None]]


def make_build(path: Path, builds: list[str]) -> Build:
    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        version = read_version(path, agent_id)
        if version is None:
            return None
        builds.append(f"{agent_id}@{version}")

        async def rebuild() -> RuntimeSeed[str, object] | None:
            return await build(agent_id)

        return RuntimeSeed(agent_id, "user", version, f"{agent_id} v{version}", rebuild)

    return build


async def main(url: str) -> tuple[CacheStats, InvalidationStats, list[str]]:
    folder = tempfile.mkdtemp(prefix="snak-resync-")
    path = Path(folder) / "agents.db"
    agents = [f"agent-{i}" for i in range(5)]
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute(SCHEMA)
        db.executemany("INSERT INTO agents VALUES (?, 1, NULL)", [(a,) for a in agents])

    builds: list[str] = []
    build = make_build(path, builds)
    manager: AgentRuntimeManager[str, object] = AgentRuntimeManager(
        guards=GuardConfig(max_entries=16, max_ttl_ms=600_000)
    )
    subscriber = InvalidationSubscriber(
        manager, url, version_source=sqlite_version_source(path), reconcile_interval_ms=300
    )
    async with manager, subscriber:
        for agent_id in agents:
            async with manager.lease(agent_id, user_id="user", build=build):
                pass
        print("cached:", {a: manager.version_of(a) for a in agents})

        # Committed, never published.
        with contextlib.closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE agents SET cfg_version = 2 WHERE id = 'agent-1'")
            db.execute("UPDATE agents SET deleted_at = datetime('now') WHERE id = 'agent-3'")
        changed = time.monotonic()
        async with asyncio.timeout(30):
            while (manager.version_of("agent-1"), "agent-3" in manager) != (2, False):
                await asyncio.sleep(0.02)
        print(f"repaired by reconciliation in {time.monotonic() - changed:.2f} s:",
              {a: manager.version_of(a) for a in agents})
        await subscriber.drain()
        stats, sub_stats = manager.stats(), subscriber.stats()
    print(f"builds: {builds}; removals: { {k: v for k, v in stats.removals.items() if v} }; "
          f"checked {sub_stats.version_checked}, repaired {sub_stats.version_repaired}")
    return stats, sub_stats, builds


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("REDIS_URL")
    if not target:
        sys.exit("usage: python examples/versioned_resync.py redis://HOST:PORT/0 (or REDIS_URL)")
    asyncio.run(main(target))
