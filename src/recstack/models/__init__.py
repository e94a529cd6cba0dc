"""Models: the Model base class and ready-made architectures."""

from .base import Model

__all__ = ["Model"]
