"""Redis Sentinel settings: the sentinel list, the master's service name, and their rules.

Pure: no redis import, no I/O. A malformed value (a blank or padded list or entry, an entry
that is not ``host:port``, a blank or unusable master name, one of the two without the other)
is a ``RedisConfigError`` at start naming the variable (CONTRACT §12: a fleet member deaf to
invalidations is worse than one that does not start); keyword values raise ``ValueError``.
With Sentinel the sentinels name the master, so ``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT``
have no meaning beside them, and setting both is a start-up error that says which to drop.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, final

SENTINELS_VAR: Final = "REDIS_SENTINELS"
SENTINEL_MASTER_VAR: Final = "REDIS_SENTINEL_MASTER"
DEFAULT_SENTINEL_PORT: Final = 26379
# The variables that point at one server directly; Sentinel replaces them.
DIRECT_VARS: Final = ("REDIS_URL", "REDIS_HOST", "REDIS_PORT")

SentinelAddress = tuple[str, int]

# A host name or IPv4 address (docker-style underscores allowed), or a bracketed IPv6 address;
# then an optional ":port". Anything else (a scheme, credentials, a path, blanks) is rejected.
_ENTRY_RE: Final = re.compile(
    r"(?:\[(?P<v6>[^\]]+)\]|(?P<host>[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?))"
    r"(?::(?P<port>[0-9]+))?",
    re.ASCII,
)
_BARE_V6_RE: Final = re.compile(r"[0-9A-Fa-f:.]+", re.ASCII)
_MASTER_RE: Final = re.compile(r"[^\s\x00-\x1f\x7f]+")


class RedisConfigError(ValueError):
    """Raised at start-up when a Redis variable is malformed, or the variables contradict each
    other; names the variable (and says which to drop)."""


def parse_sentinel_address(entry: str) -> SentinelAddress:
    """``host``, ``host:port`` or ``[ipv6]:port`` as ``(host, port)``; port 26379 if omitted.

    Raises ``ValueError`` saying what is wrong with the entry.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry")
    match = _ENTRY_RE.fullmatch(text)
    if match is None:
        if text.count(":") > 1 and _BARE_V6_RE.fullmatch(text):
            raise ValueError("an IPv6 address must be in brackets: [address]:port")
        raise ValueError("not host:port")
    host = match["host"]
    if match["v6"] is not None:
        try:
            host = str(ipaddress.IPv6Address(match["v6"]))
        except ValueError:
            raise ValueError(f"{match['v6']!r} is not an IPv6 address") from None
    port = DEFAULT_SENTINEL_PORT if match["port"] is None else int(match["port"])
    if not 1 <= port <= 65_535:
        raise ValueError(f"port {port} is not in 1..65535")
    return host, port


def _dedupe(addresses: Iterable[SentinelAddress]) -> tuple[SentinelAddress, ...]:
    return tuple(dict.fromkeys(addresses))


def _shown(value: str) -> str:
    return repr(value) if len(value) <= 80 else f"{value[:80]!r}... ({len(value)} characters)"


def sentinels_from_env(raw: str | None) -> tuple[SentinelAddress, ...]:
    """The entries of ``REDIS_SENTINELS`` (comma separated), in order, without repeats.

    ``()`` when unset or empty. A blank value, an entry with blanks around it or only blanks,
    or one that is not ``host``, ``host:port`` or ``[ipv6]:port`` raises ``RedisConfigError``
    naming the variable and the entry. An empty entry (a trailing comma) is skipped.
    """
    # issue 23: a bad entry was a WARNING and skipped; a list the operator
    # mistyped now fails start-up, as every malformed fleet setting does.
    if not raw:
        return ()
    if not raw.strip():
        raise RedisConfigError(f"{SENTINELS_VAR}={_shown(raw)} is blank: set it, or leave it empty")
    found: list[SentinelAddress] = []
    for entry in raw.split(","):
        if not entry:
            continue
        if entry != entry.strip():
            raise RedisConfigError(
                f"{SENTINELS_VAR} entry {_shown(entry)} has blanks around it: write "
                "host:port,host:port without blanks"
            )
        try:
            found.append(parse_sentinel_address(entry))
        except ValueError as exc:
            raise RedisConfigError(f"{SENTINELS_VAR} entry {_shown(entry)}: {exc}") from None
    if not found:
        raise RedisConfigError(f"{SENTINELS_VAR}={_shown(raw)} names no host:port entry")
    return _dedupe(found)


def sentinels_from_keyword(
    value: str | Iterable[str | SentinelAddress],
) -> tuple[SentinelAddress, ...]:
    """Strict form for keyword arguments: a ``"host:port,..."`` string or an iterable of
    ``"host:port"`` strings / ``(host, port)`` pairs. Any bad entry, or none at all, is a
    ``ValueError`` naming ``sentinels`` and the entry."""
    items: Iterable[str | SentinelAddress] = value.split(",") if isinstance(value, str) else value
    found: list[SentinelAddress] = []
    for item in items:
        if isinstance(item, str):
            if item != item.strip():
                raise ValueError(f"sentinels entry {item!r}: blanks around it")
            try:
                found.append(parse_sentinel_address(item))
            except ValueError as exc:
                raise ValueError(f"sentinels entry {item!r}: {exc}") from None
            continue
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or isinstance(item[1], bool)
            or not isinstance(item[1], int)
        ):
            raise ValueError(f"sentinels entry {item!r}: expected 'host:port' or (host, port)")
        host, port = item
        found.append(
            parse_sentinel_address(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
        )
    if not found:
        raise ValueError("sentinels must name at least one host:port")
    return _dedupe(found)


def master_from_env(raw: str | None) -> str | None:
    """``REDIS_SENTINEL_MASTER``; ``None`` when unset or empty. A blank name, or one with
    blanks or control characters (no sentinel could monitor it) raises ``RedisConfigError``."""
    if not raw:
        return None
    if _MASTER_RE.fullmatch(raw) is None:
        raise RedisConfigError(
            f"{SENTINEL_MASTER_VAR}={_shown(raw)} is not a master name: one word, without "
            "blanks or control characters"
        )
    return raw


def master_from_keyword(value: str) -> str:
    """Strict form of ``master_from_env``: a bad name is a ``ValueError``."""
    if not isinstance(value, str) or _MASTER_RE.fullmatch(value) is None:
        raise ValueError(
            f"master must be a non-empty name without blanks or control characters, got {value!r}"
        )
    return value


def check_not_both(sentinel_vars: Iterable[str], direct_vars: Iterable[str]) -> None:
    """Raise ``RedisConfigError`` when Sentinel and a direct address are both configured.

    Arguments are the names of the variables that are set. The message names both sides and
    says which to drop: with Sentinel, ``REDIS_PASSWORD``/``REDIS_DB`` still apply (to the
    master), but a fixed address would be silently ignored, or silently win.
    """
    sentinel, direct = list(sentinel_vars), list(direct_vars)
    if not sentinel or not direct:
        return
    raise RedisConfigError(
        f"{' and '.join(sentinel)} and {' and '.join(direct)} are both set: drop "
        f"{' and '.join(direct)} to find the master through Sentinel (REDIS_PASSWORD and "
        f"REDIS_DB still apply to it), or drop {' and '.join(sentinel)} to connect to one "
        "server directly"
    )


@final
@dataclass(frozen=True, slots=True, repr=False)
class SentinelEndpoint:
    """Where to connect through Sentinel: the sentinels, the master's service name, and the
    password and db of the master (the sentinels themselves are asked without a password).

    ``master`` is ``None`` and ``sentinels`` empty when the configuration could not supply
    them; the subscriber then keeps retrying (and warning once), as for an unreachable Redis.
    """

    sentinels: tuple[SentinelAddress, ...]
    master: str | None
    password: str | None = None
    db: int = 0

    def __repr__(self) -> str:
        return f"SentinelEndpoint({self.describe()!r})"  # never the password

    @property
    def usable(self) -> bool:
        return bool(self.sentinels) and self.master is not None

    def describe(self) -> str:
        """The location for logs, without credentials: ``sentinel://h:p,h:p/master/db``."""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.sentinels)
        return f"sentinel://{hosts}/{self.master or '?'}/{self.db}"

    def problem(self) -> str | None:
        """Why this endpoint cannot work as configured (for the WARNING), or ``None``."""
        if not self.sentinels:
            return f"{SENTINELS_VAR} names no usable sentinel"
        if self.master is None:
            return f"{SENTINEL_MASTER_VAR} is not set: the sentinels need the master's name"
        return None


def sentinel_endpoint_from_env(
    raw_sentinels: str | None,
    raw_master: str | None,
    *,
    password: str | None,
    db: int,
    direct_vars: Iterable[str] = (),
) -> SentinelEndpoint | None:
    """Resolve ``REDIS_SENTINELS``/``REDIS_SENTINEL_MASTER``; ``None`` when neither is set
    (an empty variable is unset).

    ``direct_vars`` are the names of the direct-address variables that are set: any of them
    beside a Sentinel variable raises ``RedisConfigError``, as does a malformed value or one
    of the two without the other (Sentinel needs both: the service would never hear an
    invalidation). A well-formed configuration whose sentinels do not answer is the
    subscriber's to warn about and retry, as for an unreachable Redis.
    """
    present = [
        name
        for name, raw in ((SENTINELS_VAR, raw_sentinels), (SENTINEL_MASTER_VAR, raw_master))
        if raw
    ]
    if not present:
        return None
    check_not_both(present, direct_vars)
    endpoint = SentinelEndpoint(
        sentinels=sentinels_from_env(raw_sentinels),
        master=master_from_env(raw_master),
        password=password,
        db=db,
    )
    for name in (SENTINELS_VAR, SENTINEL_MASTER_VAR):
        if name not in present:
            raise RedisConfigError(
                f"{present[0]} is set but {name} is not: Sentinel needs both (set {name}, or "
                f"drop {present[0]})"
            )
    return endpoint
