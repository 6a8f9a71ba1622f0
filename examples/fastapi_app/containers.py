"""The host application's container: it embeds ``RuntimeContainer`` as ``runtime``."""

from __future__ import annotations

from dependency_injector import providers
from dependency_injector.containers import DeclarativeContainer

from containers import RuntimeContainer

from .services import AgentDirectory, ChatService


class AppContainer(DeclarativeContainer):
    """Host services get the manager from ``runtime.manager``."""

    runtime = providers.Container(RuntimeContainer)
    directory = providers.Singleton(AgentDirectory)
    chat_service = providers.Factory(ChatService, manager=runtime.manager, directory=directory)
