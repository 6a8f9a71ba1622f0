"""Lifecycle: binding to one event loop, the store's removal and disposal callbacks, the
expiry sweeper, and close (refuse new work, cancel what is in flight, drain pins)."""

from __future__ import annotations

import asyncio
from threading import get_ident
from types import TracebackType
from typing import Any, Self, TypeVar, final

from ._core import _ManagerCore
from ._errors import RuntimeManagerClosed
from ._seed import RuntimeSeed
from ._stats import RemovalCause

R = TypeVar("R")
A = TypeVar("A")

# The sweeper yields to the loop after each batch of this size.
_SWEEP_BATCH = 1024


# Removals after which a refresh in flight may still install: expiry (reads that find the
# entry expired wait for the refresh), capacity (only for reads that wait), and its own.
_KEEPS_REFRESH = frozenset((RemovalCause.EXPIRED, RemovalCause.CAPACITY, RemovalCause.REFRESHED))


class _Unbound:
    _thread_id = None


_UNBOUND = _Unbound()


@final
class _ThreadOf:
    """For loops that do not keep asyncio's ``_thread_id``: the same answer, slower."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @property
    def _thread_id(self) -> int | None:
        return get_ident() if self._loop.is_running() else None


class _Lifecycle(_ManagerCore[R, A]):
    """Loop binding, disposal callbacks, sweeper, close and drain."""

    def _check_loop(self) -> None:
        """Every entry point's loop check off the hot path (whose three inline copies of it
        tests/unit/test_hot_path_drift.py keeps in step)."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()

    def _gate(self) -> None:
        """What every entry point's one-comparison check stands for (``aclose`` unbinds
        ``_loop_ref``, so a closed manager always lands here): refuse when closed, bind on
        first use, raise on another loop."""
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
        self._bind_loop()

    def _bind_loop(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            # asyncio's loops record the thread they run in (an int while running, as now)
            running_in = getattr(loop, "_thread_id", None)
            self._loop_ref = loop if isinstance(running_in, int) else _ThreadOf(loop)
        elif loop is not self._loop:
            raise RuntimeError(
                "this AgentRuntimeManager is bound to another event loop; "
                "create one manager per loop (it is not thread-safe)"
            )

    def _running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None
        return loop

    # departure: in the original a rebuild calling back into its own id waited on itself.
    def _check_reentry(self, agent_id: str) -> None:
        holder = self._turns.holder(agent_id)
        if holder is not None and holder.owner is not None \
                and holder.owner is asyncio.current_task(self._loop):
            raise RuntimeError(
                f"a build or rebuild of agent {agent_id!r} called back into the manager for "
                "the same agent id; that would wait on itself forever"
            )

    def _removed(self, agent_id: str, cause: RemovalCause) -> None:
        self._stats.record_removal(cause)
        if self._refreshes and cause not in _KEEPS_REFRESH:
            refresh = self._refreshes.get(agent_id)
            if refresh is not None:  # removed on purpose: the refresh must not bring it back
                refresh.superseded = True
        if not self._listeners:
            return
        for listener in tuple(self._listeners):
            try:
                listener(agent_id, cause)
            except Exception:
                self._log.warning(
                    "removal listener failed for agent %r (%s)", agent_id, cause,
                    exc_info=True, extra={"agent_id": agent_id, "cause": str(cause)},
                )

    def _orphaned(self, agent_id: str, agent: object) -> None:
        if self._forced:
            return  # the grace period is over: every agent was disposed already
        loop = self._loop
        if loop is None or loop.is_closed():
            self._log.warning(
                "agent %r cannot be disposed: its event loop is gone", agent_id,
                extra={"agent_id": agent_id},
            )
            return
        self._disposals.schedule(loop, agent_id, agent)

    def _late_seed(self, agent_id: str, seed: object) -> None:
        """A build or rebuild that was given up returned ``seed`` after all: the manager will
        not install it, so its agent (which has no other owner) is disposed, even after
        close (``_orphaned`` stops after the grace period: this agent was never cached)."""
        agent = getattr(seed, "agent", None) if isinstance(seed, RuntimeSeed) else None
        if agent is None or self._store.owns(agent):
            return
        loop = self._loop
        if loop is None or loop.is_closed():
            return  # (a done callback runs in the loop: not reached)
        self._disposals.schedule(loop, agent_id, agent)

    async def wait_for_disposals(self) -> None:
        """Wait until every disposal scheduled so far has ended or been abandoned (after
        ``dispose_timeout_ms``). Disposal never blocks a cache operation; tests and
        shutdown use this to see its outcome. Never raises what a disposer raised."""
        await self._disposals.wait()

    async def start(self) -> None:
        """Start the sweeper that disposes expired idle entries with no traffic. Idempotent."""
        # departure: the original pruned expired entries only when traffic came by.
        self._check_loop()
        if self._sweeper is None:
            self._sweeper = self._running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval_s)
            try:
                while self._store.pop_expired(self._now(), _SWEEP_BATCH) == _SWEEP_BATCH:
                    await asyncio.sleep(0)  # a burst of expiries must not stall the loop
            except Exception:
                self._log.exception("expiry sweep failed")

    async def aclose(self, grace_ms: int = 30_000) -> None:
        """Refuse new work, dispose what is idle, let pins drain for ``grace_ms``, then
        dispose the rest and wait for every disposal. Idempotent."""
        # departure: the original had no shutdown; its cached agents were never disposed.
        if self._close_task is None:
            self._closed = True
            self._bind_loop()
            self._loop_ref = _UNBOUND  # every read now takes the slow gate, which refuses
            self._close_task = self._running_loop().create_task(self._close(grace_ms))
        await asyncio.shield(self._close_task)

    async def _close(self, grace_ms: int) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        in_flight: list[asyncio.Task[Any]] = list(self._rebuilds)
        in_flight.extend(r.task for r in self._refreshes.values() if r.task is not None)
        for load in list(self._loads.values()):
            if load.task is not None:
                in_flight.append(load.task)
        for task in in_flight:
            task.cancel()
        if in_flight:
            # Each ends within the grace its user code gets once cancelled (see _calls);
            # bounded here too, so that close never waits on user code beyond its bound.
            await asyncio.wait(in_flight, timeout=self._build_timeout_s)
            for task in in_flight:
                if task.done() and not task.cancelled():
                    task.exception()  # retrieved: what it raised is its callers' business
        for gen in list(self._current.values()):
            self._store.detach(gen, RemovalCause.SHUTDOWN)
        if self._pinned():
            self._drained = asyncio.Event()
            try:
                async with asyncio.timeout(grace_ms / 1000):
                    await self._drained.wait()
            except TimeoutError:
                leftover = self._store.unfinished_pinned()
                self._log.warning(
                    "%d pinned agent runtime(s) still in use after %d ms; disposing them: %s",
                    len(leftover), grace_ms, ", ".join(repr(g.agent_id) for g in leftover),
                    extra={"agent_ids": [g.agent_id for g in leftover]},
                )
                for gen in leftover:
                    self._store.finish(gen)
        self._forced = True
        await self.wait_for_disposals()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
