"""The operator surface: quiet views of entries (``peek``, ``snapshot``) and the choice of
``evict_where``.

Kept apart from the request path: these visit many entries (``peek`` one, ``snapshot``
every one), and none of them is ever on a read's way. They read the cache through
``CacheView``, a read-only interface: nothing here changes an entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Protocol, TypeVar

from ._generation import _Generation, _IdleGeneration
from ._info import EntryInfo, _fast_entry_info
from ._stats import RemovalCause

R = TypeVar("R")
A = TypeVar("A")

Predicate = Callable[[EntryInfo], object]


class CacheView(Protocol):
    """What the operator views read of the cache part (and nothing else)."""

    @property
    def current(self) -> dict[str, _Generation[Any, Any]]: ...

    @property
    def detached(self) -> dict[str, list[_Generation[Any, Any]]]: ...

    @property
    def idle_ticks(self) -> int: ...

    @property
    def ticks_per_ms(self) -> int: ...

    def now(self) -> int: ...

    def cause(self, gen: _Generation[Any, Any], now: int) -> RemovalCause | None: ...

    def eviction_order(self) -> list[_Generation[Any, Any]]: ...

    def user_index(self) -> dict[str, set[str]]: ...


def check_id(name: str, value: object) -> str:
    """An agent or user id given to an operator method: a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _infos(
    view: CacheView, gens: Iterable[_Generation[Any, Any]], now: int
) -> list[tuple[_Generation[Any, Any], EntryInfo]]:
    """Each live generation of ``gens`` with its ``EntryInfo``; one loop with everything
    in locals, since ``snapshot()`` runs it over every entry."""
    per_ms = view.ticks_per_ms
    detached = view.detached
    idle = view.idle_ticks
    cause = view.cause
    make = _fast_entry_info
    out = []
    for gen in gens:
        if now >= gen.expires_at and cause(gen, now) is not None:
            continue  # expired (or idle: issue 16)
        # ``expires_at`` is the hot path's early bound (idle expiry, refresh-ahead): when the
        # entry itself expires is its TTL, or while unused the earlier of that and its idle
        # deadline
        expires_at = gen.deadline
        if idle and isinstance(gen, _IdleGeneration) and not (gen.loose_pins or gen.lease_pins):
            expires_at = min(expires_at, gen.last_used + idle)
        older = detached.get(gen._agent_id) if detached else None
        out.append((gen, make(
            gen._agent_id,
            gen._user_id,
            gen._cfg_version,
            (now - gen.installed_at) // per_ms,
            -((now - expires_at) // per_ms),  # rounded up: a live entry has >= 1 ms left
            gen.loose_pins + gen.lease_pins,
            0 if older is None else sum(g.loose_pins + g.lease_pins for g in older),
            gen.hits,
            gen.last_build_ms,
        )))
    return out


def peek(view: CacheView, agent_id: str) -> EntryInfo | None:
    """The live entry of ``agent_id`` as an ``EntryInfo``, or None. Pins, reorders and
    counts nothing (an expired entry is left for the sweeper)."""
    check_id("agent_id", agent_id)
    gen = view.current.get(agent_id)
    if gen is None:
        return None
    found = _infos(view, (gen,), view.now())
    return found[0][1] if found else None


def live_in_order(view: CacheView) -> list[tuple[_Generation[Any, Any], EntryInfo]]:
    """Every live entry with its ``EntryInfo``, in eviction order (one clock read)."""
    return _infos(view, view.eviction_order(), view.now())


def snapshot(view: CacheView) -> list[EntryInfo]:
    """Every live entry, next to be evicted first. Pins, reorders and counts nothing."""
    return [info for _, info in live_in_order(view)]


def agent_ids(view: CacheView, user_id: str | None = None) -> list[str]:
    """The agent ids in the map, unordered (expired entries the sweeper has not removed yet
    included: ``peek`` tells which are live); with ``user_id``, that user's only.

    A copy made at C speed (no per-entry Python work), so a caller can walk a large cache in
    chunks without holding the event loop: the admin router's paged listing does. With
    ``user_id`` it reads the user index, built on first use (one pass over the map, once per
    manager, as ``evict_user``'s first call)."""
    if user_id is None:
        return list(view.current)
    return list(view.user_index().get(check_id("user_id", user_id), ()))


def chosen(view: CacheView, predicate: Predicate) -> list[_Generation[Any, Any]]:
    """The live entries whose ``EntryInfo`` satisfies ``predicate``: it runs over a whole
    snapshot first, so if it raises, nothing is chosen and the error propagates."""
    return [gen for gen, info in live_in_order(view) if predicate(info)]
