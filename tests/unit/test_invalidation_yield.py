"""Issue 23, finding 3: a burst of buffered messages never holds the event loop.

redis-py returns what is already in its socket buffer without suspending, so the receive loop
used to handle thousands of messages back to back. It now yields every ``YIELD_EVERY``
messages (or after ``YIELD_AFTER_S`` of work, whichever comes first): another task runs between
the messages of a burst. The lag this bounds is measured by ``benchmarks/flood.py``, not here.
"""

from __future__ import annotations

import asyncio

import pytest

from snak_runtime.invalidation import InvalidationSubscriber, _pacing, _subscriber, encode_message
from tests.unit.invalidation_fakes import FakeBus, RecordingTarget

BURST = 2_000


async def test_other_tasks_run_between_the_messages_of_a_burst(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bus = FakeBus()
    monkeypatch.setattr(_subscriber, "make_client", bus.make_client)
    sub = InvalidationSubscriber(RecordingTarget(), "redis://127.0.0.1:1")
    bus.push(*(encode_message(f"agent-{i}", 1) for i in range(BURST)))  # all buffered at once
    seen: list[int] = []

    async def observer() -> None:
        while True:
            seen.append(sub.stats().received)
            await asyncio.sleep(0)

    watching = asyncio.create_task(observer())
    try:
        await sub.start()
        async with asyncio.timeout(10):  # hang guard only
            while sub.stats().received < BURST:
                await asyncio.sleep(0)
        await sub.drain()
    finally:
        watching.cancel()
        await asyncio.gather(watching, return_exceptions=True)
        await sub.stop()
    during = sorted({n for n in seen if 0 < n < BURST})
    assert during, "the burst ran without letting any other task run"  # before: [0, 2000]
    steps = [b - a for a, b in zip([0, *during], [*during, BURST], strict=True)]
    assert max(steps) <= _pacing.YIELD_EVERY  # never more than that many back to back
    assert sub.stats().applied == BURST
