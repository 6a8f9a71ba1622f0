"""The per-entry version ceiling (issue 23, finding 4; CONTRACT §12): an invalidation at or
below the highest version already requested for a cached agent is a no-op, even when the
rebuild returned something older; the ceiling is forgotten when the entry leaves the map.
"""

from __future__ import annotations

import asyncio

from snak_runtime.testing import FakeClock
from tests.helpers import AssertStats, MakeManager, MakeSeed, Rebuild, Seed

BOGUS = 2**63 - 1


def counting_rebuild(make_seed: MakeSeed, version: int) -> tuple[list[int], Rebuild]:
    """A rebuild that always returns ``version`` (a replica that lags, say); counts calls."""
    calls: list[int] = []

    async def rebuild() -> Seed:
        calls.append(1)
        return make_seed("a", version, rebuild=rebuild)

    return calls, rebuild


async def test_a_bogus_version_repeated_200_times_rebuilds_once(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager()
    calls, rebuild = counting_rebuild(make_seed, 5)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    for _ in range(200):
        await m.on_invalidate("a", BOGUS)
    assert len(calls) == 1
    assert m.version_of("a") == 5
    assert_stats(m, invalidations=200, rebuilds=1, rebuild_failures=0, size=1)


async def test_concurrent_duplicates_rebuild_once(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    calls, rebuild = counting_rebuild(make_seed, 5)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await asyncio.gather(*(m.on_invalidate("a", BOGUS) for _ in range(200)))
    assert len(calls) == 1


async def test_a_newer_version_than_the_ceiling_still_rebuilds(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    calls, rebuild = counting_rebuild(make_seed, 5)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", 7)
    await m.on_invalidate("a", 7)
    await m.on_invalidate("a", 6)
    assert len(calls) == 1
    await m.on_invalidate("a", 8)
    assert len(calls) == 2


async def test_the_ceiling_is_forgotten_when_the_entry_leaves(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()
    calls, rebuild = counting_rebuild(make_seed, 5)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", BOGUS)
    await m.on_invalidate("a", BOGUS)
    assert len(calls) == 1
    # evicted: the next entry starts without it
    assert await m.evict("a") is True
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", BOGUS)
    assert len(calls) == 2
    # expired: likewise, so a bogus version silences an agent for at most one TTL
    fake_clock.advance(10_000)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", BOGUS)
    assert len(calls) == 3


async def test_a_same_version_refresh_keeps_the_ceiling(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager()
    calls, rebuild = counting_rebuild(make_seed, 5)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", 9)
    await m.shadow_seed(make_seed("a", 5, rebuild=rebuild))
    await m.on_invalidate("a", 9)
    assert len(calls) == 1
