"""Where the invalidation channel lives: snak's Redis variables, resolved to one endpoint."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._config import BACKOFF_CAP_VAR, env_int
from ._sentinel import (
    DIRECT_VARS,
    SENTINEL_MASTER_VAR,
    SENTINELS_VAR,
    SentinelAddress,
    SentinelEndpoint,
    master_from_keyword,
    sentinel_endpoint_from_env,
    sentinels_from_keyword,
)

DEFAULT_CHANNEL: Final = "agent_cfg_invalidate"
_DEFAULT_HOST: Final = "localhost"
_DEFAULT_PORT: Final = 6379
VERSION_SOURCE_TIMEOUT_VAR: Final = "AGENT_CFG_VERSION_SOURCE_TIMEOUT_MS"
RECONCILE_INTERVAL_VAR: Final = "AGENT_CFG_RECONCILE_INTERVAL_MS"


@final
@dataclass(frozen=True, slots=True, repr=False)
class RedisEndpoint:
    """Where to connect: a URL (``REDIS_URL``) or host/port/password/db, resolved once."""

    url: str | None = None
    host: str = _DEFAULT_HOST
    port: int = _DEFAULT_PORT
    password: str | None = None
    db: int = 0

    def __repr__(self) -> str:
        return f"RedisEndpoint({self.describe()!r})"  # never the password

    def describe(self) -> str:
        """The location for logs, without credentials."""
        if self.url is not None:
            parts = urlsplit(self.url)
            netloc = parts.hostname or ""
            if parts.port is not None:
                netloc = f"{netloc}:{parts.port}"
            return urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        return f"redis://{self.host}:{self.port}/{self.db}"


class InvalidationSettings(BaseSettings):
    """Redis connection and channel, from snak's environment variables.

    ``REDIS_URL`` wins over ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``.
    ``REDIS_SENTINELS``/``REDIS_SENTINEL_MASTER`` find the master through Sentinel instead
    (``target()``). With none of them set, ``configured`` is false and nothing connects.
    Fields hold raw text: a bad port or db is ignored with a WARNING when the endpoint is
    resolved (never at load).
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str | None = Field(default=None, validation_alias="REDIS_HOST")
    redis_port: str | None = Field(default=None, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    redis_db: str | None = Field(default=None, validation_alias="REDIS_DB")
    # Redis Sentinel (issue 17): the sentinels name the master; REDIS_PASSWORD/REDIS_DB apply to it.
    redis_sentinels: str | None = Field(default=None, validation_alias=SENTINELS_VAR)
    redis_sentinel_master: str | None = Field(default=None, validation_alias=SENTINEL_MASTER_VAR)
    channel: str = Field(default=DEFAULT_CHANNEL, validation_alias="AGENT_CFG_INVALIDATE_CHANNEL")
    # The version check (only with a version source); raw text, resolved by _versions.
    version_source_timeout_ms: str | None = Field(
        default=None, validation_alias=VERSION_SOURCE_TIMEOUT_VAR
    )
    reconcile_interval_ms: str | None = Field(default=None, validation_alias=RECONCILE_INTERVAL_VAR)
    backoff_cap_ms: str | None = Field(default=None, validation_alias=BACKOFF_CAP_VAR)

    @classmethod
    def for_url(cls, url: str, *, channel: str | None = None) -> InvalidationSettings:
        """Settings for this URL; the channel from ``channel``, else the environment."""
        # An explicit URL replaces Sentinel variables from the environment (keyword > environment).
        values: dict[str, Any] = {"REDIS_URL": url, SENTINELS_VAR: None, SENTINEL_MASTER_VAR: None}
        if channel is not None:
            values["AGENT_CFG_INVALIDATE_CHANNEL"] = channel
        return cls.model_validate(values)

    @classmethod
    def for_sentinels(
        cls,
        sentinels: str | Iterable[str | SentinelAddress],
        master: str,
        *,
        password: str | None = None,
        db: int | None = None,
        channel: str | None = None,
    ) -> InvalidationSettings:
        """Settings that find the master through Redis Sentinel.

        ``sentinels`` is ``"host:port,..."`` or an iterable of ``"host:port"`` / ``(host, port)``;
        ``master`` is the service name the sentinels monitor; ``password``/``db`` are the
        master's. A bad value is a ``ValueError``. These replace the environment's addresses
        (``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT`` are not read); what is left ``None``
        (``password``, ``db``, ``channel``) comes from the environment.
        """
        found = sentinels_from_keyword(sentinels)
        if db is not None and (isinstance(db, bool) or not isinstance(db, int) or db < 0):
            raise ValueError(f"db must be an integer >= 0, got {db!r}")
        values: dict[str, Any] = {
            SENTINELS_VAR: ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in found),
            SENTINEL_MASTER_VAR: master_from_keyword(master),
            **dict.fromkeys(DIRECT_VARS),
        }
        if db is not None:
            values["REDIS_DB"] = str(db)
        if password is not None:
            values["REDIS_PASSWORD"] = password
        if channel is not None:
            values["AGENT_CFG_INVALIDATE_CHANNEL"] = channel
        return cls.model_validate(values)

    @property
    def configured(self) -> bool:
        """Whether any Redis variable is set (else the embedded default: nothing connects)."""
        return any(
            v is not None
            for v in (
                self.redis_url,
                self.redis_host,
                self.redis_port,
                self.redis_password,
                self.redis_db,
                self.redis_sentinels,
                self.redis_sentinel_master,
            )
        )

    def target(self) -> RedisEndpoint | SentinelEndpoint:
        """Where to connect: a ``SentinelEndpoint`` when ``REDIS_SENTINELS`` or
        ``REDIS_SENTINEL_MASTER`` is set, else ``endpoint()``.

        Sentinel beside ``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT`` raises ``RedisConfigError``
        (a start-up error saying which to drop); every other fault is a WARNING (issue 17).
        """
        password = self.redis_password
        direct = (self.redis_url, self.redis_host, self.redis_port)
        sentinel = sentinel_endpoint_from_env(
            self.redis_sentinels,
            self.redis_sentinel_master,
            password=None if password is None else password.get_secret_value(),
            db=env_int("REDIS_DB", self.redis_db, 0, minimum=0, maximum=1_000_000),
            direct_vars=[n for n, raw in zip(DIRECT_VARS, direct, strict=True) if raw is not None],
        )
        return self.endpoint() if sentinel is None else sentinel

    def endpoint(self) -> RedisEndpoint:
        """Resolve the direct connection target; unparseable port/db fall back with a WARNING."""
        if self.redis_url is not None:
            return RedisEndpoint(url=self.redis_url.get_secret_value())
        password = self.redis_password
        return RedisEndpoint(
            host=(self.redis_host or "").strip() or _DEFAULT_HOST,
            port=env_int("REDIS_PORT", self.redis_port, _DEFAULT_PORT, minimum=1, maximum=65_535),
            password=None if password is None else password.get_secret_value(),
            db=env_int("REDIS_DB", self.redis_db, 0, minimum=0, maximum=1_000_000),
        )
