"""STUB: the manager is being written."""

from typing import Generic, TypeVar

R = TypeVar("R")
A = TypeVar("A")


class AgentRuntimeManager(Generic[R, A]):
    pass
