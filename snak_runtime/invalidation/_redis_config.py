"""The rules for the Redis variables: a malformed value is a start-up error naming it.

Pure: no redis import, no I/O. A service that is silently deaf to invalidations, or
connected to the wrong Redis, is worse than one that does not start (CONTRACT §12), so a
value that cannot be what the operator meant (``REDIS_URL=abc``, a db that is not a number,
a channel with a stray tab, a blank host) raises ``RedisConfigError`` naming the variable,
with its value shown short and without credentials. An empty variable is unset. A
well-formed address that does not answer is not a configuration fault: the subscriber warns
and retries.

Each check takes the ``name`` to blame: the variable (``REDIS_PORT``) for the environment,
the keyword (``url``, ``channel``) for a value passed in code.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Final
from urllib.parse import parse_qs, urlsplit

from ._sentinel import RedisConfigError

URL_VAR: Final = "REDIS_URL"
HOST_VAR: Final = "REDIS_HOST"
PORT_VAR: Final = "REDIS_PORT"
DB_VAR: Final = "REDIS_DB"
CHANNEL_VAR: Final = "AGENT_CFG_INVALIDATE_CHANNEL"

MAX_DB: Final = 2**31 - 1
_SHOWN_CHARS: Final = 80
_URL_FORMS: Final = (
    "redis://[[user]:password@]host[:port][/db], rediss://... (TLS) or unix:///path/to/socket"
)
# A host name or IPv4 address (docker-style underscores allowed): what REDIS_HOST may be,
# besides an IPv6 address.
_HOST_RE: Final = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?", re.ASCII)
_INT_RE: Final = re.compile(r"\s*([+-]?[0-9]+)\s*", re.ASCII)  # CONTRACT §2's integer
_DIGITS_RE: Final = re.compile(r"[0-9]+", re.ASCII)
_SPACE_OR_CONTROL_RE: Final = re.compile(r"[\s\x00-\x1f\x7f]")


def shown(value: str) -> str:
    """``value`` for an error message: repr'd, cut short (a 10 MB value is not echoed)."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def redacted_url(url: str) -> str:
    """``url`` without its credentials (``redis://***@host:6379/0``), for messages."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url if "@" not in url else "***@" + url.rpartition("@")[2]
    authority_end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1:
            authority_end = min(authority_end, at)
    authority = rest[:authority_end]
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}://{authority}{rest[authority_end:]}"


def check_blanks(name: str, value: str) -> str:
    """Refuse a value that is blank or has blanks around it (a copy-paste slip), naming it."""
    if not value.strip():
        raise RedisConfigError(f"{name}={shown(value)} is blank: set it, or leave it empty")
    if value != value.strip():
        raise RedisConfigError(
            f"{name}={shown(value)} has blanks around it: remove them"
        )
    return value


def check_url(name: str, url: str) -> str:
    """A Redis URL redis-py can connect with, as given; else ``RedisConfigError``.

    redis-py itself reads ``redis://h:notaport`` and ``abc`` only when connecting, in the
    subscriber's background task, and silently drops a db that is not a number
    (``redis://h:6379/abc`` connects to db 0): each of those is refused here.
    """
    check_blanks(name, url)
    where = f"{name}={shown(redacted_url(url))}"
    if _SPACE_OR_CONTROL_RE.search(url):
        raise RedisConfigError(f"{where} holds blanks or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # a bad port or an unclosed IPv6 bracket
        reason = str(exc)[:100]
        raise RedisConfigError(
            f"{where} is not a Redis URL ({reason}): expected {_URL_FORMS}"
        ) from None
    scheme = parts.scheme.lower()
    if scheme not in ("redis", "rediss", "unix"):
        found = f"scheme {parts.scheme!r}" if parts.scheme else "no scheme"
        raise RedisConfigError(f"{where} is not a Redis URL ({found}): expected {_URL_FORMS}")
    if scheme == "unix":
        if not parts.path:
            raise RedisConfigError(f"{where} names no socket path: expected unix:///path")
    else:
        if not parts.hostname:
            raise RedisConfigError(f"{where} names no host: expected {_URL_FORMS}")
        if port == 0:
            raise RedisConfigError(f"{where}: port 0 is not in 1..65535")
        db = parts.path[1:] if parts.path.startswith("/") else parts.path
        if db and _DIGITS_RE.fullmatch(db) is None:
            raise RedisConfigError(
                f"{where}: the db {shown(db)} after the host is not an integer >= 0 "
                "(redis-py would silently use db 0)"
            )
    try:
        query_dbs = parse_qs(parts.query, strict_parsing=False).get("db", [])
    except ValueError:  # pragma: no cover - parse_qs is lenient
        query_dbs = []
    for db in query_dbs:
        if _DIGITS_RE.fullmatch(db) is None:
            raise RedisConfigError(f"{where}: db={shown(db)} is not an integer >= 0")
    return url


def check_host(name: str, host: str) -> str:
    """A host name, IPv4 or IPv6 address (brackets optional: removed); else an error."""
    check_blanks(name, host)
    if "://" in host:
        raise RedisConfigError(
            f"{name}={shown(redacted_url(host))} is a URL: set it as {URL_VAR}, or give the "
            "host name alone"
        )
    if _HOST_RE.fullmatch(host) is not None:
        return host
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        return str(ipaddress.IPv6Address(bare))
    except ValueError:
        pass
    hint = " (put the port in REDIS_PORT)" if host.count(":") == 1 else ""
    raise RedisConfigError(f"{name}={shown(host)} is not a host name or IP address{hint}")


def check_int(name: str, raw: str, minimum: int, maximum: int) -> int:
    """An integer as CONTRACT §2 writes one (sign, ASCII digits, blanks around) in range."""
    match = _INT_RE.fullmatch(raw)
    if match is None or len(match.group(1)) > 20:
        raise RedisConfigError(
            f"{name}={shown(raw)} is not an integer in {minimum}..{maximum}"
        )
    value = int(match.group(1))
    if not minimum <= value <= maximum:
        raise RedisConfigError(f"{name}={shown(raw)} is not in {minimum}..{maximum}")
    return value


def check_port(name: str, raw: str) -> int:
    return check_int(name, raw, 1, 65_535)


def check_db(name: str, raw: str) -> int:
    return check_int(name, raw, 0, MAX_DB)


def check_channel(name: str, channel: str) -> str:
    """A channel name without blanks or control characters; else an error.

    A stray tab or blank subscribes to a channel nobody publishes on: a deaf process.
    """
    check_blanks(name, channel)
    if _SPACE_OR_CONTROL_RE.search(channel):
        raise RedisConfigError(
            f"{name}={shown(channel)} holds blanks or control characters: no publisher "
            "sends on such a channel"
        )
    return channel
