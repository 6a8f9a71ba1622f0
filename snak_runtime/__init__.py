"""snak_runtime: an in-process cache of live agent runtimes, as a dependency-injection plugin."""

import typing as _typing

from ._clock import Clock as Clock
from ._clock import MonotonicClock as MonotonicClock
from ._config import GuardConfig as GuardConfig
from ._config import GuardConfigError as GuardConfigError
from ._disposal import DefaultDisposer as DefaultDisposer
from ._disposal import Disposer as Disposer
from ._errors import RuntimeManagerClosed as RuntimeManagerClosed
from ._errors import RuntimeNotCached as RuntimeNotCached
from ._info import EntryInfo as EntryInfo
from ._manager import AgentRuntimeManager as AgentRuntimeManager
from ._seed import AcquiredRuntime as AcquiredRuntime
from ._seed import RuntimeLease as RuntimeLease
from ._seed import RuntimeSeed as RuntimeSeed
from ._stats import CacheStats as CacheStats
from ._stats import RemovalCause as RemovalCause

if _typing.TYPE_CHECKING:
    from ._settings import RuntimeCacheSettings as RuntimeCacheSettings

__version__ = "0.1.0"

__all__ = (
    "AcquiredRuntime",
    "AgentRuntimeManager",
    "CacheStats",
    "Clock",
    "DefaultDisposer",
    "Disposer",
    "EntryInfo",
    "GuardConfig",
    "GuardConfigError",
    "MonotonicClock",
    "RemovalCause",
    "RuntimeCacheSettings",
    "RuntimeLease",
    "RuntimeManagerClosed",
    "RuntimeNotCached",
    "RuntimeSeed",
    "__version__",
)


def __getattr__(name: str) -> _typing.Any:
    # RuntimeCacheSettings loads pydantic-settings, most of this package's import time: it is
    # imported on first use, so that a manager built without settings never needs it.
    if name == "RuntimeCacheSettings":
        from ._settings import RuntimeCacheSettings

        globals()[name] = RuntimeCacheSettings
        return RuntimeCacheSettings
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
