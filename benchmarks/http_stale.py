"""Throughput of the FastAPI example under invalidation load, with and without
``stale_while_rebuilding`` (issue 15), under a real HTTP load generator.

    python benchmarks/http_stale.py [--rounds 5] [--seconds 10] [--connections 8 50]

Needs ``wrk`` and ``taskset`` (Debian: ``apt-get install wrk``) and the ``examples`` extra plus
uvicorn (in the ``dev`` extra). Two uvicorn servers run the example app (one process each,
both pinned to one core; only one is driven at a time): one with
``AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING=true``, one without. Four hot agents, each
build and rebuild 50 ms. ``wrk`` (the other core) sends chat requests round-robin over the
four agents at full speed, with N connections; a second ``wrk`` (64 connections) on the
same core injects configuration changes through the example's ``POST /agents/{id}/config``
route at a fixed 50 a second, round-robin over the four agents (each one ``on_invalidate``
and a rebuild).

Three runs, interleaved round by round (rotated order), per connection count:

- ``quiet``: no invalidations (the server with the option on);
- ``inval``: invalidations, option off (reads of an agent being rebuilt wait for it);
- ``inval+swr``: invalidations, option on (they get the cached generation meanwhile).

Reports the median chat throughput of each and the ratios to ``quiet``. Noisy on a shared
machine: the ratios are what to read.
"""

# No `from __future__ import annotations`: imported by the server process like the example.
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `examples` is a directory of the repository, not a package
    sys.path.insert(0, str(ROOT))

AGENTS = ("bot-0", "bot-1", "bot-2", "bot-3")
BUILD_S = 0.050
INVALIDATIONS_PER_S = 50
STALE_VAR = "AGENT_RUNTIME_CACHE_STALE_WHILE_REBUILDING"

CHAT_SCRIPT = """
local paths = {%s}
local i = 0
local headers = {["Content-Type"] = "application/json", ["X-User-Id"] = "alice"}
function request()
  i = (i %% #paths) + 1
  return wrk.format("POST", paths[i], headers, '{"text": "hello"}')
end
"""

# A fixed rate (as wrk2, and as benchmarks/http_overhead.py): one schedule for the thread.
CONFIG_SCRIPT = """
local paths = {%s}
local i = 0
local headers = {["X-User-Id"] = "alice"}
function request()
  i = (i %% #paths) + 1
  return wrk.format("POST", paths[i], headers, "")
end
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } stale_timespec;
int clock_gettime(int clock_id, stale_timespec *tp);
]]
local ts = ffi.new("stale_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local interval = %f
local next_at = nil
function delay()
  local now = now_ms()
  if next_at == nil or next_at < now then next_at = now end
  next_at = next_at + interval
  return math.floor(next_at - interval - now)
end
"""


def serve(fd: int) -> None:
    """The example app on the inherited socket, with four hot agents and 50 ms builds."""
    import uvicorn

    from examples.fastapi_app import services
    from examples.fastapi_app.containers import AppContainer
    from examples.fastapi_app.main import create_app

    services.BUILD_COST_S = BUILD_S  # read at every build and rebuild
    container = AppContainer()
    container.directory.override(
        services.AgentDirectory(owners=dict.fromkeys(AGENTS, "alice"))
    )
    app = create_app(container)
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


def _lua_paths(route: str) -> str:
    return ", ".join(f'"/agents/{agent}/{route}"' for agent in AGENTS)


def _wrk(port: int, script: str, seconds: float, connections: int, core: int) -> str:
    return subprocess.run(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
         "--timeout", "10s", "-s", script, f"http://127.0.0.1:{port}"],
        capture_output=True, text=True, check=True,
    ).stdout


def _count(out: str) -> tuple[int, int]:
    """Requests completed and non-2xx/socket errors reported by wrk."""
    done = re.search(r"(\d+) requests in", out)
    if done is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", out))
    errors += sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", out))
    return int(done.group(1)), errors


def _wait_ready(port: int, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET /cache/stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                if s.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("the server did not start")


def _start_server(stale: bool, core: int) -> tuple[subprocess.Popen[bytes], int]:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # a free loopback port, inherited by the server
    listener.listen(1024)
    port = listener.getsockname()[1]
    env = dict(os.environ)
    env.pop(STALE_VAR, None)
    if stale:
        env[STALE_VAR] = "true"
    server = subprocess.Popen(
        ["taskset", "-c", str(core), sys.executable, __file__, "--serve-fd",
         str(listener.fileno())],
        pass_fds=[listener.fileno()], env=env,
    )
    listener.close()
    return server, port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (%(default)s)")
    parser.add_argument("--seconds", type=float, default=10, help="per run (%(default)s)")
    parser.add_argument("--connections", type=int, nargs="+", default=[8, 50])
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--wrk-core", type=int, default=0)
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fd is not None:
        serve(args.serve_fd)
        return
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"http_stale: {tool} is not on PATH (Debian: apt-get install {tool})")

    servers = {stale: _start_server(stale, args.server_core) for stale in (False, True)}
    runs = {"quiet": (True, False), "inval": (False, True), "inval+swr": (True, True)}
    rates: dict[tuple[int, str], list[float]] = {}
    injected: dict[tuple[int, str], list[float]] = {}
    failures: dict[str, int] = {}  # non-2xx answers and socket errors, chat and config
    try:
        for _, port in servers.values():
            _wait_ready(port)
        with tempfile.TemporaryDirectory() as tmp:
            chat = Path(tmp, "chat.lua")
            chat.write_text(CHAT_SCRIPT % _lua_paths("chat"))
            config = Path(tmp, "config.lua")
            config.write_text(CONFIG_SCRIPT % (_lua_paths("config"), 1000 / INVALIDATIONS_PER_S))
            for _, port in servers.values():  # warm-up: build the agents, import paths
                _wrk(port, str(chat), 2, 8, args.wrk_core)
            names = list(runs)
            for round_no in range(args.rounds):
                for connections in args.connections:
                    order = names[round_no % len(names):] + names[: round_no % len(names)]
                    for name in order:
                        stale, invalidate = runs[name]
                        port = servers[stale][1]
                        result: dict[str, str] = {}

                        def inject(port: int = port, result: dict[str, str] = result) -> None:
                            result["out"] = _wrk(port, str(config), args.seconds, 64,
                                                 args.wrk_core)

                        injector = threading.Thread(target=inject) if invalidate else None
                        if injector is not None:
                            injector.start()
                        out = _wrk(port, str(chat), args.seconds, connections, args.wrk_core)
                        if injector is not None:
                            injector.join()
                        done, errors = _count(out)
                        failures[name] = failures.get(name, 0) + errors
                        rate = (done - errors) / args.seconds
                        rates.setdefault((connections, name), []).append(rate)
                        changes = 0.0
                        if invalidate:
                            changed, failed = _count(result["out"])
                            failures[name] = failures.get(name, 0) + failed
                            changes = (changed - failed) / args.seconds
                        injected.setdefault((connections, name), []).append(changes)
                        print(f"round {round_no + 1} c={connections:<3} {name:<10} "
                              f"{rate:7.0f} chat req/s  {changes:5.1f} invalidations/s",
                              flush=True)
    finally:
        for server, _ in servers.values():
            server.terminate()
        for server, _ in servers.values():
            server.wait(timeout=30)
    print(f"\nchat throughput, median of {args.rounds} interleaved rounds ({args.seconds:g} s "
          f"per run; 4 hot agents, {BUILD_S * 1000:.0f} ms builds and rebuilds; server on core "
          f"{args.server_core}, wrk on core {args.wrk_core}):")
    print("| connections | run | chat req/s | invalidations/s | vs quiet (medians) "
          "| vs quiet (median of per-round ratios) |")
    print("|---|---|---:|---:|---:|---:|")
    for connections in args.connections:
        quiets = rates[(connections, "quiet")]
        quiet = statistics.median(quiets)
        for name in runs:
            values = rates[(connections, name)]
            median = statistics.median(values)
            paired = statistics.median(v / q for v, q in zip(values, quiets, strict=True))
            print(f"| {connections} | {name} | {median:.0f} | "
                  f"{statistics.median(injected[(connections, name)]):.1f} | "
                  f"{median / quiet:.3f}x | {paired:.3f}x |")
    print(f"failed requests (non-2xx, socket errors; not counted above): {failures or 'none'}")


if __name__ == "__main__":
    main()
