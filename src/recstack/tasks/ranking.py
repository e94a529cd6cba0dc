"""The Ranking task: a pointwise loss between labels and predictions (TFRS semantics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from ..core.errors import ShapeError
from ..metrics.base import Metric
from .base import Task


def mean_squared_error(labels: torch.Tensor, predictions: torch.Tensor,
                       sample_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Keras MeanSquaredError with sum_over_batch_size: sum_i w_i (y_i - p_i)^2 / n."""
    err = (labels - predictions) ** 2
    if sample_weight is not None:
        err = err * sample_weight.reshape(err.shape)
    return err.sum() / max(err.numel(), 1)


class Ranking(Task):
    """Pointwise ranking/rating loss with metrics, like ``tfrs.tasks.Ranking``.

    Args:
        loss: ``loss(labels, predictions, sample_weight) -> scalar``; default MSE
            averaged over the batch (Keras's default reduction for this task).
        metrics: metrics updated with ``(labels, predictions, sample_weight)``,
            e.g. :class:`recstack.metrics.RootMeanSquaredError`.
    """

    def __init__(self, loss: Callable[..., torch.Tensor] | None = None,
                 metrics: Metric | Iterable[Metric] | None = None, name: str = "ranking"):
        super().__init__(metrics)
        self.loss_fn = loss or mean_squared_error
        self.name = name

    def forward(self, labels: torch.Tensor, predictions: torch.Tensor,
                sample_weight: torch.Tensor | None = None, compute_metrics: bool = True) -> torch.Tensor:
        """Loss for one batch. ``labels`` and ``predictions`` are [n] or [n, 1]."""
        predictions = predictions.reshape(-1)
        labels = labels.reshape(-1).to(predictions.dtype)
        if labels.shape != predictions.shape:
            raise ShapeError(
                f"labels have {labels.shape[0]} values but predictions {predictions.shape[0]}.")
        loss = self.loss_fn(labels, predictions, sample_weight)
        if compute_metrics:
            for metric in self._metrics:
                metric.update_state(labels, predictions, sample_weight)
        return loss
