"""What callers hand to the manager (seeds) and what they get back (leases)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

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


class AcquiredRuntime(Generic[R, A]):
    """A pinned runtime and its agent, as ``acquire_with_agent`` returns them.

    Read-only. The manager hands out its own record of the generation (which is one of
    these), so a hit allocates nothing.
    """

    __slots__ = ("_agent", "_runtime")

    def __init__(self, runtime: R, agent: A | None = None) -> None:
        self._runtime = runtime
        self._agent = agent

    @property
    def runtime(self) -> R:
        return self._runtime

    @property
    def agent(self) -> A | None:
        return self._agent

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, AcquiredRuntime):
            return NotImplemented
        return self._runtime == other._runtime and self._agent == other._agent

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"AcquiredRuntime(runtime={self._runtime!r}, agent={self._agent!r})"


class RuntimeLease(AcquiredRuntime[R, A]):
    """What ``lease()`` yields: the generation it pinned (read-only)."""

    __slots__ = ("_agent_id", "_cfg_version", "_user_id")

    def __init__(
        self, agent_id: str, user_id: str, cfg_version: int, runtime: R, agent: A | None = None
    ) -> None:
        super().__init__(runtime, agent)
        self._agent_id = agent_id
        self._user_id = user_id
        self._cfg_version = cfg_version

    @property
    def agent_id(self) -> str:
        return self._agent_id

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def cfg_version(self) -> int:
        return self._cfg_version

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, RuntimeLease):
            return super().__eq__(other)
        return (
            self._agent_id == other._agent_id
            and self._user_id == other._user_id
            and self._cfg_version == other._cfg_version
            and self._runtime == other._runtime
            and self._agent == other._agent
        )

    __hash__ = None

    def __repr__(self) -> str:
        return (
            f"RuntimeLease(agent_id={self._agent_id!r}, user_id={self._user_id!r}, "
            f"cfg_version={self._cfg_version!r}, runtime={self._runtime!r}, "
            f"agent={self._agent!r})"
        )


def check_seed(seed: object, agent_id: str | None) -> None:
    """What a build or rebuild returned must be a seed, of the agent it was built for."""
    if not isinstance(seed, RuntimeSeed):
        raise TypeError(f"expected a RuntimeSeed, got {type(seed).__name__}")
    if agent_id is not None and seed.agent_id != agent_id:
        raise ValueError(
            f"a seed built for agent {agent_id!r} carries agent id {seed.agent_id!r}"
        )
