"""Request traces for ``simulate --trace``: an operator replays their own traffic.

One request a line: ``agent_id[,user_id[,timestamp_ms]]``. Blank lines and lines starting
with ``#`` are skipped. A user id makes the request a lease for that user (the agent built
on its miss belongs to the user who missed; another user's request is then ``denied``, as
in production). Timestamps, when given, are milliseconds from any origin, never going back
in time: the request arrives at that instant of virtual time (relative to the first one);
lines without one arrive at the workload's Poisson rate.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

MAX_TRACE_REQUESTS = 1_000_000  # as the --requests bound


class TraceRequest(NamedTuple):
    agent_id: str
    user_id: str | None
    at_ms: int | None


class TraceError(ValueError):
    """A trace file that cannot be replayed; the message names the file and the line."""


def read_trace(path: str | Path) -> tuple[TraceRequest, ...]:
    """Every request of the file, in order; ``TraceError`` naming the line otherwise."""
    requests: list[TraceRequest] = []
    last_ms: int | None = None
    try:
        with open(path, encoding="utf-8") as lines:
            for number, line in enumerate(lines, start=1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                request = _parse(text, path, number)
                last_ms = _in_order(request.at_ms, last_ms, path, number)
                requests.append(request)
                if len(requests) > MAX_TRACE_REQUESTS:
                    raise TraceError(f"{path}: more than {MAX_TRACE_REQUESTS:,} requests")
    except OSError as exc:
        raise TraceError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise TraceError(f"{path}: not UTF-8 text") from None
    if not requests:
        raise TraceError(f"{path}: no requests")
    return tuple(requests)


def _in_order(at_ms: int | None, last_ms: int | None, path: str | Path, number: int) -> int | None:
    """The latest timestamp so far; ``TraceError`` if this one goes back in time."""
    if at_ms is None:
        return last_ms
    if last_ms is not None and at_ms < last_ms:
        raise TraceError(f"{path} line {number}: timestamp {at_ms} "
                         f"goes back in time (previous {last_ms})")
    return at_ms


def _parse(text: str, path: str | Path, number: int) -> TraceRequest:
    fields = [field.strip() for field in text.split(",")]
    if len(fields) > 3:
        raise TraceError(f"{path} line {number}: expected agent_id[,user_id[,timestamp_ms]], "
                         f"got {len(fields)} fields")
    agent_id = fields[0]
    if not agent_id:
        raise TraceError(f"{path} line {number}: empty agent_id")
    user_id = fields[1] if len(fields) > 1 and fields[1] else None
    at_ms: int | None = None
    if len(fields) == 3 and fields[2]:
        try:
            at_ms = int(fields[2])
        except ValueError:
            raise TraceError(f"{path} line {number}: timestamp_ms must be an integer, "
                             f"got {fields[2]!r}") from None
        if at_ms < 0:
            raise TraceError(f"{path} line {number}: timestamp_ms must be >= 0, got {at_ms}")
    return TraceRequest(agent_id, user_id, at_ms)
