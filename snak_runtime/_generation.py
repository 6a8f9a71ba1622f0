"""Generations: one installed seed each, the lease view users get plus the cache's
bookkeeping. The lowest layer of the manager's parts (the store, the policies and every part
import it; it imports nothing of theirs)."""

from __future__ import annotations

from typing import TypeVar, final

from ._seed import Rebuild, RuntimeLease, RuntimeSeed

R = TypeVar("R")
A = TypeVar("A")


class _Generation(RuntimeLease[R, A]):
    """One installed seed: the read-only lease view users get, plus the cache's bookkeeping.

    The payload never changes (a refresh installs a new generation), so the manager hands
    this object itself to callers as their ``RuntimeLease`` / ``AcquiredRuntime``.
    """

    __slots__ = (
        "ceiling",
        "current",
        "deadline",
        "expires_at",
        "finished",
        "hits",
        "in_expiry",
        "installed_at",
        "last_build_ms",
        "lease_pins",
        "loose_pins",
        "rebuild",
        "refresh_at",
    )

    def __init__(self, seed: RuntimeSeed[R, A], expires_at: int, installed_at: int = 0) -> None:
        # Assigned directly (no super().__init__ chain): this runs on every install.
        self._agent_id = seed.agent_id
        self._user_id = seed.user_id
        self._cfg_version = seed.cfg_version
        self._runtime = seed.runtime
        self._agent = seed.agent
        self.rebuild: Rebuild[R, A] = seed.rebuild
        # The highest configuration version requested of this agent id while it stays
        # cached (on_invalidate ignores one at or below it): its own version, or one that
        # its rebuild was asked for and could not reach (CONTRACT §12).
        self.ceiling = seed.cfg_version
        # In the manager's clock ticks. ``deadline`` is the TTL's expiry; ``expires_at``,
        # which the hot path compares, is the same unless refresh-ahead is on: then it is
        # ``refresh_at`` until a refresh was tried, so only hits in the window leave it.
        self.expires_at = self.deadline = expires_at
        self.refresh_at = 0  # refresh-ahead: when its window opens; 0 = none (or tried)
        self.installed_at = installed_at  # same ticks; for EntryInfo.age_ms
        self.hits = 0  # hits since install (EntryInfo.hits)
        self.last_build_ms: float | None = None  # EntryInfo.last_build_ms
        self.lease_pins = 0  # pins held by leases, each given back by its own exit
        self.loose_pins = 0  # pins taken by acquire*, which release(agent_id) gives back
        self.current = True  # the map's entry for its agent id
        self.in_expiry = True  # still queued in the expiry FIFO or heap
        self.finished = False  # agent reference given up (disposed or handed on)

    @property
    def pins(self) -> int:
        return self.loose_pins + self.lease_pins

    # Identity, not value: two generations may carry equal payloads.
    __eq__ = object.__eq__
    __hash__ = object.__hash__  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"<generation {self._agent_id!r} v{self._cfg_version} pins={self.pins} "
            f"current={self.current}>"
        )


@final
class _IdleGeneration(_Generation[R, A]):
    """A generation of a cache with idle expiry on: ``expires_at`` is the earlier of its TTL
    deadline (kept in ``deadline``) and a lower bound of its idle deadline.

    A subclass, so that a cache without idle expiry keeps the smaller object (every
    generation already has ``deadline`` and ``refresh_at``; ``last_used`` is idle's own).
    """

    __slots__ = ("last_used",)

    def __init__(self, seed: RuntimeSeed[R, A], expires_at: int, installed_at: int) -> None:
        super().__init__(seed, expires_at, installed_at)
        self.last_used = installed_at  # install, or release of the last pin
