"""Per-user quota (issue 19): one user cannot fill the cache; every other rule still holds."""

from __future__ import annotations

import json
import logging
import pathlib

import pytest

from snak_runtime import AgentRuntimeManager, GuardConfig, RuntimeCacheSettings
from snak_runtime._config import GuardConfigError
from snak_runtime.containers import RuntimeContainer
from snak_runtime.testing import FakeClock, RecordingDisposer, internals
from tests.helpers import AssertStats, MakeManager, MakeSeed, Manager, listen

VAR = "AGENT_RUNTIME_CACHE_MAX_ENTRIES_PER_USER"
SEED_GUARDS = pathlib.Path("/work/shared/seed/default.guards.json")


def big(**kw: object) -> GuardConfig:
    return GuardConfig(max_entries=10, max_ttl_ms=1_000, **kw)  # type: ignore[arg-type]


def held(m: Manager, user_id: str) -> set[str]:
    return set(internals(m).cache.user_index().get(user_id, ()))


# ------------------------------------------------------------------ the rule


async def test_an_install_over_the_quota_evicts_that_users_least_recent_entry(
    make_manager: MakeManager, make_seed: MakeSeed, disposer: RecordingDisposer,
    assert_stats: AssertStats,
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=2)
    removed = listen(m)
    await m.shadow_seed(make_seed("v1", user_id="v"))  # older than all of u's: never taken
    for agent_id in ("a", "b"):
        await m.shadow_seed(make_seed(agent_id, user_id="u"))
    await m.shadow_seed(make_seed("c", user_id="u"))
    assert removed == [("a", "quota")]
    assert held(m, "u") == {"b", "c"} and held(m, "v") == {"v1"}
    await m.wait_for_disposals()
    assert [str(a) for a in disposer.disposed] == ["Agent('a@v1#1')"]
    assert_stats(m, quota_evictions=1, evictions=0, size=3, removals={"quota": 1})


async def test_the_victim_is_the_one_the_policy_values_least_releases_count(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=3)
    removed = listen(m)
    for agent_id in ("a", "b", "c"):
        await m.shadow_seed(make_seed(agent_id, user_id="u"))
    assert await m.acquire("a") is not None
    m.release("a")  # the hot path's release: a is now the most recently used
    async with m.lease("b"):
        pass
    await m.shadow_seed(make_seed("d", user_id="u"))
    await m.shadow_seed(make_seed("e", user_id="u"))
    assert removed == [("c", "quota"), ("a", "quota")]


async def test_replacing_ones_own_agent_is_not_a_new_entry(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=2)
    removed = listen(m)
    await m.shadow_seed(make_seed("a", user_id="u"))
    await m.shadow_seed(make_seed("b", user_id="u"))
    await m.shadow_seed(make_seed("a", 1, user_id="u"))  # same version: refresh
    await m.shadow_seed(make_seed("b", 2, user_id="u"))  # newer version: replaced
    assert removed == [("b", "replaced")]
    assert held(m, "u") == {"a", "b"}
    assert_stats(m, quota_evictions=0, size=2)


async def test_an_agent_moving_to_another_user_counts_for_the_new_owner(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=1)
    removed = listen(m)
    await m.shadow_seed(make_seed("a", user_id="u"))
    await m.shadow_seed(make_seed("b", user_id="v"))
    await m.shadow_seed(make_seed("b", 2, user_id="u"))
    assert removed == [("b", "replaced"), ("a", "quota")]
    assert held(m, "u") == {"b"} and held(m, "v") == set()


async def test_pins_keep_a_user_over_quota_with_a_warning_and_it_shrinks_at_release(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats,
    caplog: pytest.LogCaptureFixture,
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=1)
    removed = listen(m)
    await m.shadow_seed(make_seed("a", user_id="alice"))
    await m.shadow_seed(make_seed("x", user_id="bob"))
    assert await m.acquire("a") is not None
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        await m.shadow_seed(make_seed("b", user_id="alice"))  # a pinned, b just installed
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "user 'alice' holds 2 agent runtimes, above max_entries_per_user=1, due to pinned "
        "entries after installing agent 'b'"
    ]
    assert removed == [] and held(m, "alice") == {"a", "b"}
    m.release("a")  # alice's pin goes: she shrinks back to her quota (a is now most recent)
    assert removed == [("b", "quota")]
    assert held(m, "alice") == {"a"} and held(m, "bob") == {"x"}
    assert not internals(m).cache.capacity.slow_release  # the common release is fast again
    assert internals(m).cache.over_limits() == (False, frozenset())
    assert_stats(m, quota_evictions=1, evictions=0, pinned=0, size=2)


async def test_any_last_release_shrinks_an_over_quota_user_as_capacity_does(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=1)
    removed = listen(m)
    await m.shadow_seed(make_seed("a", user_id="alice"))
    await m.shadow_seed(make_seed("x", user_id="bob"))
    assert await m.acquire("a") is not None
    await m.shadow_seed(make_seed("b", user_id="alice"))
    assert await m.acquire("x") is not None
    m.release("x")  # bob's release: alice's unpinned surplus goes, nothing of bob's
    assert removed == [("b", "quota")]
    assert held(m, "alice") == {"a"} and held(m, "bob") == {"x"}
    m.release("a")
    assert removed == [("b", "quota")]


async def test_a_lease_exit_also_shrinks_an_over_quota_user(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=1)
    removed = listen(m)
    await m.shadow_seed(make_seed("a", user_id="u"))
    async with m.lease("a"):
        await m.shadow_seed(make_seed("b", user_id="u"))
        assert removed == []
    assert removed == [("b", "quota")]


async def test_an_over_quota_user_whose_entries_leave_otherwise_is_forgotten(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=1)
    await m.shadow_seed(make_seed("a", user_id="u"))
    assert await m.acquire("a") is not None
    await m.shadow_seed(make_seed("b", user_id="u"))
    assert internals(m).cache.over_limits()[1] == {"u"}
    assert await m.evict("b")
    m.release("a")
    assert not internals(m).cache.over_limits()[1] and not internals(m).cache.capacity.slow_release
    assert held(m, "u") == {"a"}


async def test_global_capacity_still_holds_with_the_quota_on(
    make_manager: MakeManager, make_seed: MakeSeed, assert_stats: AssertStats
) -> None:
    m = make_manager(eviction="lru", max_entries_per_user=2)  # capacity 3
    removed = listen(m)
    await m.shadow_seed(make_seed("v1", user_id="v"))
    await m.shadow_seed(make_seed("v2", user_id="v"))
    await m.shadow_seed(make_seed("u1", user_id="u"))
    await m.shadow_seed(make_seed("u2", user_id="u"))  # capacity: v1 (LRU overall)
    await m.shadow_seed(make_seed("u3", user_id="u"))  # quota: u1
    assert removed == [("v1", "capacity"), ("u1", "quota")]
    assert m.size == 3
    assert_stats(m, evictions=1, quota_evictions=1)


async def test_capacity_order_stays_exact_lru_with_the_quota_on(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", max_entries_per_user=3)  # capacity 3
    removed = listen(m)
    for agent_id, user in (("a", "u"), ("b", "v"), ("c", "w")):
        await m.shadow_seed(make_seed(agent_id, user_id=user))
    for agent_id in ("a", "b"):
        assert await m.acquire(agent_id) is not None
        m.release(agent_id)
    await m.shadow_seed(make_seed("d", user_id="x"))
    assert removed == [("c", "capacity")]
    assert [g.agent_id for g in internals(m).policy.order()] == ["a", "b", "d"]


async def test_quota_off_by_default_and_the_release_touch_is_unchanged(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big())
    assert m.max_entries_per_user is None
    policy = internals(m).policy
    assert internals(m).touch == policy.recency.move_to_end  # type: ignore[attr-defined]
    for n in range(5):
        await m.shadow_seed(make_seed(f"a{n}", user_id="u"))
    assert m.size == 5


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize("bad", [0, -1, 2.0, "3", True, object()])
def test_a_bad_keyword_is_a_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="max_entries_per_user must be a positive integer"):
        AgentRuntimeManager(settings=RuntimeCacheSettings(), max_entries_per_user=bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("raw", ["0", "-3", "2.5", "abc", "1e3"])
def test_a_bad_variable_is_ignored_with_a_warning_naming_it(
    raw: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(VAR, raw)
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        m: Manager = AgentRuntimeManager()
    assert m.max_entries_per_user is None
    assert [r.getMessage() for r in caplog.records] == [
        f"{VAR}={raw!r} ignored: " + ("not an integer" if raw in ("2.5", "abc", "1e3")
                                      else "must be >= 1")
    ]


def test_keyword_beats_variable_beats_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(VAR, " 5 ")
    assert AgentRuntimeManager[str, object]().max_entries_per_user == 5
    assert AgentRuntimeManager[str, object](max_entries_per_user=3).max_entries_per_user == 3
    settings = RuntimeCacheSettings(max_entries_per_user="7")
    assert AgentRuntimeManager[str, object](settings=settings).max_entries_per_user == 7


@pytest.mark.parametrize("source", ["keyword", "variable"])
def test_a_quota_above_the_guard_is_capped_with_a_warning(
    source: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    guards = GuardConfig(max_entries_per_user=4)
    keyword: int | None = None
    if source == "keyword":
        keyword = 9
        given = "keyword max_entries_per_user=9"
    else:
        monkeypatch.setenv(VAR, "9")
        given = f"{VAR}=9"
    with caplog.at_level(logging.WARNING, logger="snak_runtime"):
        m: Manager = AgentRuntimeManager(guards=guards, max_entries_per_user=keyword)
    assert m.max_entries_per_user == 4
    assert [r.getMessage() for r in caplog.records] == [
        f"{given} is above the guard agent_runtime.cache.max_entries_per_user=4; capped to 4"
        " (to raise the guard, set agent_runtime.cache.max_entries_per_user in the guards JSON"
        " file named by GUARDS_CONFIG_PATH)"
    ]


def test_the_guard_alone_sets_the_quota_and_below_it_is_kept() -> None:
    guards = GuardConfig(max_entries_per_user=4)
    assert AgentRuntimeManager[str, object](guards=guards).max_entries_per_user == 4
    m: Manager = AgentRuntimeManager(guards=guards, max_entries_per_user=2)
    assert m.max_entries_per_user == 2


@pytest.mark.parametrize("bad", [0, -1, 2.0, True, "4"])
def test_guard_config_refuses_a_bad_ceiling(bad: object) -> None:
    with pytest.raises(ValueError, match="max_entries_per_user must be a positive integer"):
        GuardConfig(max_entries_per_user=bad)  # type: ignore[arg-type]


def _guards_file(tmp_path: pathlib.Path, cache: dict[str, object]) -> pathlib.Path:
    path = tmp_path / "guards.json"
    path.write_text(json.dumps({"user": {"max_agents": 100}, "agent_runtime": {"cache": cache}}))
    return path


def test_guards_file_key_is_optional(tmp_path: pathlib.Path) -> None:
    without = _guards_file(tmp_path, {"max_entries": 64, "max_ttl_ms": 300_000})
    assert GuardConfig.from_file(without).max_entries_per_user is None
    with_key = _guards_file(
        tmp_path, {"max_entries": 64, "max_ttl_ms": 300_000, "max_entries_per_user": 8}
    )
    assert GuardConfig.from_file(with_key).max_entries_per_user == 8


def test_the_seed_guards_file_still_loads_with_no_ceiling() -> None:
    guards = GuardConfig.from_file(SEED_GUARDS)
    assert guards.max_entries_per_user is None


@pytest.mark.parametrize("bad", [0, -2, 8.0, True, "8", None, [8]])
def test_guards_file_with_a_bad_ceiling_names_file_and_key(
    tmp_path: pathlib.Path, bad: object
) -> None:
    path = _guards_file(
        tmp_path, {"max_entries": 64, "max_ttl_ms": 300_000, "max_entries_per_user": bad}
    )
    with pytest.raises(GuardConfigError) as info:
        GuardConfig.from_file(path)
    assert str(path) in str(info.value)
    assert "agent_runtime.cache.max_entries_per_user must be a positive integer" in str(info.value)


async def test_the_container_passes_the_quota(fake_clock: FakeClock) -> None:
    container = RuntimeContainer()
    container.max_entries_per_user.override(6)
    with container.clock.override(fake_clock):
        manager = container.manager()
    assert manager.max_entries_per_user == 6
    await manager.aclose()


async def test_evict_user_and_the_quota_share_one_exact_index(
    make_manager: MakeManager, make_seed: MakeSeed
) -> None:
    m = make_manager(eviction="lru", guards=big(), max_entries_per_user=2)
    for agent_id in ("a", "b", "c"):
        await m.shadow_seed(make_seed(agent_id, user_id="u"))
    await m.shadow_seed(make_seed("x", user_id="v"))
    assert held(m, "u") == {"b", "c"}
    assert await m.evict_user("u") == 2
    assert held(m, "u") == set() and held(m, "v") == {"x"}
    for agent_id in ("d", "e", "f"):
        await m.shadow_seed(make_seed(agent_id, user_id="u"))
    assert held(m, "u") == {"e", "f"}
    assert [info.agent_id for info in m.snapshot()] == ["x", "e", "f"]
