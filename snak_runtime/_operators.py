"""The operator surface: quiet views of entries, and removal by user or by predicate.

Kept apart from the request path: these visit many entries (``peek`` one, ``snapshot``
every one, ``evict_user`` one user's), and none of them is ever on a read's way.
Functions of the manager, so the facade's methods stay one line each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ._info import EntryInfo, _fast_entry_info
from ._keyed import _Turn
from ._seed import RuntimeSeed
from ._stats import RemovalCause
from ._store import _Generation, _IdleGeneration, _Store

if TYPE_CHECKING:
    from ._core import _ManagerCore as AgentRuntimeManager  # any layer of the manager

R = TypeVar("R")
A = TypeVar("A")

logger = logging.getLogger(__name__)

Predicate = Callable[[EntryInfo], object]


def check_id(name: str, value: object) -> str:
    """An agent or user id given to an operator method: a non-empty string."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty")
    return value


def _infos(
    manager: AgentRuntimeManager[R, A], gens: Iterable[_Generation[R, A]], now: int
) -> list[tuple[_Generation[R, A], EntryInfo]]:
    """Each live generation of ``gens`` with its ``EntryInfo``; one loop with everything
    in locals, since ``snapshot()`` runs it over every entry."""
    per_ms = manager._ticks_per_ms
    store = manager._store
    detached = store.detached
    idle = store.idle_ticks
    make = _fast_entry_info
    out = []
    for gen in gens:
        if now >= gen.expires_at and store.cause(gen, now) is not None:
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


def peek(manager: AgentRuntimeManager[Any, Any], agent_id: str) -> EntryInfo | None:
    """The live entry of ``agent_id`` as an ``EntryInfo``, or None. Pins, reorders and
    counts nothing (an expired entry is left for the sweeper)."""
    check_id("agent_id", agent_id)
    gen = manager._store.current.get(agent_id)
    if gen is None:
        return None
    found = _infos(manager, (gen,), manager._now())
    return found[0][1] if found else None


def eviction_order(store: _Store[R, A]) -> list[_Generation[R, A]]:
    """Every current generation, next capacity victim first.

    The policy's ``order()`` lists the candidates (idle entries), exactly as eviction
    would take them (LRU) or as its best approximation (a policy that cannot say exactly
    documents how it guesses). Pinned entries follow in install order: none can be
    evicted before its last release, and where it then goes is the policy's decision.
    """
    order = store.policy.order()
    if len(order) < len(store.current):
        listed = {id(gen) for gen in order}
        order.extend(g for g in store.current.values() if id(g) not in listed)
    return order


def live_in_order(
    manager: AgentRuntimeManager[R, A],
) -> list[tuple[_Generation[R, A], EntryInfo]]:
    """Every live entry with its ``EntryInfo``, in eviction order (one clock read)."""
    return _infos(manager, eviction_order(manager._store), manager._now())


def snapshot(manager: AgentRuntimeManager[Any, Any]) -> list[EntryInfo]:
    """Every live entry, next to be evicted first. Pins, reorders and counts nothing."""
    return [info for _, info in live_in_order(manager)]


def agent_ids(manager: AgentRuntimeManager[Any, Any], user_id: str | None = None) -> list[str]:
    """The agent ids in the map, unordered (expired entries the sweeper has not removed yet
    included: ``peek`` tells which are live); with ``user_id``, that user's only.

    A copy made at C speed (no per-entry Python work), so a caller can walk a large cache in
    chunks without holding the event loop: the admin router's paged listing does. With
    ``user_id`` it reads the user index, built on first use (one pass over the map, once per
    manager, as ``evict_user``'s first call)."""
    if user_id is None:
        return list(manager._store.current)
    return manager._store.user_agent_ids(check_id("user_id", user_id))


def evict_user(manager: AgentRuntimeManager[Any, Any], user_id: str) -> int:
    """Remove every entry of ``user_id`` now (cause ``explicit``; a pinned one's agent is
    disposed at its last release) and mark every operation in flight so that a seed of
    that user it made before now is discarded, not installed. Returns how many entries
    left the map. Costs that user's entries plus the operations in flight (the first call
    also builds the user index: one pass over the map, once per manager)."""
    store = manager._store
    removed = 0
    for agent_id in store.user_agent_ids(user_id):
        store.detach(store.current[agent_id], RemovalCause.EXPLICIT)
        removed += 1
    for queue in manager._turns.queues.values():
        for turn in queue:
            if turn.discards is None:
                turn.discards = {user_id}
            else:
                turn.discards.add(user_id)
    for refresh in manager._refreshes.values():  # refresh-ahead rebuilds in flight, likewise
        refresh.discards.add(user_id)
    manager._log.info(
        "evicted %d cached runtime(s) of user %r", removed, user_id,
        extra={"user_id": user_id, "removed": removed},
    )
    return removed


def evict_where(manager: AgentRuntimeManager[Any, Any], predicate: Predicate) -> int:
    """Remove every live entry whose ``EntryInfo`` satisfies ``predicate`` (cause
    ``explicit``). The predicate runs over a whole snapshot first: if it raises, nothing
    is removed and the error propagates. Returns how many entries left the map."""
    chosen = [gen for gen, info in live_in_order(manager) if predicate(info)]
    store = manager._store
    removed = 0
    for gen in chosen:
        if gen.current:  # the predicate may have had side effects; be exact anyway
            store.detach(gen, RemovalCause.EXPLICIT)
            removed += 1
    return removed


def discarded(turn: _Turn | None, seed: RuntimeSeed[Any, Any]) -> bool:
    """Whether ``evict_user`` ran for ``seed``'s user while the operation holding ``turn``
    was making (or, for ``shadow_seed``, waiting to install) it."""
    return turn is not None and turn.discards is not None and seed.user_id in turn.discards
