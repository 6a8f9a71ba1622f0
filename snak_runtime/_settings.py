"""``RuntimeCacheSettings``: the cache's options as typed pydantic settings, from the table.

Kept apart from ``_config`` so that ``import snak_runtime`` does not import pydantic-settings
(most of the package's import time): it loads when settings are first built or named.

Fields, their types and their variables come from ``_options`` (``CacheValues`` and
``CACHE_OPTIONS``). A keyword value is held to its row's rule and a bad one is a
``ValidationError`` naming the field; an environment value the row cannot parse is dropped,
and the resolver warns about it (naming the variable and the value) and falls through.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Mapping
from typing import Any

from pydantic import AliasGenerator, PrivateAttr, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from ._options import BY_NAME, CACHE_OPTIONS, CacheValues, Option, Rejection, read_environment

# The warnings of the settings being built (one list per construction, the env source fills it).
_Read = tuple[list[Rejection], dict[str, str]]
_REJECTED: contextvars.ContextVar[_Read | None] = contextvars.ContextVar(
    "snak_runtime_rejected_environment", default=None
)


class _ExactEnvSource(PydanticBaseSettingsSource):
    """Reads each option from its own variable only, only when no keyword gave it, and only
    values its row can parse (the others are dropped and reported).

    The stock env source, under populate_by_name, would also read a bare MAX_ENTRIES or TTL_MS
    left in the environment by unrelated software. Skipping the fields a keyword set (by name
    or by variable) makes "keyword beats environment" hold on every pydantic-settings release:
    merging both would leave the choice to key order, which changed in 2.12.
    """

    def __init__(self, settings_cls: type[BaseSettings], given: Mapping[str, Any]) -> None:
        super().__init__(settings_cls)
        self._given = set(given)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        option = BY_NAME[field_name]
        return os.environ.get(option.variable), option.variable, False

    def _keyword_gave(self, option: Option) -> bool:
        return option.name in self._given or option.variable in self._given

    def __call__(self) -> dict[str, Any]:
        found, rejected, texts = read_environment(CACHE_OPTIONS, skip=self._keyword_gave)
        collected = _REJECTED.get()
        if collected is not None:
            collected[0].extend(rejected)
            collected[1].update(texts)
        return found


class RuntimeCacheSettings(BaseSettings, CacheValues):
    """The cache's options: keyword, else environment variable, else ``None`` (fall through
    to the default). Typed: ``RuntimeCacheSettings(max_entries="32").max_entries == 32``."""

    model_config = SettingsConfigDict(
        env_ignore_empty=True,
        extra="ignore",
        populate_by_name=True,
        alias_generator=AliasGenerator(validation_alias=lambda name: BY_NAME[name].variable),
    )

    _rejected: tuple[Rejection, ...] = PrivateAttr(default=())
    _texts: dict[str, str] = PrivateAttr(default_factory=dict)

    def __init__(self, **values: Any) -> None:
        read: tuple[list[Rejection], dict[str, str]] = ([], {})
        token = _REJECTED.set(read)
        try:
            super().__init__(**values)
        finally:
            _REJECTED.reset(token)
        self._rejected = tuple(read[0])
        self._texts = read[1]

    @property
    def environment_texts(self) -> dict[str, str]:
        """The text of each variable a field was read from (a copy), for source labels."""
        return dict(self._texts)

    @property
    def rejected_environment(self) -> tuple[Rejection, ...]:
        """The warning (``"VAR='raw' ignored: reason"``, as a format and its arguments) for
        each variable dropped as unparseable; the resolver logs them."""
        return self._rejected

    @field_validator("*", mode="before")
    @classmethod
    def _by_the_table(cls, value: Any, info: ValidationInfo) -> Any:
        """CONTRACT §2's rule for a value given in code: ``True``, ``64.0`` and ``"64.0"`` are
        not integers; out of range is refused. Values from the environment arrive parsed."""
        if info.field_name is None:  # pragma: no cover - always set for field validators
            return value
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
        """Keyword arguments first, then the exact variables; no .env or secrets files."""
        given = getattr(init_settings, "init_kwargs", {})
        return init_settings, _ExactEnvSource(settings_cls, given)
