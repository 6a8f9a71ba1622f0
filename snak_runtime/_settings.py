"""``RuntimeCacheSettings``: the cache's environment variables as pydantic settings.

Kept apart from ``_config`` so that ``import snak_runtime`` does not import pydantic-settings
(most of the package's import time): it loads when settings are first built or named.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from pydantic import Field
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._config import (
    BUILD_TIMEOUT_VAR,
    DISPOSE_TIMEOUT_VAR,
    EVICTION_VAR,
    GUARDS_PATH_VAR,
    IDLE_TTL_MS_VAR,
    MAX_ENTRIES_PER_USER_VAR,
    MAX_ENTRIES_VAR,
    REFRESH_AHEAD_VAR,
    STALE_WHILE_REBUILDING_VAR,
    SWEEP_INTERVAL_VAR,
    TTL_JITTER_VAR,
    TTL_MS_VAR,
    TTL_SECONDS_VAR,
)


class _ExactEnvSource(PydanticBaseSettingsSource):
    """Reads each field from its own variable only, and only when no keyword gave it.

    The stock env source, under populate_by_name, would also read a bare MAX_ENTRIES or TTL_MS
    left in the environment by unrelated software. Skipping the fields a keyword set (by name
    or by alias) makes "keyword beats environment" hold on every pydantic-settings release:
    merging both would leave the choice to key order, which changed in 2.12.
    """

    def __init__(self, settings_cls: type[BaseSettings], given: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._given = set(given)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        alias = field.validation_alias
        name = alias if isinstance(alias, str) else field_name
        if field_name in self._given or name in self._given:
            return None, name, False
        return os.environ.get(name), name, False

    def __call__(self) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for field_name, field_info in self.settings_cls.model_fields.items():
            value, name, _ = self.get_field_value(field_info, field_name)
            if value:  # env_ignore_empty: an empty variable counts as unset
                found[name] = value
        return found


class RuntimeCacheSettings(BaseSettings):
    """The cache's environment variables, kept as raw text so loading never fails."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        coerce_numbers_to_str=True,
    )

    max_entries: str | None = Field(default=None, validation_alias=MAX_ENTRIES_VAR)
    ttl_ms: str | None = Field(default=None, validation_alias=TTL_MS_VAR)
    ttl_seconds: str | None = Field(default=None, validation_alias=TTL_SECONDS_VAR)
    guards_config_path: str | None = Field(default=None, validation_alias=GUARDS_PATH_VAR)
    build_timeout_ms: str | None = Field(default=None, validation_alias=BUILD_TIMEOUT_VAR)
    dispose_timeout_ms: str | None = Field(default=None, validation_alias=DISPOSE_TIMEOUT_VAR)
    sweep_interval_ms: str | None = Field(default=None, validation_alias=SWEEP_INTERVAL_VAR)
    refresh_ahead_ms: str | None = Field(default=None, validation_alias=REFRESH_AHEAD_VAR)
    stale_while_rebuilding: str | None = Field(
        default=None, validation_alias=STALE_WHILE_REBUILDING_VAR
    )
    idle_ttl_ms: str | None = Field(default=None, validation_alias=IDLE_TTL_MS_VAR)
    ttl_jitter: str | None = Field(default=None, validation_alias=TTL_JITTER_VAR)
    eviction: str | None = Field(default=None, validation_alias=EVICTION_VAR)
    max_entries_per_user: str | None = Field(
        default=None, validation_alias=MAX_ENTRIES_PER_USER_VAR
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Keyword arguments first, then the exact variables; no .env or secrets files."""
        given = getattr(init_settings, "init_kwargs", {})
        return init_settings, _ExactEnvSource(settings_cls, given)
