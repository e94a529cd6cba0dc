"""What the training loop needs of a model, as a structural type.

The loop, the callbacks and the numeric guards only call these members, so they
annotate with :class:`Trainable` instead of importing :class:`recstack.Model`:
``training.model`` imports the loop, and the loop must not import it back (no
import cycles, not even for type checking).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch
from torch import nn

from ..core.columns import Batch
from ..metrics.base import Metric
from .history import History


class Trainable(Protocol):
    """A :class:`recstack.Model` as the loop sees it (an ``nn.Module`` with a loss and metrics)."""

    optimizer: torch.optim.Optimizer | None
    history: History | None
    stop_training: bool
    training: bool

    @property
    def metrics(self) -> list[Metric]: ...

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor: ...

    def regularized_modules(self) -> Iterable[nn.Module]: ...

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]: ...

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, nn.Parameter]]: ...

    def buffers(self, recurse: bool = True) -> Iterator[torch.Tensor]: ...

    def modules(self) -> Iterator[nn.Module]: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
