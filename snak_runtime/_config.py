"""Limits: guard ceilings, environment settings, and how they resolve. (STUB: being written)"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True, slots=True)
class GuardConfig:
    max_entries: int = 64
    max_ttl_ms: int = 300_000

    @classmethod
    def from_file(cls, path: str) -> GuardConfig:
        raise NotImplementedError


class RuntimeCacheSettings(BaseSettings):
    model_config = SettingsConfigDict(env_ignore_empty=True, extra="ignore")

    max_entries: str | None = Field(default=None, validation_alias="AGENT_RUNTIME_CACHE_MAX_ENTRIES")
    ttl_ms: str | None = Field(default=None, validation_alias="AGENT_RUNTIME_CACHE_TTL_MS")
    ttl_seconds: str | None = Field(default=None, validation_alias="AGENT_RUNTIME_CACHE_TTL_SECONDS")
    guards_config_path: str | None = Field(default=None, validation_alias="GUARDS_CONFIG_PATH")


@dataclass(frozen=True, slots=True)
class ResolvedLimits:
    max_entries: int
    default_ttl_ms: int
    max_entries_source: str
    default_ttl_source: str
    warnings: tuple[str, ...] = ()


def resolve_limits(guards: GuardConfig, settings: RuntimeCacheSettings) -> ResolvedLimits:
    return ResolvedLimits(guards.max_entries, guards.max_ttl_ms, "guard", "guard")


def load_guards(path: str | None) -> GuardConfig:
    return GuardConfig() if not path else GuardConfig.from_file(path)
