"""AgentRuntimeManager: the async facade over the store (data) and the keyed turns (order)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from functools import partial
from threading import get_ident
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, final

from ._clock import Clock, MonotonicClock
from ._config import (
    GuardConfig,
    ResolvedLimits,
    RuntimeCacheSettings,
    resolve_limits,
    resolve_seed_ttl_ms,
)
from ._disposal import DefaultDisposer, Disposer, _Disposals
from ._errors import RuntimeManagerClosed, RuntimeNotCached
from ._keyed import _KeyedTurns, _Turn
from ._seed import AcquiredRuntime, Build, RuntimeLease, RuntimeSeed
from ._stats import CacheStats, RemovalCause, _StatsCounter
from ._store import _Generation, _Store

R = TypeVar("R")
A = TypeVar("A")
T = TypeVar("T")

logger = logging.getLogger(__name__)

RemovalListener = Callable[[str, RemovalCause], None]

# Installs remove at most this many expired entries on the way (the sweeper does the rest),
# and the sweeper yields to the loop after each batch of this size.
_EXPIRE_BATCH = 16
_SWEEP_BATCH = 1024


class _Denied(Exception):
    """Internal: the live entry belongs to another user."""


@final
class _Load(Generic[R, A]):
    """One single-flight build: a task, the turn it holds, the leases waiting on it."""

    __slots__ = ("abandoned", "agent_id", "build", "task", "turn", "waiters")

    def __init__(self, agent_id: str, build: Build[R, A], turn: _Turn) -> None:
        self.abandoned = False  # its last waiter left and cancelled it: nobody may join it
        self.agent_id = agent_id
        self.build = build
        self.turn = turn
        self.waiters: list[tuple[str | None, asyncio.Future[_Generation[R, A]]]] = []
        self.task: asyncio.Task[None] | None = None


class AgentRuntimeManager(Generic[R, A]):
    """An in-process cache of live agent runtimes (``R``) and their agents (``A``).

    Entries are pinned while in use (``acquire``/``release`` or ``lease``), expire a fixed
    time after they were installed, are rebuilt on configuration invalidation and are
    disposed exactly once, never while pinned. Operations on one agent id run one at a
    time in arrival order; reads with nothing in flight never suspend.

    Not thread-safe: use one manager from one event loop (it binds to the first loop it
    runs on and raises ``RuntimeError`` on any other).
    """

    def __init__(
        self,
        *,
        guards: GuardConfig | None = None,
        settings: RuntimeCacheSettings | None = None,
        clock: Clock | None = None,
        disposer: Disposer | None = None,
        logger: logging.Logger | None = None,
        build_timeout_ms: int = 30_000,
        sweep_interval_ms: int = 1_000,
        dispose_timeout_ms: int = 10_000,
    ) -> None:
        for name, value in (
            ("build_timeout_ms", build_timeout_ms),
            ("sweep_interval_ms", sweep_interval_ms),
            ("dispose_timeout_ms", dispose_timeout_ms),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self._guards = guards if guards is not None else GuardConfig()
        self._limits = resolve_limits(
            self._guards, settings if settings is not None else RuntimeCacheSettings()
        )
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
        self._build_timeout_s = build_timeout_ms / 1000
        self._sweep_interval_s = sweep_interval_ms / 1000
        self._dispose_timeout_s = dispose_timeout_ms / 1000

        self._store: _Store[R, A] = _Store(self._removed, self._orphaned)
        self._current = self._store.current  # hot path aliases
        self._recency = self._store.recency
        self._over_capacity = False  # pins kept the map above max_entries after a trim
        self._detached = self._store.detached
        self._turns = _KeyedTurns()
        self._queues = self._turns.queues
        self._loads: dict[str, _Load[R, A]] = {}
        self._rebuilds: set[asyncio.Task[Any]] = set()
        self._stats = _StatsCounter()
        # Outstanding pins = hits + pins given to load waiters - pins released; kept as
        # counters so a hit updates one number, not two.
        self._waiter_pins = 0
        self._unpins = 0
        self._listeners: list[RemovalListener] = []
        self._disposals = _Disposals(
            self._disposer, self._dispose_timeout_s, self._stats, self._log
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
    def guards(self) -> GuardConfig:
        return self._guards

    @property
    def limits(self) -> ResolvedLimits:
        """The resolved limits with where each came from and the warnings on the way."""
        return self._limits

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
        return gen is not None and self._now() < gen.expires_at

    def version_of(self, agent_id: str) -> int | None:
        """The live entry's ``cfg_version``, or None. Does not pin or reorder."""
        gen = self._current.get(agent_id)
        if gen is None or self._now() >= gen.expires_at:
            return None
        return gen._cfg_version

    # departure: the original promised hit/miss metrics in a comment and recorded none.
    def stats(self) -> CacheStats:
        return self._stats.snapshot(size=len(self._current), pinned=self._pinned())

    def _pinned(self) -> int:
        return self._stats.hits + self._waiter_pins - self._unpins

    def on_removal(self, callback: RemovalListener) -> Callable[[], None]:
        """Call ``callback(agent_id, cause)`` whenever a generation leaves the map.

        Returns a function that unregisters it. A listener that raises is logged.
        """
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:
                self._listeners.remove(callback)

        return unsubscribe

    # ------------------------------------------------------------------ reads

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
        self._stats.hits += 1
        return gen

    async def _acquire_slow(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """An acquire that is not a plain hit: wait in line, count the miss or denial."""
        if agent_id in self._queues:
            await self._wait_in_line(agent_id)
        try:
            gen = self._hit(agent_id, user_id)
        except _Denied:
            return None
        if gen is not None:
            gen.loose_pins += 1
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
        if self._now() < gen.expires_at and not self._over_capacity:
            try:  # most recently used: it was in use until now
                self._recency.move_to_end(agent_id)
            except KeyError:  # dropped from the order while pinned
                self._recency[agent_id] = None
            return
        self._last_pin_gone(gen)

    def _release_slow(self, agent_id: str) -> None:
        gen = self._current.get(agent_id)
        # older generations of some id are still pinned: give back the oldest first
        for old in self._detached.get(agent_id, ()):
            if old.loose_pins:
                gen = old
                break
        if gen is None or not gen.loose_pins:
            self._log.debug("release(%r) with no pin outstanding: ignored", agent_id)
            return
        gen.loose_pins -= 1
        self._unpinned(gen)

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

    def _hit(self, agent_id: str, user_id: str | None) -> _Generation[R, A] | None:
        """The live entry ``user_id`` may have (the caller pins it): count a hit, a miss
        (None) or a denial (``_Denied``)."""
        gen = self._live(agent_id)
        if gen is None:
            self._stats.misses += 1
            return None
        if user_id is not None and user_id != gen._user_id:
            # departure: the original left owner checks to its callers.
            self._stats.denied += 1
            raise _Denied
        self._stats.hits += 1
        return gen

    async def _lease_enter(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """Everything but the plain hit (which ``_LeaseContext.__aenter__`` does inline)."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        if agent_id not in self._queues:
            try:
                gen = self._hit(agent_id, user_id)
            except _Denied:
                raise RuntimeNotCached(agent_id) from None
            if gen is not None:
                gen.lease_pins += 1
                return gen
            return await self._lease_miss(agent_id, user_id, build)
        # Something is in flight for this id: join a load at the tail, or wait in line.
        self._check_reentry(agent_id)
        tail = self._turns.tail(agent_id)
        if build is not None and tail is not None and tail.load is not None:
            return await self._join_load(self._joinable(tail.load, build), user_id, False)
        await self._turns.wait_for_tail(agent_id, self._running_loop())
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")
        load = self._loads.get(agent_id)
        if load is not None and build is not None:
            return await self._join_load(self._joinable(load, build), user_id, False)
        try:
            gen = self._hit(agent_id, user_id)
        except _Denied:
            raise RuntimeNotCached(agent_id) from None
        if gen is not None:
            gen.lease_pins += 1
            return gen
        return await self._lease_miss(agent_id, user_id, build)

    async def _lease_miss(
        self, agent_id: str, user_id: str | None, build: Build[R, A] | None
    ) -> _Generation[R, A]:
        """A lease found nothing (its miss is counted): load it, or raise."""
        if build is None:
            raise RuntimeNotCached(agent_id)
        return await self._join_load(self._start_load(agent_id, build), user_id, True)

    async def _wait_in_line(self, agent_id: str) -> None:
        """A read that arrives while an operation is in flight sees that operation's result."""
        self._check_reentry(agent_id)
        await self._turns.wait_for_tail(agent_id, self._running_loop())
        if self._closed:
            raise RuntimeManagerClosed("the runtime manager is closed")

    # ------------------------------------------------------------------ single-flight loads

    # departure: the original had no loader; every caller that missed built its own runtime.
    def _start_load(self, agent_id: str, build: Build[R, A]) -> _Load[R, A]:
        turn = self._turns.enqueue(agent_id, self._running_loop())
        load: _Load[R, A] = _Load(agent_id, build, turn)
        turn.load = load
        self._loads[agent_id] = load
        load.task = self._running_loop().create_task(self._run_load(load))
        return load

    def _joinable(self, load: _Load[R, A], build: Build[R, A]) -> _Load[R, A]:
        """``load``, unless its last waiter just left and cancelled it (it has not ended yet):
        then a fresh load queued behind it, so that a newcomer never inherits a
        cancellation it did not ask for (issue 9)."""
        if load.abandoned:
            return self._start_load(load.agent_id, build)
        return load

    async def _join_load(
        self, load: _Load[R, A], user_id: str | None, counted_miss: bool
    ) -> _Generation[R, A]:
        """Wait for ``load``; it pins the generation for this waiter before waking it.

        ``counted_miss`` says whether this waiter's read already counted a miss (it found
        nothing); a waiter that joined an in-flight load is counted when the load ends.
        """
        if counted_miss:
            self._stats.misses -= 1  # counted once, when the load resolves this waiter
        fut: asyncio.Future[_Generation[R, A]] = self._running_loop().create_future()
        entry = (user_id, fut)
        load.waiters.append(entry)
        try:
            return await fut
        except asyncio.CancelledError:
            if not fut.done() or fut.cancelled():
                if entry in load.waiters:
                    load.waiters.remove(entry)
                    self._stats.misses += 1
                if not load.waiters and load.task is not None and not load.task.done():
                    load.abandoned = True
                    load.task.cancel()  # nobody wants the result any more
            elif fut.exception() is None:
                gen = fut.result()  # pinned for us just as we were cancelled
                gen.lease_pins -= 1
                self._unpinned(gen)
            raise

    async def _run_load(self, load: _Load[R, A]) -> None:
        agent_id, turn = load.agent_id, load.turn
        held = False
        try:
            await self._turns.wait_turn(agent_id, turn)
            held = True
            turn.owner = asyncio.current_task(self._loop)
            if self._closed:
                raise RuntimeManagerClosed("the runtime manager is closed")
            gen = self._live(agent_id)
            if gen is None:
                seed = await self._call_build(load)
                # what is left under this id, if anything, is an expired pinned entry
                gen = self._install(seed, RemovalCause.EXPIRED)
            self._resolve_waiters(load, gen)
        except BaseException as exc:
            failure = (
                RuntimeManagerClosed("the runtime manager closed during the build")
                if self._closed
                else exc
            )
            for _, fut in load.waiters:
                if not fut.done():
                    self._stats.misses += 1
                    if isinstance(failure, asyncio.CancelledError):
                        fut.cancel()
                    else:
                        fut.set_exception(failure)
            load.waiters.clear()
            if not isinstance(failure, Exception):
                raise
        finally:
            if self._loads.get(agent_id) is load:
                del self._loads[agent_id]
            turn.load = None
            turn.owner = None
            if held:
                self._turns.leave(agent_id, turn)

    async def _call_build(self, load: _Load[R, A]) -> RuntimeSeed[R, A]:
        agent_id = load.agent_id
        self._stats.loads += 1
        started = time.perf_counter()
        try:
            seed = await self._bounded(partial(load.build, agent_id))
        except BaseException as exc:
            self._stats.load_failures += 1
            self._log.warning(
                "build of agent %r failed: %r", agent_id, exc, extra={"agent_id": agent_id}
            )
            raise
        finally:
            self._stats.record_load_time((time.perf_counter() - started) * 1000)
        if seed is None:
            self._stats.load_failures += 1
            raise RuntimeNotCached(agent_id, "the builder returned None")
        try:
            self._check_seed(seed, agent_id)
        except (TypeError, ValueError):
            self._stats.load_failures += 1
            self._discard_seed(agent_id, seed)
            raise
        return seed

    def _resolve_waiters(self, load: _Load[R, A], gen: _Generation[R, A]) -> None:
        stats = self._stats
        for user_id, fut in load.waiters:
            if fut.done():
                continue
            if user_id is not None and user_id != gen._user_id:
                stats.denied += 1
                fut.set_exception(RuntimeNotCached(load.agent_id))
                continue
            stats.misses += 1
            gen.lease_pins += 1
            self._waiter_pins += 1
            fut.set_result(gen)
        load.waiters.clear()

    # ------------------------------------------------------------------ writes

    async def shadow_seed(self, seed: RuntimeSeed[R, A]) -> None:
        """Prime the cache with ``seed`` without serving from it.

        Same version as the live entry: refreshed in place (expiry restarted, marked most
        recently used). Older than the live entry: ignored, the seed's agent stays yours.
        Otherwise (absent, expired, newer): installed as a new generation.
        """
        self._check_seed(seed, None)
        agent_id = seed.agent_id
        turn = await self._enter(agent_id)
        try:
            now = self._now()
            old = self._current.get(agent_id)
            if old is None:
                cause: RemovalCause | None = RemovalCause.REPLACED
            elif now >= old.expires_at:
                cause = RemovalCause.EXPIRED
            elif seed.cfg_version == old.cfg_version:
                # departure: the original dropped a replaced agent undisposed; the superseded
                # generation is detached here, so its agent is disposed after its last pin.
                cause = None  # refresh: same generation as far as anyone can tell
            elif seed.cfg_version > old.cfg_version:
                cause = RemovalCause.REPLACED
            else:
                # departure: the original let a stale seed overwrite a newer runtime.
                self._log.debug(
                    "shadow_seed for agent %r ignored: version %d is older than cached %d",
                    agent_id, seed.cfg_version, old.cfg_version,
                )
                return
            self._install(seed, cause, now)
        finally:
            self._exit(agent_id, turn)

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        """Rebuild ``agent_id``'s entry for configuration ``cfg_version``.

        No entry, an expired one, or one already at ``cfg_version`` or newer: nothing is
        rebuilt. Otherwise the entry's ``rebuild()`` runs (bounded by ``build_timeout_ms``)
        and its seed replaces the entry; ``None`` evicts it; a failure, timeout or
        cancellation evicts it and is re-raised. Either way, once this returns or raises,
        no runtime older than ``cfg_version`` is handed out again.
        """
        if isinstance(cfg_version, bool) or not isinstance(cfg_version, int):
            raise TypeError(f"cfg_version must be an integer, got {cfg_version!r}")
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        self._stats.invalidations += 1
        turn = await self._enter(agent_id, always_queue=True)
        assert turn is not None
        try:
            gen = self._current.get(agent_id)
            if gen is None:
                self._log.debug("no cached runtime to invalidate for agent %r", agent_id)
                return
            if self._now() >= gen.expires_at:
                self._log.debug("cached runtime of agent %r already expired", agent_id)
                self._store.detach(gen, RemovalCause.EXPIRED)
                return
            if gen.cfg_version >= cfg_version:
                # departure: duplicate or late events do not trigger rebuild storms.
                self._log.debug(
                    "invalidation of agent %r to version %d ignored: cached version is %d",
                    agent_id, cfg_version, gen.cfg_version,
                )
                return
            await self._rebuild(gen, cfg_version, turn)
        finally:
            self._exit(agent_id, turn)

    async def _rebuild(self, gen: _Generation[R, A], cfg_version: int, turn: _Turn) -> None:
        agent_id = gen.agent_id
        self._stats.rebuilds += 1
        started = time.perf_counter()
        task = self._running_loop().create_task(self._bounded(gen.rebuild))
        self._rebuilds.add(task)
        turn.owner = task
        try:
            seed = await task
            if seed is not None:
                self._check_seed(seed, agent_id)
        except BaseException as exc:
            self._stats.rebuild_failures += 1
            if task.done() and not task.cancelled() and task.exception() is None:
                # a seed that arrived just as we were cancelled, or one that failed the check
                self._discard_seed(agent_id, task.result())
            # departure: the original kept serving the runtime it knew to be stale.
            if gen.current:
                self._store.detach(gen, RemovalCause.INVALIDATED)
            current = asyncio.current_task(self._loop)
            if (
                isinstance(exc, asyncio.CancelledError)
                and self._closed
                and current is not None
                and not current.cancelling()
            ):
                raise RuntimeManagerClosed("closed during the rebuild") from None
            self._log.warning(
                "rebuild of agent %r for version %d failed; entry evicted: %r",
                agent_id, cfg_version, exc,
                extra={"agent_id": agent_id, "cfg_version": cfg_version},
            )
            raise
        finally:
            self._stats.record_rebuild_time((time.perf_counter() - started) * 1000)
            self._rebuilds.discard(task)
            turn.owner = None
        if seed is None:
            # departure: the original evicted without disposing.
            self._log.warning(
                "rebuild of agent %r for version %d returned None; entry evicted",
                agent_id, cfg_version,
                extra={"agent_id": agent_id, "cfg_version": cfg_version},
            )
            if gen.current:
                self._store.detach(gen, RemovalCause.INVALIDATED)
            return
        if seed.cfg_version < cfg_version:
            self._log.warning(
                "rebuilt runtime of agent %r has version %d, older than invalidation version %d",
                agent_id, seed.cfg_version, cfg_version,
                extra={
                    "agent_id": agent_id,
                    "cfg_version": cfg_version,
                    "rebuilt_version": seed.cfg_version,
                },
            )
        self._install(seed, RemovalCause.INVALIDATED)

    async def _bounded(self, call: Callable[[], Awaitable[T]]) -> T:
        """Run a build or rebuild bounded by ``build_timeout_ms``."""
        async with asyncio.timeout(self._build_timeout_s):
            return await call()

    async def evict(self, agent_id: str) -> bool:
        """Remove ``agent_id``'s entry whatever its version (disposal waits for its pins).

        This is how a deleted agent leaves. Returns whether an entry was removed.
        """
        # departure: the original had no way to drop an entry (cfg_deleted carries the old
        # version, which the version rule of on_invalidate would ignore).
        turn = await self._enter(agent_id)
        try:
            gen = self._current.get(agent_id)
            if gen is None:
                return False
            self._store.detach(gen, RemovalCause.EXPLICIT)
            return True
        finally:
            self._exit(agent_id, turn)

    async def evict_all(self) -> int:
        """Evict every entry (each after whatever is in flight for it); return how many."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        removed = 0
        queued = []
        for agent_id in list(self._current):
            if agent_id in self._queues:
                queued.append(agent_id)
            elif agent_id in self._current:
                self._store.detach(self._current[agent_id], RemovalCause.EXPLICIT)
                removed += 1
        queued.extend(k for k in list(self._queues) if k not in queued)
        results = await asyncio.gather(*(self.evict(k) for k in queued))
        return removed + sum(results)

    async def _enter(self, agent_id: str, *, always_queue: bool = False) -> _Turn | None:
        """Take ``agent_id``'s turn for a write. Returns None when the write is synchronous
        and nothing was in flight (no queue needed)."""
        if self._loop_ref._thread_id != get_ident():
            self._gate()
        if agent_id not in self._queues and not always_queue:
            return None
        self._check_reentry(agent_id)
        turn = self._turns.enqueue(agent_id, self._running_loop())
        await self._turns.wait_turn(agent_id, turn)
        if self._closed:
            self._turns.leave(agent_id, turn)
            raise RuntimeManagerClosed("the runtime manager is closed")
        return turn

    def _exit(self, agent_id: str, turn: _Turn | None) -> None:
        if turn is not None:
            self._turns.leave(agent_id, turn)

    # ------------------------------------------------------------------ install, pins, expiry

    def _install(
        self, seed: RuntimeSeed[R, A], cause: RemovalCause | None, now: int | None = None
    ) -> _Generation[R, A]:
        if now is None:
            now = self._now()
        ttl_ms = seed.ttl_ms
        if ttl_ms is None:
            ttl_ms = self._default_ttl_ms
        else:
            resolved = resolve_seed_ttl_ms(ttl_ms, self._default_ttl_ms, self._guards.max_ttl_ms)
            if resolved != ttl_ms:
                self._log.warning(
                    "ttl_ms=%d of agent %r's seed resolved to the guard's %d ms",
                    ttl_ms, seed.agent_id, resolved, extra={"agent_id": seed.agent_id},
                )
            ttl_ms = resolved
        gen = self._store.install(
            seed,
            now + ttl_ms * self._ticks_per_ms,
            cause,
            in_order=ttl_ms == self._default_ttl_ms,
        )
        self._store.pop_expired(now, _EXPIRE_BATCH)
        self._trim(keep=seed.agent_id, warn=True)
        return gen

    def _trim(self, *, keep: str | None, warn: bool) -> None:
        """Evict least recently used idle entries while above capacity, never ``keep``."""
        # departure: the original could evict the entry its own install had just put in.
        store = self._store
        self._over_capacity = False
        while len(self._current) > self._max_entries:
            victim = store.lru_victim(keep)
            if victim is None:
                self._over_capacity = True
                if warn:
                    self._log.warning(
                        "agent runtime cache still above capacity (%d/%d) due to pinned entries "
                        "after installing agent %r",
                        len(self._current), self._max_entries, keep,
                        extra={
                            "agent_id": keep,
                            "size": len(self._current),
                            "max_entries": self._max_entries,
                        },
                    )
                return
            store.detach(victim, RemovalCause.CAPACITY)

    def _live(self, agent_id: str) -> _Generation[R, A] | None:
        """The live current generation (an expired idle one is removed on the way)."""
        gen = self._current.get(agent_id)
        if gen is None:
            return None
        if self._now() >= gen.expires_at:
            if gen.pins == 0:
                self._store.detach(gen, RemovalCause.EXPIRED)
            return None
        return gen

    def _unpinned(self, gen: _Generation[R, A]) -> None:
        """One pin of ``gen`` was just given back (the caller decremented its counter)."""
        self._unpins += 1
        if gen.loose_pins or gen.lease_pins:
            return
        if gen.current and self._now() < gen.expires_at and not self._over_capacity:
            try:  # most recently used: it was in use until now
                self._recency.move_to_end(gen._agent_id)
            except KeyError:  # dropped from the order while pinned
                self._recency[gen._agent_id] = None
            return
        self._last_pin_gone(gen)

    def _last_pin_gone(self, gen: _Generation[R, A]) -> None:
        """The slow cases of a last unpin (release and _unpinned handle the common one)."""
        if gen.current and self._now() < gen.expires_at:  # live, but the map is over capacity
            self._recency.pop(gen._agent_id, None)
            self._recency[gen._agent_id] = None  # most recently used: in use until now
            self._trim(keep=None, warn=False)
        elif gen.current:
            self._store.detach(gen, RemovalCause.EXPIRED)
        else:
            self._store.drop_detached(gen)
            # closing detached every entry, so draining ends on this branch
            if self._drained is not None and not self._pinned():
                self._drained.set()

    # ------------------------------------------------------------------ callbacks from the store

    def _removed(self, agent_id: str, cause: RemovalCause) -> None:
        self._stats.record_removal(cause)
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

    async def wait_for_disposals(self) -> None:
        """Wait until every disposal scheduled so far has ended or been abandoned (after
        ``dispose_timeout_ms``). Disposal never blocks a cache operation; tests and
        shutdown use this to see its outcome. Never raises what a disposer raised."""
        await self._disposals.wait()

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the sweeper that disposes expired idle entries with no traffic. Idempotent."""
        # departure: the original pruned expired entries only when traffic came by.
        if self._loop_ref._thread_id != get_ident():
            self._gate()
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
        for load in list(self._loads.values()):
            if load.task is not None:
                in_flight.append(load.task)
        for task in in_flight:
            task.cancel()
        if in_flight:
            await asyncio.gather(*in_flight, return_exceptions=True)
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

    # ------------------------------------------------------------------ guards

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

    def _discard_seed(self, agent_id: str, seed: object) -> None:
        """A build or rebuild made this seed for the manager, which will not install it:
        its agent has no other owner, so it is disposed (unless the cache holds it too)."""
        agent = getattr(seed, "agent", None) if isinstance(seed, RuntimeSeed) else None
        if agent is not None and not self._store.owns(agent):
            self._orphaned(agent_id, agent)

    def _check_seed(self, seed: object, agent_id: str | None) -> None:
        if not isinstance(seed, RuntimeSeed):
            raise TypeError(f"expected a RuntimeSeed, got {type(seed).__name__}")
        if agent_id is not None and seed.agent_id != agent_id:
            raise ValueError(
                f"a seed built for agent {agent_id!r} carries agent id {seed.agent_id!r}"
            )


_new_object = object.__new__


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
