"""``stop()`` ends the listener even when a cancellation is lost (Python 3.11's wait_for), and
never leaves a connection half-closed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from snak_runtime.invalidation import InvalidationSubscriber, _client, _subscriber
from tests.helpers import settle


class _Target:
    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None: ...

    async def evict(self, agent_id: str) -> bool:
        return False

    async def evict_all(self) -> int:
        return 0


class _SwallowingPubSub:
    """Subscribing never completes, and the first cancellation is lost on the way: what
    ``asyncio.wait_for`` does on Python 3.11 when a socket write finishes as it is cancelled."""

    swallowed = 0
    subscribing = asyncio.Event()

    async def subscribe(self, channel: str) -> None:
        _SwallowingPubSub.subscribing.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if _SwallowingPubSub.swallowed:
                raise
            _SwallowingPubSub.swallowed += 1
        await asyncio.sleep(3600)  # on with the work, as if nothing had happened

    async def aclose(self) -> None: ...


class _Client:
    def pubsub(self) -> _SwallowingPubSub:
        return _SwallowingPubSub()

    async def aclose(self) -> None: ...


async def test_stop_ends_a_listener_that_lost_a_cancellation(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def make_client(endpoint: object, *, timeout_s: float) -> Any:
        return _Client()

    _SwallowingPubSub.swallowed = 0
    _SwallowingPubSub.subscribing = asyncio.Event()
    monkeypatch.setattr(_subscriber, "make_client", make_client)
    monkeypatch.setattr(_client, "RECANCEL_AFTER_S", 0.05)
    subscriber = InvalidationSubscriber(_Target(), "redis://127.0.0.1:1", connect_timeout_ms=60_000)
    task = asyncio.get_running_loop().create_task(subscriber.start())
    async with asyncio.timeout(60):
        await _SwallowingPubSub.subscribing.wait()  # the listener is now inside subscribe()
    async with asyncio.timeout(120):  # before the fix: stop() waited for ever
        await subscriber.stop()
    assert _SwallowingPubSub.swallowed == 1
    assert not subscriber.connected
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


class _SlowClosePubSub:
    """Subscribing fails at once (Redis is down); closing takes until ``release`` is set."""

    release = asyncio.Event()
    closing = asyncio.Event()
    closed = False

    async def subscribe(self, channel: str) -> None:
        from redis.exceptions import ConnectionError as RedisConnectionError

        raise RedisConnectionError("down")

    async def aclose(self) -> None:
        _SlowClosePubSub.closing.set()
        await _SlowClosePubSub.release.wait()
        _SlowClosePubSub.closed = True


class _RecordingClient:
    closed = 0

    def pubsub(self) -> _SlowClosePubSub:
        return _SlowClosePubSub()

    async def aclose(self) -> None:
        _RecordingClient.closed += 1


async def test_stop_during_closing_still_closes_every_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def make_client(endpoint: object, *, timeout_s: float) -> Any:
        return _RecordingClient()

    _SlowClosePubSub.release = asyncio.Event()
    _SlowClosePubSub.closing = asyncio.Event()
    _SlowClosePubSub.closed, _RecordingClient.closed = False, 0
    monkeypatch.setattr(_subscriber, "make_client", make_client)
    subscriber = InvalidationSubscriber(_Target(), "redis://127.0.0.1:1", connect_timeout_ms=60_000)
    starting = asyncio.get_running_loop().create_task(subscriber.start())
    async with asyncio.timeout(60):
        # the listener failed to subscribe and is closing the pub/sub
        await _SlowClosePubSub.closing.wait()
    stopping = asyncio.get_running_loop().create_task(subscriber.stop())
    await settle(50)  # stop() has cancelled the listener mid-close
    assert not stopping.done()
    _SlowClosePubSub.release.set()
    async with asyncio.timeout(120):
        await stopping
    # Before: the cancellation skipped the client's close (its sockets leaked until GC).
    assert _SlowClosePubSub.closed and _RecordingClient.closed == 1
    starting.cancel()
    await asyncio.gather(starting, return_exceptions=True)
