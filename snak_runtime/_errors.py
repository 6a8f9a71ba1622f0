"""Exceptions raised by the runtime manager."""

from __future__ import annotations


class RuntimeNotCached(LookupError):
    """Raised when a lease finds no runtime it may hand out.

    The entry is missing, expired, owned by another user (without saying so), or its
    builder returned ``None``.
    """

    def __init__(self, agent_id: str, reason: str = "no cached runtime") -> None:
        super().__init__(f"{reason} for agent {agent_id!r}")
        self.agent_id = agent_id


class RuntimeManagerClosed(RuntimeError):
    """Raised when a read or write reaches a manager after ``aclose()`` began."""
