"""Eviction policies: the registry, the LRU order behind the policy interface, and what the
manager tells a policy (the build and rebuild durations on its injected clock)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from snak_runtime import RuntimeCacheSettings, RuntimeSeed
from snak_runtime._config import EVICTION_VAR
from snak_runtime._generation import _Generation
from snak_runtime._policies import (
    DEFAULT_POLICY,
    POLICY_NAMES,
    AdaptivePolicy,
    EvictionPolicy,
    LruPolicy,
    make_policy,
    resolve_eviction,
)
from snak_runtime._stats import RemovalCause
from snak_runtime._store import _Store
from snak_runtime.testing import FakeClock, internals
from tests.helpers import MakeManager, MakeSeed

Gen = _Generation[str, object]


async def _no_rebuild() -> RuntimeSeed[str, object] | None:
    raise AssertionError("not called")


def gen(agent_id: str) -> Gen:
    return _Generation(RuntimeSeed(agent_id, "u1", 1, agent_id, _no_rebuild), 100)


def test_registry_names_lru_and_refuses_unknown_names() -> None:
    assert POLICY_NAMES == ("lru", "cost-aware", "adaptive")
    policy = make_policy("lru", 8)
    assert isinstance(policy, LruPolicy) and policy.capacity == 8
    known = "known: lru, cost-aware, adaptive"
    with pytest.raises(ValueError, match=f"unknown eviction policy 'lfu'; {known}"):
        make_policy("lfu", 8)


def test_lru_hooks_give_the_least_recently_used_idle_entry() -> None:
    policy: EvictionPolicy = make_policy("lru", 3)
    a, b, c = gen("a"), gen("b"), gen("c")
    for g in (a, b, c):
        policy.inserted(g, None)
    assert policy.order() == [a, b, c]
    policy.idle(a)  # last release: most recently used
    assert policy.order() == [b, c, a]
    assert policy.victim(None) is b
    assert policy.victim(b) is None  # never the one just installed
    b.lease_pins = 1
    assert policy.victim(None) is c  # pinned entries are passed over
    assert policy.order() == [c, a]
    b.lease_pins = 0
    policy.idle(b)  # back in the order, most recent
    assert policy.order() == [c, a, b]
    b2 = gen("b")
    policy.inserted(b2, b)  # replaced: same id, most recent
    policy.removed(c)
    assert policy.order() == [a, b2]
    policy.learn_cost("a", 12.5)  # LRU ignores costs
    assert policy.order() == [a, b2]


def test_store_tells_its_policy_of_installs_replacements_and_removals() -> None:
    calls: list[tuple[str, Any, Any]] = []

    class Recording(EvictionPolicy):
        name = "recording"

        def inserted(self, gen: Gen, previous: Gen | None) -> None:
            calls.append(("inserted", gen.agent_id, previous))

        def removed(self, gen: Gen) -> None:
            calls.append(("removed", gen.agent_id, None))

        def idle(self, gen: Gen) -> None:
            calls.append(("idle", gen.agent_id, None))

        def victim(self, keep: Gen | None) -> Gen | None:
            return None

        def order(self) -> list[Gen]:
            return []

    store: _Store[str, object] = _Store(lambda *a: None, lambda *a: None, Recording(4))
    seed = RuntimeSeed("a", "u1", 1, "a1", _no_rebuild)
    first = store.install(seed, 100, RemovalCause.REPLACED)
    store.install(RuntimeSeed("a", "u1", 2, "a2", _no_rebuild), 100, RemovalCause.REPLACED)
    store.detach(store.current["a"], RemovalCause.EXPLICIT)
    assert calls == [("inserted", "a", None), ("inserted", "a", first), ("removed", "a", None)]


async def test_manager_times_builds_and_rebuilds_on_its_clock_for_the_policy(
    make_manager: MakeManager, make_seed: MakeSeed, fake_clock: FakeClock
) -> None:
    m = make_manager()
    learned: list[tuple[str, float]] = []
    internals(m).policy.learn_cost = lambda agent_id, ms: learned.append((agent_id, ms))  # type: ignore[method-assign]

    async def rebuild() -> RuntimeSeed[str, object] | None:
        fake_clock.advance(30)
        return make_seed("a", 2)

    async def build(agent_id: str) -> RuntimeSeed[str, object] | None:
        fake_clock.advance(70)
        return make_seed(agent_id, 1, rebuild=rebuild)

    async with m.lease("a", build=build):
        pass
    await m.on_invalidate("a", 2)
    assert learned == [("a", 70), ("a", 30)]


# ------------------------------------------------- choosing the policy (issue 13)


@pytest.mark.parametrize("name", POLICY_NAMES)
def test_eviction_keyword_picks_the_policy(make_manager: MakeManager, name: str) -> None:
    m = make_manager(eviction=name)
    assert m.eviction == name
    assert internals(m).policy.name == name


def test_default_policy_is_adaptive(make_manager: MakeManager) -> None:
    assert DEFAULT_POLICY == "adaptive"
    assert make_manager().eviction == "adaptive"
    assert isinstance(internals(make_manager()).policy, AdaptivePolicy)


@pytest.mark.parametrize("bad", ["lfu", "LRU", "", " lru"])
def test_unknown_eviction_keyword_is_a_value_error_listing_the_names(
    make_manager: MakeManager, bad: str
) -> None:
    message = f"unknown eviction policy {bad!r}; known: lru, cost-aware, adaptive"
    with pytest.raises(ValueError, match=message):
        make_manager(eviction=bad)


@pytest.mark.parametrize(("raw", "expected"), [("lru", "lru"), (" LRU ", "lru"),
                                                ("cost-aware", "cost-aware"), ("", "adaptive")])
def test_eviction_environment_variable(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, raw: str, expected: str
) -> None:
    monkeypatch.setenv(EVICTION_VAR, raw)
    assert make_manager(settings=RuntimeCacheSettings()).eviction == expected
    assert make_manager(settings=None).eviction == expected  # read from the environment now


def test_bad_eviction_variable_warns_naming_it_and_falls_back_to_the_default(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(EVICTION_VAR, "fifo")
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        m = make_manager(settings=RuntimeCacheSettings())
    assert m.eviction == DEFAULT_POLICY
    assert any(
        r.levelno == logging.WARNING and EVICTION_VAR in r.getMessage()
        and "'fifo'" in r.getMessage() for r in caplog.records
    )


def test_eviction_keyword_beats_the_environment(
    make_manager: MakeManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EVICTION_VAR, "cost-aware")
    assert make_manager(eviction="lru", settings=RuntimeCacheSettings()).eviction == "lru"
    assert resolve_eviction(None, EVICTION_VAR, "lru") == "lru"
