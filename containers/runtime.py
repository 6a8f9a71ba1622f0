"""``RuntimeContainer``: settings, guards, clock, disposer and one manager, as providers."""

from __future__ import annotations

from typing import Any

from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer

from snak_runtime import AgentRuntimeManager, DefaultDisposer, MonotonicClock, RuntimeCacheSettings
from snak_runtime._config import load_guards
from snak_runtime._options import CACHE_OPTIONS
from snak_runtime.invalidation import InvalidationSettings

from .resources import prometheus_resource, run_invalidation, run_manager

# The manager's keyword options, a provider each (``Object(None)``: not given).
_MANAGER_OPTIONS: dict[str, providers.Provider[Any]] = {
    option.container: providers.Object(None)
    for option in CACHE_OPTIONS
    if option.keyword is not None and option.container == option.keyword
}


class RuntimeContainer(DeclarativeContainer):
    """One agent runtime manager and what it is built from; override any provider in tests.

    ``await container.init_resources()`` starts the manager (expiry sweeper running);
    ``await container.shutdown_resources()`` closes it, disposing every cached agent. The next
    ``init_resources()`` starts a fresh manager.
    """

    settings = providers.Singleton(RuntimeCacheSettings)
    guards = providers.Singleton(load_guards, path=settings.provided.guards_config_path)
    clock = providers.Singleton(MonotonicClock)
    disposer = providers.Singleton(DefaultDisposer)
    # One provider per manager option of the table (``snak_runtime._options``), named by its
    # container path: None leaves each to its variable, then its default (docs/configuration.md).
    locals().update(_MANAGER_OPTIONS)
    manager: providers.Singleton[AgentRuntimeManager[Any, Any]] = providers.Singleton(
        AgentRuntimeManager,
        guards=guards,
        settings=settings,
        clock=clock,
        disposer=disposer,
        **_MANAGER_OPTIONS,
    )
    lifespan = providers.Resource(run_manager, manager=manager, provider=manager.provider)

    # Redis subscriber (CONTRACT §11): depends on `lifespan`, so it starts after the manager and
    # stops before it. With no REDIS_* variable it yields None and nothing connects (the embedded
    # default: callers invoke `manager.on_invalidate()` directly).
    invalidation_settings = providers.Singleton(InvalidationSettings)
    # Versioned resync and reconciliation (README "Run a fleet"): override with your
    # `async (agent_ids) -> {agent_id: version}`; None evicts everything after a reconnect.
    version_source: providers.Object[Any] = providers.Object(None)
    invalidation_backoff_cap_ms: providers.Object[int | None] = providers.Object(None)
    # A redis.asyncio client of the application's for the subscriber (used, never closed by
    # it): None builds the subscriber's own client from the REDIS_* variables.
    invalidation_client: providers.Object[Any] = providers.Object(None)
    invalidation = providers.Resource(
        run_invalidation,
        manager=lifespan,
        settings=invalidation_settings,
        version_source=version_source,
        backoff_cap_ms=invalidation_backoff_cap_ms,
        client=invalidation_client,
    )

    # Prometheus export (extra `prometheus`): override `metrics_registry` with a
    # `CollectorRegistry` (or `prometheus_client.REGISTRY`) and the manager's collector is
    # registered while resources run. Left None: nothing is imported or registered.
    metrics_registry: providers.Object[Any] = providers.Object(None)
    metrics = providers.Resource(prometheus_resource, manager=manager, registry=metrics_registry)
