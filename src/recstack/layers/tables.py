"""Fixed-shape lookup tables kept as buffers (per-id feature rows, stored histories): filled once
after preprocessing, saved with the module's state, never trained."""

from __future__ import annotations

import torch
from torch import nn

from ..core.errors import ShapeError

__all__ = ["fill_table"]


def fill_table(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Copy ``value`` into ``module``'s buffer ``name`` in place (cast to the buffer's dtype);
    a ShapeError naming the buffer when the shapes differ (a table of another vocabulary)."""
    current = getattr(module, name)
    if tuple(value.shape) != tuple(current.shape):
        raise ShapeError(f"{name} must have shape {tuple(current.shape)}; got {tuple(value.shape)}.")
    current.copy_(value.to(current.dtype))
