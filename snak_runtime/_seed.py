"""What callers hand to the manager (seeds) and what they get back (leases)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

R = TypeVar("R")
A = TypeVar("A")

Rebuild = Callable[[], Awaitable["RuntimeSeed[R, A] | None"]]
"""Rebuilds an entry for a newer configuration; ``None`` means the agent is gone."""

Build = Callable[[str], Awaitable["RuntimeSeed[R, A] | None"]]
"""Loads a missing entry for a lease: ``async (agent_id) -> RuntimeSeed | None``."""


@dataclass(frozen=True, slots=True)
class RuntimeSeed(Generic[R, A]):
    """One runtime to install, with the callback that rebuilds it on invalidation.

    The manager owns ``agent`` once it accepts the seed, and disposes it exactly once.
    """

    agent_id: str
    user_id: str
    cfg_version: int
    runtime: R
    rebuild: Rebuild[R, A]
    agent: A | None = None
    ttl_ms: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.agent_id, str) or not self.agent_id:
            raise ValueError(f"agent_id must be a non-empty string, got {self.agent_id!r}")
        if not isinstance(self.user_id, str):
            raise TypeError(f"user_id must be a string, got {type(self.user_id).__name__}")
        if isinstance(self.cfg_version, bool) or not isinstance(self.cfg_version, int):
            raise TypeError(f"cfg_version must be an integer, got {self.cfg_version!r}")
        if not callable(self.rebuild):
            raise TypeError(f"rebuild must be callable, got {type(self.rebuild).__name__}")
        if self.ttl_ms is not None and (
            isinstance(self.ttl_ms, bool) or not isinstance(self.ttl_ms, int)
        ):
            raise TypeError(f"ttl_ms must be an integer or None, got {self.ttl_ms!r}")


class AcquiredRuntime(NamedTuple, Generic[R, A]):
    """A pinned runtime and its agent, as ``acquire_with_agent`` returns them."""

    runtime: R
    agent: A | None


class RuntimeLease(NamedTuple, Generic[R, A]):
    """What ``lease()`` yields: a snapshot of the generation it pinned."""

    agent_id: str
    user_id: str
    cfg_version: int
    runtime: R
    agent: A | None
