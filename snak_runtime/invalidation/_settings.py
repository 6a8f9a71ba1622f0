"""Where the invalidation channel lives: snak's Redis variables, resolved to one endpoint."""

from __future__ import annotations

import contextvars
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, final
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, PrivateAttr, SecretStr, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .._config import BACKOFF_CAP_VAR
from .._options import BY_NAME, Rejection, read_environment
from ._redis_config import (
    CHANNEL_VAR,
    DB_VAR,
    HOST_VAR,
    PORT_VAR,
    URL_VAR,
    check_channel,
    check_db,
    check_host,
    check_port,
    check_url,
)
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
GAP_TOLERANCE_MESSAGES_VAR: Final = "AGENT_CFG_GAP_TOLERANCE_MESSAGES"
GAP_TOLERANCE_MS_VAR: Final = "AGENT_CFG_GAP_TOLERANCE_MS"


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


_TIMINGS: Final = (
    "version_source_timeout_ms",
    "reconcile_interval_ms",
    "backoff_cap_ms",
    "gap_tolerance_messages",
    "gap_tolerance_ms",
)
_REJECTED: contextvars.ContextVar[list[Rejection] | None] = contextvars.ContextVar(
    "snak_runtime_rejected_fleet_environment", default=None
)


class _TimingsParsed(PydanticBaseSettingsSource):
    """The stock environment source, with each timing variable parsed by its row of the table:
    an unparseable one is dropped (the resolver warns, naming it and its value)."""

    def __init__(self, settings_cls: type[BaseSettings], env: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self._env = env

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._env.get_field_value(field, field_name)  # pragma: no cover - unused

    def __call__(self) -> dict[str, Any]:
        found = self._env()
        for name in _TIMINGS:
            option = BY_NAME[name]
            key = option.variable if option.variable in found else name
            raw = found.get(key)
            if not isinstance(raw, str):
                continue
            parsed, rejected, _ = read_environment((option,), {option.variable: raw})
            collected = _REJECTED.get()
            if collected is not None:
                collected.extend(rejected)
            if name in parsed:
                found[key] = parsed[name]
            else:
                del found[key]
        return found


class InvalidationSettings(BaseSettings):
    """Redis connection and channel, from snak's environment variables.

    ``REDIS_URL`` wins over ``REDIS_HOST``/``REDIS_PORT``/``REDIS_PASSWORD``/``REDIS_DB``.
    ``REDIS_SENTINELS``/``REDIS_SENTINEL_MASTER`` find the master through Sentinel instead
    (``target()``). With none of them set, ``configured`` is false and nothing connects.
    The Redis fields hold their text (the timings are typed), checked when the target is
    resolved (``target()``, which the subscriber and the publisher call when they are
    built): a malformed value raises
    ``RedisConfigError`` naming the variable. An empty variable is unset.
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
    channel: str = Field(default=DEFAULT_CHANNEL, validation_alias=CHANNEL_VAR)
    # The version check (only with a version source) and the reconnect backoff: typed by their
    # rows of the table; resolved (keyword > these > default, capped) by _versions/_subscriber.
    version_source_timeout_ms: int | None = Field(
        default=None, validation_alias=VERSION_SOURCE_TIMEOUT_VAR
    )
    reconcile_interval_ms: int | None = Field(default=None, validation_alias=RECONCILE_INTERVAL_VAR)
    backoff_cap_ms: int | None = Field(default=None, validation_alias=BACKOFF_CAP_VAR)
    # Loss detection from outbox_id gaps (only with a version source); resolved by _versions.
    gap_tolerance_messages: int | None = Field(
        default=None, validation_alias=GAP_TOLERANCE_MESSAGES_VAR
    )
    gap_tolerance_ms: int | None = Field(default=None, validation_alias=GAP_TOLERANCE_MS_VAR)

    _rejected: tuple[Rejection, ...] = PrivateAttr(default=())

    def __init__(self, **values: Any) -> None:
        read: list[Rejection] = []
        token = _REJECTED.set(read)
        try:
            super().__init__(**values)
        finally:
            _REJECTED.reset(token)
        self._rejected = tuple(read)

    @property
    def rejected_environment(self) -> tuple[Rejection, ...]:
        """The warning for each timing variable dropped as unparseable (as a format and its
        arguments); the resolver logs them and uses the default."""
        return self._rejected

    @field_validator(*_TIMINGS, mode="before")
    @classmethod
    def _timing_by_the_table(cls, value: Any, info: ValidationInfo) -> Any:
        """CONTRACT §2's integer rule for a timing given in code: a ValidationError naming it."""
        assert info.field_name is not None
        return BY_NAME[info.field_name].check_keyword(value)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments, then the variables, each timing parsed by its row (a bad one
        dropped and reported, never raised); no .env or secrets files."""
        return init_settings, _TimingsParsed(settings_cls, env_settings)

    @field_validator(
        "redis_url", "redis_host", "redis_port", "redis_password", "redis_db",
        "redis_sentinels", "redis_sentinel_master", mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: Any) -> Any:
        """An empty value is unset, given in code as from the environment."""
        return None if value == "" else value

    @field_validator("channel", mode="before")
    @classmethod
    def _empty_is_default(cls, value: Any) -> Any:
        return DEFAULT_CHANNEL if value == "" or value is None else value

    @classmethod
    def for_url(cls, url: str, *, channel: str | None = None) -> InvalidationSettings:
        """Settings for this URL; the channel from ``channel``, else the environment.

        A malformed ``url`` or ``channel`` raises ``RedisConfigError`` naming the keyword.
        """
        if not isinstance(url, str):
            raise TypeError(f"url must be a string, got {type(url).__name__}")
        check_url("url", url)
        # An explicit URL replaces Sentinel variables from the environment (keyword > environment).
        values: dict[str, Any] = {URL_VAR: url, SENTINELS_VAR: None, SENTINEL_MASTER_VAR: None}
        if channel is not None:
            values[CHANNEL_VAR] = check_channel("channel", channel)
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
            values[CHANNEL_VAR] = check_channel("channel", channel)
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

    def checked_channel(self) -> str:
        """The channel, or ``RedisConfigError`` when ``AGENT_CFG_INVALIDATE_CHANNEL`` is
        malformed (blank, padded, holding a blank or a control character)."""
        return check_channel(CHANNEL_VAR, self.channel)

    def target(self) -> RedisEndpoint | SentinelEndpoint:
        """Where to connect: a ``SentinelEndpoint`` when ``REDIS_SENTINELS`` or
        ``REDIS_SENTINEL_MASTER`` is set, else ``endpoint()``.

        Every variable that is set is checked, the channel too: a malformed one, or Sentinel
        beside ``REDIS_URL``/``REDIS_HOST``/``REDIS_PORT``, raises ``RedisConfigError`` naming
        it. A well-formed target that does not answer is the subscriber's to warn about.
        """
        self.checked_channel()
        direct = self.endpoint()
        password = self.redis_password
        sentinel = sentinel_endpoint_from_env(
            self.redis_sentinels,
            self.redis_sentinel_master,
            password=None if password is None else password.get_secret_value(),
            db=direct.db,
            direct_vars=[
                n
                for n, raw in zip(
                    DIRECT_VARS, (self.redis_url, self.redis_host, self.redis_port), strict=True
                )
                if raw is not None
            ],
        )
        return direct if sentinel is None else sentinel

    def endpoint(self) -> RedisEndpoint:
        """The direct connection target; a malformed ``REDIS_URL``, ``REDIS_HOST``,
        ``REDIS_PORT`` or ``REDIS_DB`` raises ``RedisConfigError`` naming it (each that is set
        is checked, even beside a ``REDIS_URL`` that wins over it)."""
        # issue 23: a bad port or db used to fall back to the default with a
        # WARNING, and a bad URL failed only in the background task: each is now a start-up
        # error, since a process connected to the wrong Redis, or to none, hears nothing.
        url = None if self.redis_url is None else check_url(
            URL_VAR, self.redis_url.get_secret_value()
        )
        host = _DEFAULT_HOST if self.redis_host is None else check_host(HOST_VAR, self.redis_host)
        port = _DEFAULT_PORT if self.redis_port is None else check_port(PORT_VAR, self.redis_port)
        db = 0 if self.redis_db is None else check_db(DB_VAR, self.redis_db)
        password = self.redis_password
        if url is not None:
            return RedisEndpoint(url=url)
        return RedisEndpoint(
            host=host,
            port=port,
            password=None if password is None else password.get_secret_value(),
            db=db,
        )
