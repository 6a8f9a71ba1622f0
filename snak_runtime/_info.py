"""EntryInfo: what an operator sees of one cached entry (a copy, never a live view)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EntryInfo:
    """One live entry as ``peek()`` and ``snapshot()`` saw it, read without pinning it,
    reordering it or counting a hit.

    A frozen copy: it does not follow the entry afterwards, and it holds neither the
    runtime nor the agent, so handing it to a dashboard leaks no live object.
    """

    agent_id: str
    user_id: str
    cfg_version: int
    age_ms: int
    """Milliseconds since this generation was installed (a same-version refresh restarts it)."""
    expires_in_ms: int
    """Milliseconds left before it expires (always positive: expired entries are not listed)."""
    pins: int
    """Outstanding pins on this, the current generation."""
    detached_pins: int
    """Outstanding pins on older generations of the same agent id, still in use."""
    hits: int
    """Hits on this generation since it was installed (load waiters excluded)."""
    last_build_ms: float | None
    """How long the build or rebuild that produced this agent's runtime took, on the
    manager's clock; None when unknown (the runtime came from ``shadow_seed``)."""
