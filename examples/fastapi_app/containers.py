"""The host application's container: it embeds ``RuntimeContainer`` as ``runtime``."""

from __future__ import annotations

from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer
from prometheus_client import CollectorRegistry

from snak_runtime.containers import RuntimeContainer
from snak_runtime.invalidation import InvalidationSettings

from .services import (
    AgentDirectory,
    ConfigService,
    close_redis,
    make_redis,
    make_versions,
)


class AppContainer(DeclarativeContainer):
    """Host services get the manager from ``runtime.manager`` (constructor injection)."""

    invalidation_settings = providers.Singleton(InvalidationSettings)
    # One Redis client (None with no REDIS_* variable) for the app's version store and the
    # runtime's subscriber. Closed at shutdown, after the runtime's resources stopped
    # (runtime_lifespan stops those first); it reconnects if the app starts again.
    redis = providers.Singleton(make_redis, settings=invalidation_settings)
    redis_lifespan = providers.Resource(close_redis, client=redis)
    runtime = providers.Container(
        RuntimeContainer,
        invalidation_settings=invalidation_settings,
        invalidation_client=redis,
        # The app's own registry (use prometheus_client.REGISTRY for process metrics too):
        # the runtime registers its manager's collector there while resources run.
        metrics_registry=providers.Singleton(CollectorRegistry),
    )
    # Agent versions: a dict in one process, Redis (shared by the fleet) when REDIS_* is set.
    versions = providers.Singleton(
        make_versions, client=redis, channel=invalidation_settings.provided.channel
    )
    directory = providers.Singleton(AgentDirectory, versions=versions)
    # The directory's builder as a provider: what a route's lease calls on a miss.
    build_agent = directory.provided.build
    config_service = providers.Factory(
        ConfigService, manager=runtime.manager, directory=directory
    )
