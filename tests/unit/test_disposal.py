"""DefaultDisposer: aclose/dispose/close preference, sync or async, bounded (CONTRACT §8)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from snak_runtime import DefaultDisposer, Disposer

METHODS = ("aclose", "dispose", "close")


def make_agent(methods: tuple[str, ...], *, is_async: bool, calls: list[str]) -> object:
    """An agent class having exactly ``methods``, each recording its own name when called."""

    def make(name: str) -> Any:
        if is_async:
            async def method(self: object) -> None:
                await asyncio.sleep(0)
                calls.append(name)
        else:
            def method(self: object) -> None:  # type: ignore[misc]
                calls.append(name)
        return method

    cls = type("FakeAgent", (), {name: make(name) for name in methods})
    return cls()


@pytest.mark.parametrize("is_async", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("methods", "expected"),
    [
        (("aclose",), "aclose"),
        (("dispose",), "dispose"),
        (("close",), "close"),
        (("aclose", "dispose", "close"), "aclose"),
        (("dispose", "close"), "dispose"),
        (("aclose", "close"), "aclose"),
    ],
)
async def test_first_method_present_is_called_once(
    methods: tuple[str, ...], expected: str, is_async: bool
) -> None:
    calls: list[str] = []
    await DefaultDisposer().dispose(make_agent(methods, is_async=is_async, calls=calls))
    assert calls == [expected]


async def test_agent_without_any_method_is_left_alone() -> None:
    await DefaultDisposer().dispose(object())
    await DefaultDisposer().dispose(None)


async def test_non_callable_attribute_is_skipped() -> None:
    calls: list[str] = []

    class Agent:
        aclose = "not a method"

        def close(self) -> None:
            calls.append("close")

    await DefaultDisposer().dispose(Agent())
    assert calls == ["close"]


async def test_sync_method_returning_an_awaitable_is_awaited() -> None:
    done = asyncio.Event()

    class Agent:
        def close(self) -> asyncio.Future[None]:
            fut = asyncio.get_running_loop().create_future()

            def finish() -> None:
                done.set()
                fut.set_result(None)

            asyncio.get_running_loop().call_soon(finish)
            return fut

    await DefaultDisposer().dispose(Agent())
    assert done.is_set()


@pytest.mark.parametrize("method", METHODS)
async def test_hanging_method_is_bounded_by_timeout(method: str) -> None:
    async def hang(self: object) -> None:
        await asyncio.Event().wait()

    agent = type("Hung", (), {method: hang})()
    with pytest.raises(TimeoutError):
        await DefaultDisposer(timeout_ms=20).dispose(agent)


async def test_error_from_method_propagates_to_the_manager() -> None:
    class Agent:
        async def aclose(self) -> None:
            raise OSError("socket already gone")

    with pytest.raises(OSError, match="socket already gone"):
        await DefaultDisposer().dispose(Agent())


def test_default_timeout_and_protocol() -> None:
    disposer = DefaultDisposer()
    assert disposer.timeout_ms == 10_000
    assert isinstance(disposer, Disposer)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_timeout_must_be_a_positive_integer(bad: object) -> None:
    with pytest.raises(ValueError, match="timeout_ms"):
        DefaultDisposer(timeout_ms=bad)  # type: ignore[arg-type]
