"""Server CPU per request of the FastAPI example's wiring, under a real HTTP load generator.

    python benchmarks/http_overhead.py [--rounds 7] [--seconds 10] [--rate 200]

Needs ``wrk`` on PATH (Debian: ``apt-get install wrk``), ``taskset`` and the ``examples``
extra plus uvicorn (both in the ``dev`` extra). One uvicorn server (one process, the example
app) serves three routes with the same handler body, a lease of ``support-bot`` and its
reply; only the way the handler gets its ``ChatService`` differs:

- ``bare``: the handler calls the container's provider itself (no dependency);
- ``async-dep``: the example's route, an ``async def`` dependency (the recommended wiring);
- ``provide``: ``@inject`` + ``Depends(Provide[AppContainer.chat_service])``, the former
  wiring; FastAPI calls the marker, a plain callable, in its thread pool on every request.

The server is pinned to one core and ``wrk`` to the other (``taskset``). Each run drives one
route at a fixed rate for ``--seconds``: ``wrk`` has no fixed-rate mode (wrk2 has), so its
``delay()`` hook gives each request a slot on one schedule of ``rate`` slots a second (its
LuaJIT reads the monotonic clock), as wrk2 does. The figure is the server process's CPU time
(user + system, from /proc, every thread) divided by the requests it answered. Routes are
interleaved round by round (rotated order) and the report gives the median CPU per request
of each, and the median of the per-round ratios to ``bare``. Noisy on a shared machine:
compare ratios, not absolute numbers.
"""

# No `from __future__ import annotations`: FastAPI and @inject read the annotations at runtime.
import argparse
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `examples` is a directory of the repository, not a package
    sys.path.insert(0, str(ROOT))

from dependency_injector.wiring import Provide, inject  # noqa: E402
from fastapi import APIRouter, Depends, Header, Request  # noqa: E402

from examples.fastapi_app.containers import AppContainer  # noqa: E402
from examples.fastapi_app.main import ChatReply, ChatRequest, create_app  # noqa: E402
from examples.fastapi_app.services import ChatService  # noqa: E402

VARIANTS = {
    "bare": "/bench/bare/support-bot/chat",
    "async-dep": "/agents/support-bot/chat",  # the example's own route
    "provide": "/bench/provide/support-bot/chat",
}
TICKS = os.sysconf("SC_CLK_TCK")
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = '{"text": "hello"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-Id"] = "alice"
-- A fixed rate (as wrk2): one schedule for the thread, a slot every INTERVAL ms; each
-- request waits for its slot (never bursts to catch up: a late slot restarts the schedule).
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")
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


# ------------------------------------------------------------------------------- the server


bench_router = APIRouter()


@bench_router.post("/bench/bare/{agent_id}/chat")
async def bare(
    agent_id: str, body: ChatRequest, x_user_id: Annotated[str, Header()], request: Request
) -> ChatReply:
    """The example's handler body, with the service fetched inline: no dependency."""
    service: ChatService = request.app.state.container.chat_service()
    version, reply = await service.chat(agent_id, x_user_id, body.text)
    return ChatReply(agent_id=agent_id, cfg_version=version, reply=reply)


@bench_router.post("/bench/provide/{agent_id}/chat")
@inject
async def provide(
    agent_id: str,
    body: ChatRequest,
    x_user_id: Annotated[str, Header()],
    service: Annotated[ChatService, Depends(Provide[AppContainer.chat_service])],
) -> ChatReply:
    """The same body behind the former wiring (a plain-callable marker: the thread pool)."""
    version, reply = await service.chat(agent_id, x_user_id, body.text)
    return ChatReply(agent_id=agent_id, cfg_version=version, reply=reply)


def serve(fd: int) -> None:
    """Run the example app plus the comparison routes on the inherited listening socket."""
    import uvicorn

    container = AppContainer()
    app = create_app(container)
    app.include_router(bench_router)
    container.wire(modules=[sys.modules[__name__]])
    sock = socket.socket(fileno=fd)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


# ------------------------------------------------------------------------------- the driver


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime, all threads


def _wrk(url: str, script: str, seconds: float, connections: int, core: int) -> tuple[int, int]:
    """Requests completed and non-2xx/socket errors reported by wrk."""
    out = subprocess.run(
        ["taskset", "-c", str(core), "wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s",
         "-s", script, url],
        capture_output=True, text=True, check=True,
    ).stdout
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (%(default)s)")
    parser.add_argument("--seconds", type=float, default=10, help="per run (%(default)s)")
    parser.add_argument("--rate", type=int, default=200, help="requests/s (%(default)s)")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--server-core", type=int, default=1)
    parser.add_argument("--wrk-core", type=int, default=0)
    parser.add_argument("--serve-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_fd is not None:
        serve(args.serve_fd)
        return
    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"http_overhead: {tool} is not on PATH (Debian: apt-get install {tool})")

    interval_ms = 1000 / args.rate
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))  # a free loopback port, inherited by the server
    listener.listen(1024)
    port = listener.getsockname()[1]
    server = subprocess.Popen(
        ["taskset", "-c", str(args.server_core), sys.executable, __file__,
         "--serve-fd", str(listener.fileno())],
        pass_fds=[listener.fileno()],
    )
    listener.close()
    samples: dict[str, list[float]] = {name: [] for name in VARIANTS}
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    ratios: dict[str, list[float]] = {name: [] for name in VARIANTS if name != "bare"}
    try:
        _wait_ready(port)
        with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
            f.write(WRK_SCRIPT % interval_ms)
            script = f.name
        names = list(VARIANTS)
        for name in names:  # warm-up: build the agent, import paths, fill the thread pool
            _wrk(f"http://127.0.0.1:{port}{VARIANTS[name]}", script, 2, args.connections,
                 args.wrk_core)
        for round_no in range(args.rounds):
            order = names[round_no % len(names):] + names[: round_no % len(names)]
            this_round: dict[str, float] = {}
            for name in order:
                before = _cpu_s(server.pid)
                done, errors = _wrk(f"http://127.0.0.1:{port}{VARIANTS[name]}", script,
                                    args.seconds, args.connections, args.wrk_core)
                used = _cpu_s(server.pid) - before
                if errors:
                    raise RuntimeError(f"{name}: {errors} failed requests")
                this_round[name] = used / done * 1e6
                rates[name].append(done / args.seconds)
                print(f"round {round_no + 1} {name:<10} {done / args.seconds:7.0f} req/s"
                      f"  {this_round[name]:7.1f} µs CPU/request", flush=True)
            for name, value in this_round.items():
                samples[name].append(value)
            for name in ratios:
                ratios[name].append(this_round[name] / this_round["bare"])
    finally:
        server.terminate()
        server.wait(timeout=30)
    print(f"\nserver CPU per request, median of {args.rounds} interleaved rounds "
          f"({args.rate} req/s target, {args.seconds:g} s per run, server on core "
          f"{args.server_core}, wrk on core {args.wrk_core}):")
    bare = statistics.median(samples["bare"])
    for name, values in samples.items():
        median = statistics.median(values)
        ratio = "" if name == "bare" else (
            f"  ratio {median / bare:.3f}x (median of per-round ratios "
            f"{statistics.median(ratios[name]):.3f}x, range {min(ratios[name]):.3f}"
            f"-{max(ratios[name]):.3f})"
        )
        achieved = statistics.median(rates[name])
        print(f"  {name:<10} {median:7.1f} µs at {achieved:.0f} req/s{ratio}")


if __name__ == "__main__":
    main()
