"""Loop binding: a manager belongs to the event loop it is first used on, and refuses work
once closed. The lowest part after the generations: every other part asks it for the loop
and whether the manager is closed; the facade mirrors its ``ref`` for the hot path's
one-comparison check."""

from __future__ import annotations

import asyncio
import logging
from threading import get_ident
from typing import Any, final

from ._errors import RuntimeManagerClosed


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


def part_logger(injected: logging.Logger | None, module: str) -> logging.Logger:
    """A part's logger: its module's (``snak_runtime._cache``), or the user's injected
    ``logger=`` itself, which then receives every part's records under its own name (as it
    did before the parts existed: hosts filter on that name)."""
    return logging.getLogger(module) if injected is None else injected


@final
class _Binding:
    """The loop the manager is bound to, and whether it is closed."""

    __slots__ = ("_loop", "closed", "ref")

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        # The hit path's loop check: the bound loop is running in this very thread (one
        # loop runs per thread at a time, so it is the running loop). ``get_running_loop``
        # costs a system call per call on Python 3.11.
        self.ref: Any = _UNBOUND
        self.closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The bound loop (None before first use)."""
        return self._loop

    def check_loop(self) -> None:
        """Every entry point's loop check off the hot path (whose three inline copies of it
        tests/unit/test_hot_path_drift.py keeps in step)."""
        if self.ref._thread_id != get_ident():
            self.gate()

    def gate(self) -> None:
        """What every entry point's one-comparison check stands for (closing unbinds
        ``ref``, so a closed manager always lands here): refuse when closed, bind on first
        use, raise on another loop."""
        if self.closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
        self.bind()

    def bind(self) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is None:
            self._loop = loop
            # asyncio's loops record the thread they run in (an int while running, as now)
            running_in = getattr(loop, "_thread_id", None)
            self.ref = loop if isinstance(running_in, int) else _ThreadOf(loop)
        elif loop is not self._loop:
            raise RuntimeError(
                "this AgentRuntimeManager is bound to another event loop; "
                "create one manager per loop (it is not thread-safe)"
            )

    def close(self) -> None:
        """Refuse new work from now on (``release`` and lease exits keep working)."""
        self.closed = True
        self.bind()
        self.ref = _UNBOUND  # every read now takes the slow gate, which refuses

    def running_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        assert loop is not None
        return loop

    def refuse_if_closed(self) -> None:
        """After a wait: the manager may have closed meanwhile."""
        if self.closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
