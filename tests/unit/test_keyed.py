"""Per-key FIFO turns (CONTRACT §6: mutual exclusion in arrival order, readers see the result
of the operation they waited for, cancellation leaves no blocked key)."""

from __future__ import annotations

import asyncio

import pytest

from snak_runtime._keyed import _KeyedTurns, _Turn


@pytest.fixture
def turns() -> _KeyedTurns:
    return _KeyedTurns()


async def test_first_turn_is_free_and_queue_disappears_when_left(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    turn = turns.enqueue("a", loop)
    assert turn.ready is None
    await turns.wait_turn("a", turn)  # returns at once
    assert turns.holder("a") is turn and turns.tail("a") is turn
    turns.leave("a", turn)
    assert (turns.queues, turns.holder("a"), turns.tail("a")) == ({}, None, None)


async def test_turns_run_one_at_a_time_in_arrival_order(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    log: list[str] = []
    running = 0

    async def op(name: str) -> None:
        nonlocal running
        turn = turns.enqueue("a", loop)
        await turns.wait_turn("a", turn)
        running += 1
        assert running == 1
        log.append(f"{name}+")
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        log.append(f"{name}-")
        running -= 1
        turns.leave("a", turn)

    await asyncio.gather(*(op(str(i)) for i in range(5)))
    assert log == [x for i in range(5) for x in (f"{i}+", f"{i}-")]
    assert turns.queues == {}


async def test_keys_are_independent(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    held = turns.enqueue("a", loop)
    other = turns.enqueue("b", loop)
    await asyncio.wait_for(turns.wait_turn("b", other), 1)
    turns.leave("b", other)
    turns.leave("a", held)


async def test_cancelled_waiter_is_skipped(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    first = turns.enqueue("a", loop)
    second = turns.enqueue("a", loop)
    third = turns.enqueue("a", loop)
    waiting = asyncio.create_task(turns.wait_turn("a", second))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    turns.leave("a", first)
    assert turns.holder("a") is third
    await turns.wait_turn("a", third)
    turns.leave("a", third)
    assert turns.queues == {}


async def test_turn_granted_while_being_cancelled_is_passed_on(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    first = turns.enqueue("a", loop)
    second = turns.enqueue("a", loop)
    third = turns.enqueue("a", loop)
    waiting = asyncio.create_task(turns.wait_turn("a", second))
    await asyncio.sleep(0)
    turns.leave("a", first)  # grants ``second`` ...
    waiting.cancel()  # ... whose task is cancelled before it resumes
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert turns.holder("a") is third
    assert third.ready is not None and third.ready.done()
    turns.leave("a", third)
    assert turns.queues == {}


async def test_readers_wake_before_the_next_operation_resumes(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    log: list[str] = []
    first = turns.enqueue("a", loop)

    async def reader() -> None:
        await turns.wait_for_tail("a", loop)
        log.append("reader")

    async def writer(turn: _Turn) -> None:
        await turns.wait_turn("a", turn)
        log.append("writer")
        turns.leave("a", turn)

    r = asyncio.create_task(reader())
    await asyncio.sleep(0)
    w = asyncio.create_task(writer(turns.enqueue("a", loop)))
    await asyncio.sleep(0)
    assert log == []
    turns.leave("a", first)
    await asyncio.gather(r, w)
    assert log == ["reader", "writer"]


async def test_reader_waits_for_the_tail_not_just_the_head(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    first = turns.enqueue("a", loop)
    second = turns.enqueue("a", loop)
    r = asyncio.create_task(turns.wait_for_tail("a", loop))
    await asyncio.sleep(0)
    turns.leave("a", first)
    await turns.wait_turn("a", second)
    await asyncio.sleep(0)
    assert not r.done()
    turns.leave("a", second)
    await asyncio.wait_for(r, 1)


async def test_cancelled_reader_does_not_disturb_the_queue(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    first = turns.enqueue("a", loop)
    r = asyncio.create_task(turns.wait_for_tail("a", loop))
    await asyncio.sleep(0)
    r.cancel()
    with pytest.raises(asyncio.CancelledError):
        await r
    turns.leave("a", first)
    assert turns.queues == {}


async def test_readers_of_a_skipped_turn_are_woken(turns: _KeyedTurns) -> None:
    loop = asyncio.get_running_loop()
    first = turns.enqueue("a", loop)
    second = turns.enqueue("a", loop)
    r = asyncio.create_task(turns.wait_for_tail("a", loop))  # waits for ``second``
    w = asyncio.create_task(turns.wait_turn("a", second))
    await asyncio.sleep(0)
    w.cancel()
    with pytest.raises(asyncio.CancelledError):
        await w
    turns.leave("a", first)
    await asyncio.wait_for(r, 1)
    assert turns.queues == {}


async def test_readers_may_skip_only_while_every_queued_turn_is_stale_ok(
    turns: _KeyedTurns,
) -> None:
    """Issue 15 (stale_while_rebuilding): readers are let through while only ``stale_ok``
    turns are queued; a blocking turn, even one cancelled while queued, holds them until
    it leaves the queue."""
    loop = asyncio.get_running_loop()
    assert turns.readers_may_skip("a")
    first = turns.enqueue("a", loop, stale_ok=True)
    assert turns.readers_may_skip("a")
    blocking = turns.enqueue("a", loop)
    cancelled = turns.enqueue("a", loop)
    last = turns.enqueue("a", loop, stale_ok=True)
    assert not turns.readers_may_skip("a")
    waiting = asyncio.ensure_future(turns.wait_turn("a", cancelled))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    turns.leave("a", first)
    assert not turns.readers_may_skip("a")  # the blocking turn now holds the key
    await turns.wait_turn("a", blocking)
    turns.leave("a", blocking)  # the cancelled one is skipped on the way
    assert turns.holder("a") is last
    assert turns.readers_may_skip("a")
    await turns.wait_turn("a", last)
    turns.leave("a", last)
    assert (turns.queues, turns.blocking) == ({}, {})
