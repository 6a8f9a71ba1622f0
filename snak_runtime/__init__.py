"""snak_runtime: an in-process cache of live agent runtimes, as a dependency-injection plugin."""

from ._clock import Clock as Clock
from ._clock import MonotonicClock as MonotonicClock
from ._config import GuardConfig as GuardConfig
from ._config import RuntimeCacheSettings as RuntimeCacheSettings
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
    "MonotonicClock",
    "RemovalCause",
    "RuntimeCacheSettings",
    "RuntimeLease",
    "RuntimeManagerClosed",
    "RuntimeNotCached",
    "RuntimeSeed",
    "__version__",
)
