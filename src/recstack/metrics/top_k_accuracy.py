"""Keras-style TopKCategoricalAccuracy on in-batch (labels, scores)."""

from __future__ import annotations

import torch

from .base import Metric


class TopKCategoricalAccuracy(Metric):
    """Fraction of rows whose labelled column is within the top k scores.

    Ties count in the label's favour, like ``tf.math.in_top_k``: a row is a hit
    when fewer than k columns score strictly higher than the labelled one. (Unlike
    :class:`~recstack.metrics.FactorizedTopK`, which orders ties by catalogue position, this
    metric has no candidate ids, so it cannot tell a column holding another copy of the
    labelled item, as in-batch duplicates are, from a different item.)
    A NaN score never ranks above the label, and a row whose labelled score is NaN is a miss.
    Useful as a Retrieval ``batch_metrics`` entry (in-batch accuracy).
    """

    summed_state = ("_hits", "_weight")

    def __init__(self, k: int = 5, name: str | None = None):
        super().__init__(name or f"top_{k}_categorical_accuracy")
        self.k = k
        self.reset_state()

    def reset_state(self) -> None:
        self._hits = 0.0
        self._weight = 0.0

    @torch.no_grad()
    def update_state(self, y_true: torch.Tensor, y_pred: torch.Tensor,
                     sample_weight: torch.Tensor | None = None) -> None:
        target = y_true.argmax(dim=1)
        target_score = y_pred.gather(1, target[:, None])
        hits = (((y_pred > target_score).sum(dim=1) < self.k) & ~torch.isnan(target_score[:, 0])).double()
        weight = torch.ones_like(hits) if sample_weight is None else sample_weight.reshape(-1).double()
        self._hits += float((hits * weight).sum())
        self._weight += float(weight.sum())

    def result(self) -> dict[str, float]:
        return {self.name: self._hits / self._weight} if self._weight else {}
