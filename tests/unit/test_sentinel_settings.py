"""Sentinel settings: parsing REDIS_SENTINELS / REDIS_SENTINEL_MASTER and their rules (pure)."""

from __future__ import annotations

import logging
import re

import pytest

from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import (
    InvalidationSettings,
    InvalidationSubscriber,
    RedisEndpoint,
    publish_invalidation,
)
from snak_runtime.invalidation._sentinel import (
    DEFAULT_SENTINEL_PORT,
    RedisConfigError,
    SentinelEndpoint,
    check_not_both,
    master_from_env,
    master_from_keyword,
    parse_sentinel_address,
    sentinel_endpoint_from_env,
    sentinels_from_env,
    sentinels_from_keyword,
)


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize(
    ("entry", "expected"),
    [
        ("10.0.0.1:26380", ("10.0.0.1", 26380)),
        ("  sentinel-0:5000 ", ("sentinel-0", 5000)),
        ("sentinel-0", ("sentinel-0", DEFAULT_SENTINEL_PORT)),
        ("redis_sentinel_1:26379", ("redis_sentinel_1", 26379)),
        ("s-0.sentinel.ns.svc.cluster.local:26379", ("s-0.sentinel.ns.svc.cluster.local", 26379)),
        ("[::1]:26380", ("::1", 26380)),
        ("[::1]", ("::1", DEFAULT_SENTINEL_PORT)),
        ("[2001:DB8::0001]:1", ("2001:db8::1", 1)),
        ("h:65535", ("h", 65535)),
        ("h:00026379", ("h", 26379)),
    ],
)
def test_parse_sentinel_address_accepts(entry: str, expected: tuple[str, int]) -> None:
    assert parse_sentinel_address(entry) == expected


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("h:", "not host:port"),
        (":26379", "not host:port"),
        ("h:0", "not in 1..65535"),
        ("h:65536", "not in 1..65535"),
        ("h:99999999999999999999", "not in 1..65535"),
        ("h:abc", "not host:port"),
        ("h:+1", "not host:port"),
        ("h:-1", "not host:port"),
        ("h:26379.0", "not host:port"),
        ("h:\u0662\u0666", "not host:port"),  # Arabic-Indic digits: int() would take them
        ("redis://h:26379", "not host:port"),
        ("user:pw@h:26379", "not host:port"),
        ("h:26379/0", "not host:port"),
        ("h h:26379", "not host:port"),
        ("-h:26379", "not host:port"),
        ("h.:26379", "not host:port"),
        ("::1:26379", "IPv6 address must be in brackets"),
        ("[zz::1]:26379", "'zz::1' is not an IPv6 address"),
        ("[10.0.0.1]:26379", "is not an IPv6 address"),
    ],
)
def test_parse_sentinel_address_rejects_with_a_reason(entry: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_sentinel_address(entry)


def test_env_list_keeps_entries_in_order_without_repeats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG):
        found = sentinels_from_env("a:1,c,[::1]:4,a:1,")  # a trailing comma is harmless
    assert found == (("a", 1), ("c", DEFAULT_SENTINEL_PORT), ("::1", 4))
    assert caplog.records == []


@pytest.mark.parametrize("raw", [None, ""])
def test_env_list_unset_or_empty_is_empty_and_silent(
    caplog: pytest.LogCaptureFixture, raw: str | None
) -> None:
    with caplog.at_level(logging.DEBUG):
        assert sentinels_from_env(raw) == ()
    assert caplog.records == []


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("  ", "REDIS_SENTINELS='  ' is blank"),
        ("\t", "REDIS_SENTINELS='\\t' is blank"),
        ("a:1, b:2", "REDIS_SENTINELS entry ' b:2' has blanks around it"),
        (" a:1", "REDIS_SENTINELS entry ' a:1' has blanks around it"),
        ("a:1, ,b:2", "REDIS_SENTINELS entry ' ' has blanks around it"),
        ("a:1,b:2:3", "REDIS_SENTINELS entry 'b:2:3': an IPv6 address must be in brackets"),
        ("a:1,redis://d:5", "REDIS_SENTINELS entry 'redis://d:5': not host:port"),
        ("h:0", "REDIS_SENTINELS entry 'h:0': port 0 is not in 1..65535"),
        (",,", "REDIS_SENTINELS=',,' names no host:port entry"),
    ],
)
def test_a_malformed_env_list_is_a_start_up_error_naming_the_variable(
    raw: str, message: str
) -> None:
    # Before issue 23: a WARNING, the bad entry skipped (or, blank, no Sentinel at all).
    with pytest.raises(RedisConfigError) as info:
        sentinels_from_env(raw)
    assert str(info.value).startswith(message)


def test_a_huge_env_entry_is_not_echoed_whole() -> None:
    with pytest.raises(RedisConfigError) as info:
        sentinels_from_env("a:1," + "x" * 10_000 + ":y")
    assert len(str(info.value)) < 300


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("a:1,b", (("a", 1), ("b", DEFAULT_SENTINEL_PORT))),
        (["a:1", "a:1", "b:2"], (("a", 1), ("b", 2))),
        ([("a", 1), ("::1", 2)], (("a", 1), ("::1", 2))),
        ((x for x in ["a:1"]), (("a", 1),)),
    ],
)
def test_keyword_list_accepts(value: object, expected: tuple[tuple[str, int], ...]) -> None:
    assert sentinels_from_keyword(value) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("a:1,b:x", "sentinels entry 'b:x': not host:port"),
        ("a:1,", "sentinels entry '': empty entry"),
        ("a:1, b:2", "sentinels entry ' b:2': blanks around it"),
        ([], "sentinels must name at least one host:port"),
        ([("a", True)], "sentinels entry ('a', True): expected"),
        ([("a", "1")], "sentinels entry ('a', '1'): expected"),
        ([("a", 1, 2)], "sentinels entry ('a', 1, 2): expected"),
        ([("a", 0)], "port 0 is not in 1..65535"),
        ([("a b", 1)], "not host:port"),
        ([26379], "sentinels entry 26379: expected"),
    ],
)
def test_keyword_list_rejects_with_value_error(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        sentinels_from_keyword(value)  # type: ignore[arg-type]


def test_master_name_from_env(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        assert master_from_env(None) is None
        assert master_from_env("") is None
        assert master_from_env("mymaster") == "mymaster"
    assert caplog.records == []


@pytest.mark.parametrize("raw", ["  ", " mymaster ", "my master", "a\tb", "a\x00"])
def test_a_malformed_master_name_is_a_start_up_error(raw: str) -> None:
    with pytest.raises(RedisConfigError) as info:
        master_from_env(raw)
    assert str(info.value).startswith(f"REDIS_SENTINEL_MASTER={raw!r} is not a master name")


@pytest.mark.parametrize("bad", ["", " x", "a b", "a\tb", "a\x00", 3])
def test_master_name_keyword_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="master must be a non-empty name"):
        master_from_keyword(bad)  # type: ignore[arg-type]
    assert master_from_keyword("mymaster") == "mymaster"


def test_both_sentinel_and_direct_variables_is_an_error_saying_which_to_drop() -> None:
    check_not_both([], ["REDIS_URL"])
    check_not_both(["REDIS_SENTINELS"], [])
    with pytest.raises(RedisConfigError) as info:
        check_not_both(["REDIS_SENTINELS", "REDIS_SENTINEL_MASTER"], ["REDIS_URL"])
    assert isinstance(info.value, ValueError)
    assert str(info.value).startswith(
        "REDIS_SENTINELS and REDIS_SENTINEL_MASTER and REDIS_URL are both set: drop REDIS_URL "
        "to find the master through Sentinel"
    )
    assert "or drop REDIS_SENTINELS and REDIS_SENTINEL_MASTER to connect" in str(info.value)


def test_endpoint_never_shows_the_password() -> None:
    endpoint = SentinelEndpoint((("a", 1), ("::1", 2)), "m", password="s3cret", db=2)
    assert endpoint.describe() == "sentinel://a:1,[::1]:2/m/2"
    assert "s3cret" not in repr(endpoint)
    assert endpoint.usable and endpoint.problem() is None


def test_endpoint_problems() -> None:
    assert SentinelEndpoint((), "m").problem() == "REDIS_SENTINELS names no usable sentinel"
    no_master = SentinelEndpoint((("a", 1),), None)
    assert not no_master.usable
    assert no_master.describe() == "sentinel://a:1/?/0"
    assert (no_master.problem() or "").startswith("REDIS_SENTINEL_MASTER is not set")


def test_resolve_from_env_neither_set_is_none() -> None:
    assert sentinel_endpoint_from_env(None, "", password=None, db=0) is None
    assert sentinel_endpoint_from_env("", None, password=None, db=0) is None
    # Nothing Sentinel is set: the direct variables are someone else's business.
    assert sentinel_endpoint_from_env(None, None, password=None, db=0, direct_vars=["X"]) is None


def test_resolve_from_env_carries_password_and_db_to_the_master() -> None:
    endpoint = sentinel_endpoint_from_env("a:1,b:2", "m", password="pw", db=3)
    assert endpoint == SentinelEndpoint((("a", 1), ("b", 2)), "m", password="pw", db=3)


@pytest.mark.parametrize("direct", [["REDIS_URL"], ["REDIS_HOST"], ["REDIS_HOST", "REDIS_PORT"]])
@pytest.mark.parametrize(("sentinels", "master"), [("a:1", "m"), ("a:1", None), (None, "m")])
def test_resolve_from_env_with_a_direct_address_raises(
    direct: list[str], sentinels: str | None, master: str | None
) -> None:
    with pytest.raises(RedisConfigError, match=f"drop {' and '.join(direct)} to find"):
        sentinel_endpoint_from_env(sentinels, master, password=None, db=0, direct_vars=direct)


@pytest.mark.parametrize(
    ("sentinels", "master", "missing"),
    [("a:1", None, "REDIS_SENTINEL_MASTER"), (None, "m", "REDIS_SENTINELS"),
     ("a:1", "", "REDIS_SENTINEL_MASTER")],
)
def test_resolve_from_env_half_configured_is_a_start_up_error(
    sentinels: str | None, master: str | None, missing: str
) -> None:
    # Before issue 23: a WARNING, and a subscriber that could never connect.
    with pytest.raises(RedisConfigError, match=f"but {missing} is not: Sentinel needs both"):
        sentinel_endpoint_from_env(sentinels, master, password=None, db=0)


def test_resolve_from_env_a_bad_entry_is_a_start_up_error() -> None:
    with pytest.raises(RedisConfigError, match="REDIS_SENTINELS entry 'a:b': not host:port"):
        sentinel_endpoint_from_env("a:1,a:b", "m", password=None, db=0)


# --- the settings model, the subscriber, the publisher and the container ----------------------


def test_environment_selects_sentinel_with_password_and_db_for_the_master(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "10.0.0.1:26379,10.0.0.2:26380")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv("REDIS_PASSWORD", "s3cret")
    monkeypatch.setenv("REDIS_DB", "2")
    settings = InvalidationSettings()
    assert settings.configured
    target = settings.target()
    assert target == SentinelEndpoint(
        (("10.0.0.1", 26379), ("10.0.0.2", 26380)), "mymaster", password="s3cret", db=2
    )
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(target)


def test_without_sentinel_variables_the_target_is_the_direct_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    settings = InvalidationSettings()
    assert settings.target() == settings.endpoint() == RedisEndpoint(host="127.0.0.1")


@pytest.mark.parametrize("direct", ["REDIS_URL", "REDIS_HOST", "REDIS_PORT"])
async def test_sentinel_beside_a_direct_address_fails_start_up_naming_what_to_drop(
    monkeypatch: pytest.MonkeyPatch, direct: str
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "127.0.0.1:1")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "mymaster")
    monkeypatch.setenv(direct, {"REDIS_URL": "redis://127.0.0.1:1"}.get(direct, "1"))
    expected = f"drop {direct} to find the master through Sentinel"
    with pytest.raises(RedisConfigError, match=expected):
        InvalidationSettings().target()
    with pytest.raises(RedisConfigError, match=expected):
        await publish_invalidation("a", 1)
    container = RuntimeContainer()
    with pytest.raises(RedisConfigError, match=expected):
        await container.init_resources()  # type: ignore[misc]
    await container.shutdown_resources()  # type: ignore[misc]


def test_for_sentinels_keywords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")  # keywords win: the env is not read
    settings = InvalidationSettings.for_sentinels(
        [("::1", 26379), "h:2"], "m", password="pw", db=1, channel="c"
    )
    assert settings.channel == "c"
    assert settings.target() == SentinelEndpoint((("::1", 26379), ("h", 2)), "m", "pw", 1)
    assert InvalidationSettings.for_sentinels("h", "m").target() == SentinelEndpoint(
        (("h", DEFAULT_SENTINEL_PORT),), "m"
    )


@pytest.mark.parametrize(
    ("sentinels", "master", "db", "message"),
    [
        ("h:x", "m", 0, "sentinels entry 'h:x'"),
        ([], "m", 0, "sentinels must name at least one"),
        ("h:1", "", 0, "master must be a non-empty name"),
        ("h:1", "m", -1, "db must be an integer >= 0"),
        ("h:1", "m", True, "db must be an integer >= 0"),
    ],
)
def test_for_sentinels_rejects_bad_keywords(
    sentinels: str | list[str], master: str, db: int, message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        InvalidationSettings.for_sentinels(sentinels, master, db=db)


@pytest.mark.parametrize(
    ("sentinels", "master", "named"),
    [("not a host", "mymaster", "REDIS_SENTINELS"), ("  ", "mymaster", "REDIS_SENTINELS"),
     ("127.0.0.1:1", " ", "REDIS_SENTINEL_MASTER")],
)
async def test_malformed_sentinel_settings_fail_the_containers_start(
    monkeypatch: pytest.MonkeyPatch, sentinels: str, master: str, named: str
) -> None:
    # Before issue 23: the service started, deaf to invalidations (or, with a blank
    # REDIS_SENTINELS, connected to localhost), with a WARNING.
    monkeypatch.setenv("REDIS_SENTINELS", sentinels)
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", master)
    container = RuntimeContainer()
    with pytest.raises(RedisConfigError, match=named):
        await container.init_resources()  # type: ignore[misc]
    await container.shutdown_resources()  # type: ignore[misc]


def test_for_sentinels_takes_password_and_db_from_the_environment_when_not_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_PASSWORD", "env-pw")
    monkeypatch.setenv("REDIS_DB", "4")
    assert InvalidationSettings.for_sentinels("h:1", "m").target() == SentinelEndpoint(
        (("h", 1),), "m", "env-pw", 4
    )
    assert InvalidationSettings.for_sentinels("h:1", "m", password="kw", db=0).target() == (
        SentinelEndpoint((("h", 1),), "m", "kw", 0)
    )


def test_for_url_replaces_sentinel_variables_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_SENTINELS", "h:1")
    monkeypatch.setenv("REDIS_SENTINEL_MASTER", "m")
    target = InvalidationSettings.for_url("redis://127.0.0.1:6390").target()
    assert target == RedisEndpoint(url="redis://127.0.0.1:6390")


async def test_the_master_gets_password_and_db_and_the_sentinels_do_not() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    from snak_runtime.invalidation._client import make_client

    settings = InvalidationSettings.for_sentinels(
        ["127.0.0.1:1", "127.0.0.1:2"], "m", password="p", db=5
    )
    client = make_client(settings.target(), timeout_s=0.5)
    try:
        master_kwargs = client.connection_pool.connection_kwargs
        assert (master_kwargs["password"], master_kwargs["db"]) == ("p", 5)
        sentinel = client.connection_pool.sentinel_manager  # type: ignore[attr-defined]
        for node in sentinel.sentinels:
            assert node.connection_pool.connection_kwargs.get("password") is None
        # Nothing answers on those ports: the error says so, naming the variable.
        with pytest.raises(RedisConnectionError, match=r"no sentinel in REDIS_SENTINELS answers"):
            await client.publish("c", "x")
    finally:
        await client.aclose()


async def test_container_override_with_keywords_gives_a_sentinel_subscriber() -> None:
    container = RuntimeContainer()
    container.invalidation_settings.override(
        InvalidationSettings.for_sentinels([("127.0.0.1", 1)], "m")
    )
    await container.init_resources()  # type: ignore[misc]
    try:
        subscriber = await container.invalidation()
        assert isinstance(subscriber, InvalidationSubscriber)
        assert subscriber.endpoint == SentinelEndpoint((("127.0.0.1", 1),), "m")
        assert not subscriber.connected
    finally:
        await container.shutdown_resources()  # type: ignore[misc]
