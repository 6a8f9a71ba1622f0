"""A cache primed with ``shadow_seed`` installs more agents than it serves reads: the adaptive
policy's tuner then sees fewer requests than installs (its first version computed a negative
miss-rate variance, and ``shadow_seed`` raised ``ValueError``)."""

from __future__ import annotations

from snak_runtime import GuardConfig
from snak_runtime._policies._tuner import EPOCH
from tests.helpers import MakeManager, MakeSeed


async def test_priming_with_more_installs_than_reads_never_raises(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="adaptive", guards=GuardConfig(max_entries=8, max_ttl_ms=60_000))
    await m.shadow_seed(make_seed("hot"))
    for i in range(6 * EPOCH):  # three epochs of reads, two installs each
        await m.shadow_seed(make_seed(f"primed-{i}"))  # an install, never read
        if i % 2 == 0:
            assert await m.acquire("hot") is not None  # a read (hit) and its release
            m.release("hot")
            await m.shadow_seed(make_seed("hot", 1 + i))
    assert m.size == 8
    assert m.stats().pinned == 0
