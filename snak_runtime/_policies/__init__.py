"""Eviction policies by name: one module per policy, one line per policy in the registry."""

from __future__ import annotations

from ._base import EvictionPolicy
from .lru import LruPolicy

_POLICIES: dict[str, type[EvictionPolicy]] = {
    LruPolicy.name: LruPolicy,
}
POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    """A new policy ``name`` for a cache of ``capacity`` entries; ValueError if unknown."""
    try:
        policy = _POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown eviction policy {name!r}; known: {', '.join(POLICY_NAMES)}"
        ) from None
    return policy(capacity)


__all__ = ("POLICY_NAMES", "EvictionPolicy", "LruPolicy", "make_policy")
