"""EntryInfo: what an operator sees of one cached entry (a copy, never a live view)."""

from __future__ import annotations

from dataclasses import dataclass, fields


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


_FIELDS = (
    "agent_id", "user_id", "cfg_version", "age_ms", "expires_in_ms", "pins", "detached_pins",
    "hits", "last_build_ms",
)
if tuple(f.name for f in fields(EntryInfo)) != _FIELDS:  # pragma: no cover - a guard for edits
    raise AssertionError("EntryInfo's fields changed: update _FIELDS and _fast_entry_info")

_new = object.__new__
(
    _set_agent_id, _set_user_id, _set_cfg_version, _set_age_ms, _set_expires_in_ms, _set_pins,
    _set_detached_pins, _set_hits, _set_last_build_ms,
) = (getattr(EntryInfo, name).__set__ for name in _FIELDS)


def _fast_entry_info(
    agent_id: str,
    user_id: str,
    cfg_version: int,
    age_ms: int,
    expires_in_ms: int,
    pins: int,
    detached_pins: int,
    hits: int,
    last_build_ms: float | None,
) -> EntryInfo:
    """``EntryInfo(...)`` at half the cost: a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` by name for each field, which dominates ``snapshot()`` over
    10,000 entries. Sets the slots directly; tests compare it with the constructor."""
    info: EntryInfo = _new(EntryInfo)
    _set_agent_id(info, agent_id)
    _set_user_id(info, user_id)
    _set_cfg_version(info, cfg_version)
    _set_age_ms(info, age_ms)
    _set_expires_in_ms(info, expires_in_ms)
    _set_pins(info, pins)
    _set_detached_pins(info, detached_pins)
    _set_hits(info, hits)
    _set_last_build_ms(info, last_build_ms)
    return info
