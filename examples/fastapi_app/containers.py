"""The host application's container: it embeds ``RuntimeContainer`` as ``runtime``."""

from __future__ import annotations

from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer
from prometheus_client import CollectorRegistry

from snak_runtime.containers import RuntimeContainer

from .services import AgentDirectory, ChatService


class AppContainer(DeclarativeContainer):
    """Host services get the manager from ``runtime.manager``."""

    # The app's own registry (use prometheus_client.REGISTRY for process metrics too): the
    # runtime container registers its manager's collector there while resources run.
    runtime = providers.Container(
        RuntimeContainer, metrics_registry=providers.Singleton(CollectorRegistry)
    )
    directory = providers.Singleton(AgentDirectory)
    chat_service = providers.Factory(ChatService, manager=runtime.manager, directory=directory)
