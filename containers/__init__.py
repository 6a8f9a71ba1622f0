"""The dependency-injection container that provides snak_runtime's manager."""

from .runtime import RuntimeContainer as RuntimeContainer

__all__ = ("RuntimeContainer",)
