"""AgentRuntimeManager: the public facade, and the hot path in one marked section.

The hot path (``acquire``, ``acquire_with_agent``, ``release``, ``lease`` and its context)
is written inline, without helper calls, because each call measurably slows it; its
copies of the plain-hit rule are kept identical by tests/unit/test_hot_path_drift.py.
Everything behind an ``await`` lives in the layers this class builds on (see ``_core``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from random import Random
from threading import get_ident
from types import TracebackType
from typing import Any, Generic, TypeVar, final

from . import _operators
from ._calls import _UserCalls
from ._clock import Clock, MonotonicClock
from ._config import (
    EVICTION_VAR,
    GuardConfig,
    LimitSettings,
    ResolvedLimits,
    environment_value,
    resolve_limits,
)
from ._core import RemovalListener
from ._disposal import DefaultDisposer, Disposer, _Disposals
from ._info import EntryInfo
from ._keyed import _KeyedTurns
from ._lifecycle import _UNBOUND
from ._policies import make_policy, resolve_eviction
from ._reads import _SlowReads
from ._seed import AcquiredRuntime, Build, RuntimeLease
from ._stats import CacheStats, _StatsCounter
from ._store import _Generation, _Store

R = TypeVar("R")
A = TypeVar("A")

logger = logging.getLogger(__name__)


def _ignore(gen: object) -> None:
    """The last-release hook of a policy that does not want it."""


class AgentRuntimeManager(_SlowReads[R, A]):
    """An in-process cache of live agent runtimes (``R``) and their agents (``A``).

    Entries are pinned while in use (``acquire``/``release`` or ``lease``), expire a fixed
    time after they were installed (shortened at random with ``ttl_jitter``, and earlier when
    unused for ``idle_ttl_ms``), are rebuilt on configuration invalidation and are
    disposed exactly once, never while pinned. Operations on one agent id run one at a
    time in arrival order; reads with nothing in flight never suspend.

    Not thread-safe: use one manager from one event loop (it binds to the first loop it
    runs on and raises ``RuntimeError`` on any other).
    """

    def __init__(
        self,
        *,
        guards: GuardConfig | None = None,
        settings: LimitSettings | None = None,
        clock: Clock | None = None,
        disposer: Disposer | None = None,
        logger: logging.Logger | None = None,
        build_timeout_ms: int | None = None,
        sweep_interval_ms: int | None = None,
        dispose_timeout_ms: int | None = None,
        refresh_ahead_ms: int | None = None,
        stale_while_rebuilding: bool | None = None,
        idle_ttl_ms: int | None = None,
        ttl_jitter: float | None = None,
        ttl_jitter_random: Random | None = None,
        eviction: str | None = None,
        max_entries_per_user: int | None = None,
    ) -> None:
        self._guards = guards if guards is not None else GuardConfig()
        # Keyword > environment (settings, else os.environ) > default; a guard caps each.
        self._limits = resolve_limits(
            self._guards,
            settings,
            build_timeout_ms=build_timeout_ms,
            sweep_interval_ms=sweep_interval_ms,
            dispose_timeout_ms=dispose_timeout_ms,
            refresh_ahead_ms=refresh_ahead_ms,
            stale_while_rebuilding=stale_while_rebuilding,
            idle_ttl_ms=idle_ttl_ms,
            ttl_jitter=ttl_jitter,
            max_entries_per_user=max_entries_per_user,
        )
        self._idle_ttl_ms = self._limits.idle_ttl_ms
        self._ttl_jitter = self._limits.ttl_jitter
        self._jitter_random = ttl_jitter_random if ttl_jitter_random is not None else Random()
        self._eviction = resolve_eviction(
            eviction,
            EVICTION_VAR,
            environment_value(EVICTION_VAR)
            if settings is None
            else getattr(settings, "eviction", None),
        )
        # The per-user quota (None: none), checked at install only: never on a read.
        self._max_entries_per_user = self._limits.max_entries_per_user
        self._over_quota: set[str] = set()
        self._max_entries = self._limits.max_entries
        self._default_ttl_ms = self._limits.default_ttl_ms
        self._clock: Clock = clock if clock is not None else MonotonicClock()
        # Expiry is kept in clock ticks: the default clock is read as raw monotonic_ns (one
        # C call on the hot path), any other clock through its now_ms().
        self._now: Callable[[], int]
        if type(self._clock) is MonotonicClock:
            self._now, self._ticks_per_ms = time.monotonic_ns, 1_000_000
        else:
            self._now, self._ticks_per_ms = self._clock.now_ms, 1
        self._disposer: Disposer = disposer if disposer is not None else DefaultDisposer()
        self._log = logger if logger is not None else logging.getLogger(__name__)
        self._build_timeout_s = self._limits.build_timeout_ms / 1000
        self._sweep_interval_s = self._limits.sweep_interval_ms / 1000
        self._dispose_timeout_s = self._limits.dispose_timeout_ms / 1000
        self._refresh_ahead_ms = self._limits.refresh_ahead_ms  # 0: off
        self._stale_while_rebuilding = self._limits.stale_while_rebuilding

        self._store: _Store[R, A] = _Store(
            self._removed,
            self._orphaned,
            make_policy(self._eviction, self._max_entries),
            idle_ticks=self._idle_ttl_ms * self._ticks_per_ms,
        )
        self._idle_ticks = self._store.idle_ticks
        self._current = self._store.current  # hot path aliases
        self._recency = self._store.recency  # the policy's order, for tests: never written here
        policy = self._store.policy
        if self._max_entries_per_user is not None:
            policy.keep_ranks()  # before reading its touch: ranking may change it
            self._store.index_users()  # the quota reads it at every install
        self._idle = policy.idle if policy.wants_idle else _ignore
        self._touch = policy.touch if policy.wants_idle else _ignore
        self._over_capacity = False  # pins kept the map above max_entries after a trim
        # The release path's one test for "not the common case": over capacity, or idle
        # expiry is on (the slow path records the release time: the hot path stays as it was).
        self._slow_release = self._idle_ttl_ms > 0
        self._detached = self._store.detached
        self._turns = _KeyedTurns()
        self._queues = self._turns.queues
        self._loads = {}
        self._rebuilds: set[asyncio.Task[Any]] = set()  # their turns hold the ids
        self._refreshes = {}  # refresh-ahead in flight: no turn held while rebuilding
        self._stats = _StatsCounter()
        # Outstanding pins = hits + pins given to load waiters - pins released; kept as
        # counters so a hit updates one number, not two.
        self._waiter_pins = 0
        self._unpins = 0
        self._listeners: list[RemovalListener] = []
        self._disposals = _Disposals(
            self._disposer, self._dispose_timeout_s, self._stats, self._log
        )
        # Builds and rebuilds: bounded by build_timeout_ms; once cancelled, one may take up
        # to dispose_timeout_ms (or build_timeout_ms, if shorter) to end before it is
        # abandoned, so an evict waits at most build + dispose timeouts for one in flight.
        self._calls = _UserCalls(
            self._build_timeout_s,
            min(self._build_timeout_s, self._dispose_timeout_s),
            self._log,
            self._late_seed,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        # The hit path's loop check: the bound loop is running in this very thread (one
        # loop runs per thread at a time, so it is the running loop). ``get_running_loop``
        # costs a system call per call on Python 3.11.
        self._loop_ref: Any = _UNBOUND
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        self._close_task: asyncio.Task[None] | None = None
        self._drained: asyncio.Event | None = None  # set while closing, when pins reach 0
        self._forced = False  # grace period over: agents already disposed

    # ------------------------------------------------------------------ properties

    @property
    def max_entries(self) -> int:
        return self._max_entries

    @property
    def default_ttl_ms(self) -> int:
        return self._default_ttl_ms

    @property
    def max_entries_per_user(self) -> int | None:
        """The per-user quota: at most this many entries per user, beyond what pins hold
        (None: no quota)."""
        return self._max_entries_per_user

    @property
    def idle_ttl_ms(self) -> int:
        """Idle expiry: an unpinned entry unused this long expires (0: off)."""
        return self._idle_ttl_ms

    @property
    def ttl_jitter(self) -> float:
        """The largest fraction by which an install's TTL is shortened at random (0: off)."""
        return self._ttl_jitter

    @property
    def eviction(self) -> str:
        """The eviction policy's name (keyword, else AGENT_RUNTIME_CACHE_EVICTION, else the
        default: ``"cost-aware"``; ``"lru"`` is the original's order)."""
        return self._eviction

    @property
    def guards(self) -> GuardConfig:
        return self._guards

    @property
    def limits(self) -> ResolvedLimits:
        """The resolved limits with where each came from and the warnings on the way."""
        return self._limits

    @property
    def refresh_ahead_ms(self) -> int:
        """The resolved refresh window (0: refresh-ahead off)."""
        return self._refresh_ahead_ms

    @property
    def stale_while_rebuilding(self) -> bool:
        """Whether reads are served the cached generation while an invalidation rebuilds."""
        return self._stale_while_rebuilding

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def size(self) -> int:
        """Entries in the map (current generations, expired ones not yet removed included)."""
        return len(self._current)

    def __len__(self) -> int:
        return len(self._current)

    def __contains__(self, agent_id: object) -> bool:
        """True for a live (unexpired) entry. Does not pin or reorder."""
        gen = self._current.get(agent_id) if isinstance(agent_id, str) else None
        return gen is not None and self._is_live(gen, self._now())

    def version_of(self, agent_id: str) -> int | None:
        """The live entry's ``cfg_version``, or None. Does not pin or reorder."""
        gen = self._current.get(agent_id)
        if gen is None or not self._is_live(gen, self._now()):
            return None
        return gen._cfg_version

    def peek(self, agent_id: str) -> EntryInfo | None:
        """The live entry of ``agent_id`` as a frozen ``EntryInfo``, or None.

        Does not pin, reorder or count a hit (an expired entry is left for the sweeper).
        Empty or non-string ids raise ``ValueError`` / ``TypeError``.
        """
        return _operators.peek(self, agent_id)

    def snapshot(self) -> list[EntryInfo]:
        """Every live entry as a frozen ``EntryInfo``, next to be evicted first.

        Does not pin, reorder or count a hit. Visits every entry (O(n)): meant for
        operators and metrics scrapes, never for a request path.
        """
        return _operators.snapshot(self)

    def agent_ids(self, user_id: str | None = None) -> list[str]:
        """The ids in the map (``user_id``: that user's), unordered, as a new list.

        Does not pin, reorder or count; expired entries not yet swept are included (``peek``
        tells which are live). A C-speed copy: the way to walk a large cache in pieces,
        yielding to the event loop between them, where ``snapshot()`` would hold it. An empty
        or non-string ``user_id`` raises ``ValueError`` / ``TypeError``.
        """
        return _operators.agent_ids(self, user_id)

    # departure: the original promised hit/miss metrics in a comment and recorded none.
    def stats(self) -> CacheStats:
        return self._stats.snapshot(size=len(self._current), pinned=self._pinned())

    def on_removal(self, callback: RemovalListener) -> Callable[[], None]:
        """Call ``callback(agent_id, cause)`` whenever a generation leaves the map.

        Returns a function that unregisters it. A listener that raises is logged.
        """
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # ================================================================== HOT PATH
    # acquire, acquire_with_agent, release, lease and _LeaseContext below: inline copies of
    # the plain hit and the last release, measured (see the module docstring). Anything
    # that is not a plain hit goes to _reads (which may await). Keep this section last.

    async def acquire(self, agent_id: str, *, user_id: str | None = None) -> R | None:
        """Pin and return the live runtime, or None (miss, expired, or not ``user_id``'s).

        Every successful call must be paired with one ``release(agent_id)``.
        """
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        gen = self._current.get(agent_id)
        if (
            gen is None
            or agent_id in self._queues
            or self._now() >= gen.expires_at
            or (user_id is not None and user_id != gen._user_id)
        ):
            gen = await self._acquire_slow(agent_id, user_id)
            return None if gen is None else gen._runtime
        gen.loose_pins += 1  # the plain hit, inline
        gen.hits += 1
        self._stats.hits += 1
        return gen._runtime

    async def acquire_with_agent(
        self, agent_id: str, *, user_id: str | None = None
    ) -> AcquiredRuntime[R, A] | None:
        """As ``acquire``, returning the runtime and its agent."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        gen = self._current.get(agent_id)
        if (
            gen is None
            or agent_id in self._queues
            or self._now() >= gen.expires_at
            or (user_id is not None and user_id != gen._user_id)
        ):
            return await self._acquire_slow(agent_id, user_id)
        gen.loose_pins += 1  # the plain hit, inline
        gen.hits += 1
        self._stats.hits += 1
        return gen

    def release(self, agent_id: str) -> None:
        """Give back one ``acquire`` pin of ``agent_id``, oldest generation first.

        Pins taken by ``lease`` are not touched: a lease releases its own. With no pin
        outstanding this is a no-op. Works after ``aclose()`` so pins can drain.
        """
        gen = self._current.get(agent_id)
        if gen is None or not gen.loose_pins or self._detached:
            self._release_slow(agent_id)
            return
        # The common case of _unpinned() below, repeated inline: this is half of the hot path.
        gen.loose_pins -= 1
        self._unpins += 1
        if gen.loose_pins or gen.lease_pins:
            return
        if self._now() < gen.expires_at and not self._slow_release:
            try:  # in use until now: the policy hears it went idle
                self._touch(agent_id)
            except KeyError:
                self._idle(gen)
            return
        self._last_pin_gone(gen)

    def lease(
        self,
        agent_id: str,
        *,
        user_id: str | None = None,
        build: Build[R, A] | None = None,
    ) -> _LeaseContext[R, A]:
        """An async context manager that pins the runtime and releases exactly that pin.

        On a miss, ``build(agent_id)`` loads the runtime (one call for all concurrent
        misses); without ``build``, or when it returns None, ``RuntimeNotCached`` is raised.
        An entry owned by another user raises ``RuntimeNotCached`` without calling ``build``.
        """
        # Built without an __init__ frame: this is on every lease's path.
        context: _LeaseContext[R, A] = _new_object(_LeaseContext)
        context._manager = self
        context._agent_id = agent_id
        context._user_id = user_id
        context._build = build
        context._gen = None
        return context


_new_object = object.__new__


@final
class _LeaseContext(Generic[R, A]):
    """``async with manager.lease(...) as lease``: pins on enter, releases that pin on exit."""

    __slots__ = ("_agent_id", "_build", "_gen", "_manager", "_user_id")

    # Filled in by ``AgentRuntimeManager.lease``.
    _manager: AgentRuntimeManager[R, A]
    _agent_id: str
    _user_id: str | None
    _build: Build[R, A] | None
    _gen: _Generation[R, A] | None

    async def __aenter__(self) -> RuntimeLease[R, A]:
        if self._gen is not None:
            raise RuntimeError("a lease context cannot be entered twice at once")
        m = self._manager
        agent_id = self._agent_id
        gen = m._current.get(agent_id)
        if (
            gen is None
            or m._loop_ref._thread_id != get_ident()
            or agent_id in m._queues
            or m._now() >= gen.expires_at
            or (self._user_id is not None and self._user_id != gen._user_id)
        ):
            gen = await m._lease_enter(agent_id, self._user_id, self._build)
        else:
            gen.lease_pins += 1  # the plain hit, inline
            gen.hits += 1
            m._stats.hits += 1
        self._gen = gen
        return gen

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        gen = self._gen
        if gen is not None:
            self._gen = None
            gen.lease_pins -= 1
            self._manager._unpinned(gen)
