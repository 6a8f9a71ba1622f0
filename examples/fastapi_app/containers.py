"""The host application's container: it embeds ``RuntimeContainer`` as ``runtime``."""

from __future__ import annotations

from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer
from prometheus_client import CollectorRegistry

from snak_runtime.containers import RuntimeContainer

from .services import AgentDirectory, ChatService, ConfigService, close_versions, make_versions


class AppContainer(DeclarativeContainer):
    """Host services get the manager from ``runtime.manager``."""

    # The app's own registry (use prometheus_client.REGISTRY for process metrics too): the
    # runtime container registers its manager's collector there while resources run.
    runtime = providers.Container(
        RuntimeContainer, metrics_registry=providers.Singleton(CollectorRegistry)
    )
    # Agent versions: a dict in one process, Redis (shared by the fleet) when REDIS_* is set.
    versions = providers.Singleton(make_versions, settings=runtime.invalidation_settings)
    versions_lifespan = providers.Resource(close_versions, versions=versions)
    directory = providers.Singleton(AgentDirectory, versions=versions)
    chat_service = providers.Factory(ChatService, manager=runtime.manager, directory=directory)
    config_service = providers.Factory(
        ConfigService, manager=runtime.manager, directory=directory
    )
