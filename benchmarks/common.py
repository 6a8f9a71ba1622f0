"""Shared pieces of the benchmark: run settings, key sequences, timing, manager factory.

``snak_runtime`` is imported inside the factories, not at the top: the side-by-side
comparison (compare.py) imports this module in a worker whose ``snak_runtime`` is another
version of the project, which may lack the private modules of this one.
"""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from snak_runtime import AgentRuntimeManager, RuntimeSeed
    from snak_runtime._clock import Clock

SIZES: tuple[int, ...] = (64, 1_000, 10_000, 100_000)
DISTS: tuple[str, ...] = ("uniform", "zipf")
ZIPF_S = 1.1
LONG_TTL_MS = 3_600_000  # nothing expires during a hit-path run


@dataclass(frozen=True, slots=True)
class Settings:
    """How much work each part does: ``--quick`` shrinks everything."""

    quick: bool
    rounds: int  # interleaved rounds per measurement (the median is reported)
    hit_ops: int  # operations per hit-path sample
    install_ops: int  # installs per install sample
    waiters: int  # single-flight waiters
    flight_rounds: int
    expiry_entries: int
    expiry_rounds: int  # sweeps (each refills the cache)
    memory_entries: int
    seed: int = 20_240_601


QUICK = Settings(
    quick=True, rounds=5, hit_ops=2_000, install_ops=500, waiters=1_000, flight_rounds=5,
    expiry_entries=20_000, expiry_rounds=1, memory_entries=20_000,
)
FULL = Settings(
    quick=False, rounds=15, hit_ops=5_000, install_ops=2_000, waiters=1_000, flight_rounds=15,
    expiry_entries=100_000, expiry_rounds=3, memory_entries=100_000,
)


@dataclass(slots=True)
class Series:
    """The raw samples (nanoseconds per operation) of one system in one setting."""

    group: str  # "hit", "install", "flight", "expiry"
    system: str
    size: int
    dist: str
    samples_ns: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def median_ns(self) -> float:
        return statistics.median(self.samples_ns) if self.samples_ns else float("nan")

    def as_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "system": self.system,
            "size": self.size,
            "dist": self.dist,
            "median_ns": self.median_ns,
            "samples_ns": self.samples_ns,
            **({"extra": self.extra} if self.extra else {}),
        }


def agent_keys(n: int, prefix: str = "agent") -> list[str]:
    return [f"{prefix}-{i:07d}" for i in range(n)]


def key_sequence(keys: Sequence[str], dist: str, length: int, seed: int) -> list[str]:
    """``length`` keys drawn uniformly or by Zipf(1.1) popularity (hot keys scattered)."""
    rng = np.random.default_rng(seed)
    n = len(keys)
    if dist == "uniform":
        picks = rng.integers(0, n, size=length)
    else:
        weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** ZIPF_S
        ranks = rng.choice(n, size=length, p=weights / weights.sum())
        picks = rng.permutation(n)[ranks]  # rank r is a random key, not the r-th created
    return [keys[int(i)] for i in picks]


async def _no_rebuild() -> None:
    return None


AGENTS_PER_USER = 4
"""Agents ``...-0``..``-3`` belong to one user, the next four to the next (as snak's 2,000
agents of 500 users), so a per-user quota of 4 or more evicts nothing in a benchmark."""


def user_of(agent_id: str) -> str:
    _, _, number = agent_id.rpartition("-")
    return f"user-{int(number) // AGENTS_PER_USER}" if number.isdigit() else "user"


def make_seed(agent_id: str, runtime: object, agent: object | None = None,
              version: int = 1) -> RuntimeSeed[Any, Any]:
    from snak_runtime import RuntimeSeed

    return RuntimeSeed(agent_id=agent_id, user_id=user_of(agent_id), cfg_version=version,
                       runtime=runtime, rebuild=_no_rebuild, agent=agent)


def make_manager(max_entries: int, *, ttl_ms: int = LONG_TTL_MS, clock: Clock | None = None,
                 **options: Any) -> AgentRuntimeManager[Any, Any]:
    """A manager whose guard and limits are exactly ``max_entries`` and ``ttl_ms``;
    ``options`` are further constructor keywords (compare.py's ``--option``)."""
    from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings

    return AgentRuntimeManager(
        guards=GuardConfig(max_entries=max_entries, max_ttl_ms=ttl_ms),
        settings=RuntimeCacheSettings(max_entries=str(max_entries), ttl_ms=str(ttl_ms)),
        clock=clock,
        **options,
    )


async def timed(run: Callable[[], Awaitable[object]], ops: int) -> float:
    """Nanoseconds per operation of one awaited run, with the cyclic GC held off (as timeit)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter_ns()
        await run()
        return (time.perf_counter_ns() - started) / ops
    finally:
        if enabled:
            gc.enable()


def settle() -> None:
    """After a setup: collect once and freeze what survives, so that later collections
    (between parts) do not walk the caches under test."""
    gc.collect()
    gc.freeze()


def unsettle() -> None:
    gc.unfreeze()
    gc.collect()


ProgressFn = Callable[[str], None]
