"""Where the invalidation channel lives: snak's Redis variables, resolved to one endpoint."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from .._config import BACKOFF_CAP_VAR, env_int

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
    With none of them set, ``configured`` is false and nothing connects. Fields hold raw text:
    a bad port or db is ignored with a WARNING when the endpoint is resolved (never at load).
    """

    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    redis_url: SecretStr | None = Field(default=None, validation_alias="REDIS_URL")
    redis_host: str | None = Field(default=None, validation_alias="REDIS_HOST")
    redis_port: str | None = Field(default=None, validation_alias="REDIS_PORT")
    redis_password: SecretStr | None = Field(default=None, validation_alias="REDIS_PASSWORD")
    redis_db: str | None = Field(default=None, validation_alias="REDIS_DB")
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
        values: dict[str, Any] = {"REDIS_URL": url}
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
            )
        )

    def endpoint(self) -> RedisEndpoint:
        """Resolve the connection target; unparseable port/db fall back with a WARNING."""
        if self.redis_url is not None:
            return RedisEndpoint(url=self.redis_url.get_secret_value())
        password = self.redis_password
        return RedisEndpoint(
            host=(self.redis_host or "").strip() or _DEFAULT_HOST,
            port=env_int("REDIS_PORT", self.redis_port, _DEFAULT_PORT, minimum=1, maximum=65_535),
            password=None if password is None else password.get_secret_value(),
            db=env_int("REDIS_DB", self.redis_db, 0, minimum=0, maximum=1_000_000),
        )
