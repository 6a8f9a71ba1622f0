"""A malformed fleet setting fails start-up naming the variable (issue 23, finding 6 and 8).

Before: a malformed ``REDIS_URL`` stalled start-up, then the listener died and the service ran
deaf; ``redis://h:6379/abc`` silently used db 0; a bad ``REDIS_PORT``/``REDIS_DB`` fell back to
the default with a WARNING; a blank ``REDIS_HOST`` meant localhost; a channel with a stray tab
subscribed where nobody publishes. Now each is a ``RedisConfigError`` (a ``ValueError``) when
the settings are resolved: building the subscriber, the publisher, or the container's resource.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import (
    InvalidationPublisher,
    InvalidationSettings,
    InvalidationSubscriber,
    RedisConfigError,
    RedisEndpoint,
    publish_invalidation,
)

REDIS_VARS = (
    "REDIS_URL",
    "REDIS_HOST",
    "REDIS_PORT",
    "REDIS_PASSWORD",
    "REDIS_DB",
    "REDIS_SENTINELS",
    "REDIS_SENTINEL_MASTER",
    "AGENT_CFG_INVALIDATE_CHANNEL",
)


class FakeManager:
    """A target that is never called: these subscribers are built, never started."""

    async def on_invalidate(self, agent_id: str, cfg_version: int) -> None:
        raise AssertionError("not called")

    async def evict(self, agent_id: str) -> bool:
        raise AssertionError("not called")

    async def evict_all(self) -> int:
        raise AssertionError("not called")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in REDIS_VARS:
        monkeypatch.delenv(name, raising=False)
    yield


MALFORMED = [
    ("REDIS_URL", "abc", "is not a Redis URL (no scheme)"),
    ("REDIS_URL", "http://127.0.0.1:6379/0", "is not a Redis URL (scheme 'http')"),
    ("REDIS_URL", "redis://h:notaport/0", "is not a Redis URL"),
    ("REDIS_URL", "redis://h:70000/0", "is not a Redis URL"),
    ("REDIS_URL", "redis://h:0/0", "port 0 is not in 1..65535"),
    ("REDIS_URL", "redis://127.0.0.1:16391/abc", "the db 'abc' after the host is not an integer"),
    ("REDIS_URL", "redis://127.0.0.1:16391/1/2", "the db '1/2' after the host"),
    ("REDIS_URL", "redis://127.0.0.1:16391?db=x", "db='x' is not an integer"),
    ("REDIS_URL", "redis:///0", "names no host"),
    ("REDIS_URL", " redis://127.0.0.1:6379", "has blanks around it"),
    ("REDIS_URL", "redis://127.0.0.1:6379/0\t", "has blanks around it"),
    ("REDIS_URL", "redis://127.0.0.1 :6379", "holds blanks or control characters"),
    ("REDIS_URL", "unix://", "names no socket path"),
    ("REDIS_URL", "   ", "is blank"),
    ("REDIS_HOST", "   ", "is blank"),
    ("REDIS_HOST", "\t", "is blank"),
    ("REDIS_HOST", " 127.0.0.1", "has blanks around it"),
    ("REDIS_HOST", "127.0.0.1 ", "has blanks around it"),
    ("REDIS_HOST", "redis://127.0.0.1", "is a URL: set it as REDIS_URL"),
    ("REDIS_HOST", "redis-host:6379", "is not a host name or IP address (put the port in"),
    ("REDIS_HOST", "a b", "is not a host name or IP address"),
    ("REDIS_PORT", "abc", "is not an integer in 1..65535"),
    ("REDIS_PORT", "--6379", "is not an integer in 1..65535"),
    ("REDIS_PORT", "6379.0", "is not an integer in 1..65535"),
    ("REDIS_PORT", "6_379", "is not an integer in 1..65535"),
    ("REDIS_PORT", "\u0666\u0663\u0667\u0669", "is not an integer in 1..65535"),
    ("REDIS_PORT", "9" * 5000, "is not an integer in 1..65535"),
    ("REDIS_PORT", "0", "is not in 1..65535"),
    ("REDIS_PORT", "70000", "is not in 1..65535"),
    ("REDIS_PORT", "  ", "is not an integer in 1..65535"),
    ("REDIS_DB", "-1", "is not in 0..2147483647"),
    ("REDIS_DB", "abc", "is not an integer in 0..2147483647"),
    ("REDIS_DB", "1e3", "is not an integer in 0..2147483647"),
    ("AGENT_CFG_INVALIDATE_CHANNEL", "  ", "is blank"),
    ("AGENT_CFG_INVALIDATE_CHANNEL", "agent_cfg_invalidate\t", "has blanks around it"),
    ("AGENT_CFG_INVALIDATE_CHANNEL", " agent_cfg_invalidate", "has blanks around it"),
    ("AGENT_CFG_INVALIDATE_CHANNEL", "agent\tcfg", "holds blanks or control characters"),
    ("AGENT_CFG_INVALIDATE_CHANNEL", "agent cfg", "holds blanks or control characters"),
]


def _configure(monkeypatch: pytest.MonkeyPatch, name: str, raw: str) -> None:
    if name not in ("REDIS_URL", "REDIS_HOST"):  # the channel matters once Redis is configured
        monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    monkeypatch.setenv(name, raw)


@pytest.mark.parametrize(("name", "raw", "reason"), MALFORMED)
def test_a_malformed_variable_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, reason: str
) -> None:
    _configure(monkeypatch, name, raw)
    settings = InvalidationSettings()
    assert settings.configured
    with pytest.raises(RedisConfigError) as info:
        settings.target()
    message = str(info.value)
    assert message.startswith(f"{name}="), message
    assert reason in message
    assert len(message) < 400  # a 5,000-digit port is not echoed whole
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("name", "raw", "reason"), MALFORMED[:6] + MALFORMED[14:16])
async def test_a_malformed_variable_fails_the_subscribers_construction_at_once(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, reason: str
) -> None:
    _configure(monkeypatch, name, raw)
    with pytest.raises(RedisConfigError, match=name):
        InvalidationSubscriber(FakeManager())


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("REDIS_URL", "abc"),
        ("REDIS_URL", "redis://127.0.0.1:16391/abc"),
        ("REDIS_PORT", "abc"),
        ("REDIS_DB", "x"),
        ("REDIS_HOST", "  "),
        ("AGENT_CFG_INVALIDATE_CHANNEL", "agent_cfg_invalidate\t"),
    ],
)
async def test_a_malformed_variable_fails_the_containers_start(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    _configure(monkeypatch, name, raw)
    container = RuntimeContainer()
    async with asyncio.timeout(120):  # before: 6-7 s of connect attempts, then a deaf service
        with pytest.raises(RedisConfigError, match=name):
            await container.init_resources()  # type: ignore[misc]
    await container.shutdown_resources()  # type: ignore[misc]


@pytest.mark.parametrize(("name", "raw"), [("REDIS_URL", "abc"), ("REDIS_PORT", "x")])
async def test_publishing_with_a_malformed_variable_fails_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str
) -> None:
    _configure(monkeypatch, name, raw)
    with pytest.raises(RedisConfigError, match=name):
        await publish_invalidation("a", 1)


def test_the_password_is_never_in_the_message(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://user:s3cret@127.0.0.1:6390/abc")
    with pytest.raises(RedisConfigError) as info:
        InvalidationSettings().target()
    assert "s3cret" not in str(info.value)
    assert "redis://***@127.0.0.1:6390/abc" in str(info.value)


@pytest.mark.parametrize(
    ("name", "raw", "expected"),
    [
        ("REDIS_URL", "redis://127.0.0.1:6390/2", RedisEndpoint(url="redis://127.0.0.1:6390/2")),
        ("REDIS_URL", "rediss://:pw@h.example:6390", RedisEndpoint(url="rediss://:pw@h.example:6390")),
        ("REDIS_URL", "redis://h/0?db=3", RedisEndpoint(url="redis://h/0?db=3")),
        ("REDIS_URL", "unix:///run/redis.sock?db=1", RedisEndpoint(url="unix:///run/redis.sock?db=1")),
        ("REDIS_URL", "redis://[::1]:6390/", RedisEndpoint(url="redis://[::1]:6390/")),
        ("REDIS_HOST", "redis_1.internal", RedisEndpoint(host="redis_1.internal")),
        ("REDIS_HOST", "::1", RedisEndpoint(host="::1")),
        ("REDIS_HOST", "[::1]", RedisEndpoint(host="::1")),
        ("REDIS_PORT", " 6390 ", RedisEndpoint(host="127.0.0.1", port=6390)),  # CONTRACT §2
        ("REDIS_DB", "15", RedisEndpoint(host="127.0.0.1", db=15)),
    ],
)
def test_well_formed_values_are_accepted(
    monkeypatch: pytest.MonkeyPatch, name: str, raw: str, expected: RedisEndpoint
) -> None:
    _configure(monkeypatch, name, raw)
    assert InvalidationSettings().target() == expected


def test_an_empty_variable_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in REDIS_VARS:
        monkeypatch.setenv(name, "")
    settings = InvalidationSettings()
    assert not settings.configured and settings.channel == "agent_cfg_invalidate"
    monkeypatch.setenv("REDIS_HOST", "127.0.0.1")
    assert InvalidationSettings().target() == RedisEndpoint(host="127.0.0.1")
    # given in code, an empty value is unset too
    settings = InvalidationSettings.model_validate(
        {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": "", "REDIS_DB": "", "REDIS_URL": ""}
    )
    assert settings.target() == RedisEndpoint(host="127.0.0.1")


async def test_a_well_formed_but_unreachable_redis_still_warns_and_starts(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens on port 1
    container = RuntimeContainer()
    with caplog.at_level(logging.WARNING):
        await container.init_resources()  # type: ignore[misc]
    try:
        subscriber = await container.invalidation()
        assert isinstance(subscriber, InvalidationSubscriber) and not subscriber.connected
        assert any(r.levelno == logging.WARNING for r in caplog.records)
    finally:
        await container.shutdown_resources()  # type: ignore[misc]


# --- keywords: the same rules, naming the keyword ----------------------------------------------


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("abc", "url='abc' is not a Redis URL"),
        ("http://h:6379", "url='http://h:6379' is not a Redis URL"),
        ("redis://h:notaport/0", "url='redis://h:notaport/0' is not a Redis URL"),
        ("redis://h:6379/abc", "the db 'abc'"),
        (" redis://h:6379", "has blanks around it"),
    ],
)
def test_for_url_refuses_a_malformed_url_naming_the_keyword(url: str, reason: str) -> None:
    with pytest.raises(RedisConfigError, match=r"^url=") as info:
        InvalidationSettings.for_url(url)
    assert reason in str(info.value)
    with pytest.raises(RedisConfigError, match=r"^url="):
        InvalidationSubscriber(FakeManager(), url)
    with pytest.raises(RedisConfigError, match=r"^url="):
        InvalidationPublisher.from_url(url)


@pytest.mark.parametrize("channel", ["  ", "c\t", " c", "a b"])
def test_a_malformed_channel_keyword_is_refused_naming_it(channel: str) -> None:
    with pytest.raises(RedisConfigError, match=r"^channel="):
        InvalidationSettings.for_url("redis://127.0.0.1:1", channel=channel)
    with pytest.raises(RedisConfigError, match=r"^channel="):
        InvalidationSettings.for_sentinels("h:1", "m", channel=channel)
    with pytest.raises(RedisConfigError, match=r"^channel="):
        InvalidationSubscriber(FakeManager(), "redis://127.0.0.1:1", channel=channel)
    with pytest.raises(RedisConfigError, match=r"^channel="):
        InvalidationPublisher.from_client(object(), channel=channel)  # type: ignore[arg-type]


def test_a_malformed_channel_variable_fails_a_publisher_on_your_client(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_CFG_INVALIDATE_CHANNEL", "cfg\t")
    with pytest.raises(RedisConfigError, match=r"^AGENT_CFG_INVALIDATE_CHANNEL="):
        InvalidationPublisher.from_client(object())  # type: ignore[arg-type]
