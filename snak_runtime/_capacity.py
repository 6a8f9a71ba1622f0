"""Capacity and the per-user quota: while the map holds more than ``max_entries`` (or a user
more than its quota), the policy's victims leave, never the entry just installed and never a
pinned one. When pins keep the map above a bound, the release path goes slow
(``slow_release``) until a last release lets it shrink back.

Owned by the cache part; the facade's release reads ``slow_release`` one lookup away.
"""

from __future__ import annotations

import logging
from typing import Any, final

from ._generation import _Generation
from ._stats import RemovalCause
from ._store import _Store


@final
class _Capacity:
    """The bounds on the map's size, and whether pins keep it above one of them (no
    ``__slots__``: tests wrap ``trim_user`` through ``snak_runtime.testing.internals``)."""

    def __init__(
        self,
        store: _Store[Any, Any],
        max_entries: int,
        quota: int | None,
        *,
        idle_on: bool,
        log: logging.Logger,
    ) -> None:
        self._store = store
        self._max_entries = max_entries
        self._quota = quota  # entries per user beyond what pins hold (None: no quota)
        self._idle_on = idle_on  # idle expiry: every last release records its time
        self._log = log
        self.over_capacity = False  # pins kept the map above max_entries after a trim
        self.over_quota: set[str] = set()  # users pins keep above the quota
        # The release path's one test for "not the common case": over capacity or a quota,
        # or idle expiry on (the slow path records the release time).
        self.slow_release = idle_on

    def installed(self, gen: _Generation[Any, Any]) -> None:
        """``gen`` was just installed: the user pays first, then the map."""
        if self._quota is not None:
            self.trim_user(gen._user_id, keep=gen, warn=True)
        self.trim(keep=gen, warn=True)

    def released(self) -> None:
        """A last pin went: shrink back to the bounds that pins kept the map above."""
        if self.over_quota:
            for user_id in list(self.over_quota):
                self.trim_user(user_id, keep=None, warn=False)
            if not self.over_quota and not self.over_capacity:
                self.slow_release = self._idle_on  # the common release again
        if self.over_capacity:
            self.trim(keep=None, warn=False)

    def trim(self, *, keep: _Generation[Any, Any] | None, warn: bool) -> None:
        """Evict the policy's victims while above capacity, never ``keep`` (just installed)."""
        # departure: the original could evict the entry its own install had just put in.
        store = self._store
        current = store.current
        max_entries = self._max_entries
        self.over_capacity = False
        self.slow_release = self._idle_on or bool(self.over_quota)
        while len(current) > max_entries:
            victim = store.victim(keep)
            if victim is None:
                self.over_capacity = self.slow_release = True
                if warn:
                    keep_id = None if keep is None else keep._agent_id
                    self._log.warning(
                        "agent runtime cache still above capacity (%d/%d) due to pinned entries "
                        "after installing agent %r",
                        len(current), max_entries, keep_id,
                        extra={
                            "agent_id": keep_id,
                            "size": len(current),
                            "max_entries": max_entries,
                        },
                    )
                return
            store.detach(victim, RemovalCause.CAPACITY)

    def trim_user(self, user_id: str, *, keep: _Generation[Any, Any] | None, warn: bool) -> None:
        """Evict ``user_id``'s least valued entries while it holds more than the quota,
        never ``keep`` and never another user's; O(that user's entries) per eviction."""
        quota = self._quota
        assert quota is not None
        store = self._store
        by_user = store.index_users()
        held = by_user.get(user_id)
        while held is not None and len(held) > quota:
            victim = store.user_victim(user_id, keep)
            if victim is None:
                self.over_quota.add(user_id)
                self.slow_release = True
                if warn:
                    keep_id = None if keep is None else keep._agent_id
                    self._log.warning(
                        "user %r holds %d agent runtimes, above max_entries_per_user=%d, "
                        "due to pinned entries after installing agent %r",
                        user_id, len(held), quota, keep_id,
                        extra={"user_id": user_id, "agent_id": keep_id, "held": len(held)},
                    )
                return
            store.detach(victim, RemovalCause.QUOTA)
            held = by_user.get(user_id)
        self.over_quota.discard(user_id)
