"""Eviction policies by name: one module per policy, one line per policy in the registry."""

from __future__ import annotations

import logging

from ._base import EvictionPolicy
from .adaptive import AdaptivePolicy
from .cost_aware import CostAwarePolicy
from .lru import LruPolicy

_POLICIES: dict[str, type[EvictionPolicy]] = {
    LruPolicy.name: LruPolicy,
    CostAwarePolicy.name: CostAwarePolicy,
    AdaptivePolicy.name: AdaptivePolicy,
}
POLICY_NAMES: tuple[str, ...] = tuple(_POLICIES)
# Issue 25: within 1.05x the build-seconds and 1.10x the misses of the best published online
# policy in every cell of benchmarks/hit_ratio.py (docs/performance/index.md says where not).
# departure: the original evicted the least recently used entry; eviction="lru" keeps that.
DEFAULT_POLICY = AdaptivePolicy.name

_log = logging.getLogger(__name__)


def make_policy(name: str, capacity: int) -> EvictionPolicy:
    """A new policy ``name`` for a cache of ``capacity`` entries; ValueError if unknown."""
    try:
        policy = _POLICIES[name]
    except KeyError:
        raise ValueError(
            f"unknown eviction policy {name!r}; known: {', '.join(POLICY_NAMES)}"
        ) from None
    return policy(capacity)


def resolve_eviction(keyword: str | None, variable: str, raw: str | None) -> str:
    """The policy name: the keyword (ValueError if unknown), else the environment variable
    ``variable`` = ``raw`` (unknown: WARNING naming both, then the default), else the default.
    """
    if keyword is not None:
        if keyword not in _POLICIES:
            raise ValueError(
                f"unknown eviction policy {keyword!r}; known: {', '.join(POLICY_NAMES)}"
            )
        return keyword
    if raw is None or not raw.strip():
        return DEFAULT_POLICY
    name = raw.strip().lower()
    if name not in _POLICIES:
        _log.warning(
            "%s=%r ignored: not an eviction policy (known: %s); using %r",
            variable, raw, ", ".join(POLICY_NAMES), DEFAULT_POLICY,
        )
        return DEFAULT_POLICY
    return name


__all__ = (
    "DEFAULT_POLICY",
    "POLICY_NAMES",
    "AdaptivePolicy",
    "CostAwarePolicy",
    "EvictionPolicy",
    "LruPolicy",
    "make_policy",
    "resolve_eviction",
)
