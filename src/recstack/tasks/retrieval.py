"""The Retrieval task: in-batch softmax loss over query/candidate embeddings (TFRS semantics)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F

from ..core.errors import ConfigError, ShapeError
from ..layers.retrieval_loss import (
    hard_negative_mining,
    remove_accidental_hits,
    sampling_probability_correction,
    softmax_retrieval_loss,
)
from ..metrics.base import Metric
from .base import Task

LossFn = Callable[[torch.Tensor, torch.Tensor, "torch.Tensor | None"], torch.Tensor]


class Retrieval(Task):
    """Two-tower retrieval loss, matching ``tfrs.tasks.Retrieval``.

    Row i of the query embeddings selected row i of the candidate embeddings;
    every other candidate in the batch (and any extra rows past the queries) is
    a negative. With scores = q @ c.T [n, m] and labels = eye(n, m):

        scores /= temperature                          (if temperature)
        scores -= log(clip(P_candidate, 1e-6, 1))      (if candidate_sampling_probability)
        mask same-id negatives                         (if remove_accidental_hits)
        keep positive + hardest negatives              (if num_hard_negatives)
        loss = sum_i w_i * CE(labels_i, softmax(scores_i))       reduction="sum" (TFRS)
             = that sum / n                                       reduction="mean"

    SUM is TFRS's default and ties the effective learning rate to the batch
    size; "mean" makes the loss scale independent of it.

    Args:
        loss: optional custom loss ``loss(labels [n, m'], logits [n, m'], sample_weight)``
            computed on materialised logits; default is the fused softmax
            cross-entropy (same value, much faster).
        metrics: FactorizedTopK (or other metrics with its ``update_state``
            signature) updated with (queries, positives, ids) when computing metrics.
        batch_metrics: metrics updated with ``(labels, scores)`` of the batch.
        temperature: scores are divided by it.
        num_hard_negatives: keep only this many highest-scoring negatives per query.
        remove_accidental_hits: mask negatives whose ``candidate_ids`` equal the
            positive's; then ``candidate_ids`` must be passed.
        reduction: "sum" or "mean".
    """

    def __init__(
        self,
        loss: LossFn | None = None,
        metrics: Metric | Iterable[Metric] | None = None,
        batch_metrics: Metric | Iterable[Metric] | None = None,
        temperature: float | None = None,
        num_hard_negatives: int | None = None,
        remove_accidental_hits: bool = False,
        reduction: str = "sum",
        name: str = "retrieval",
    ):
        super().__init__(metrics, batch_metrics)
        if reduction not in ("sum", "mean"):
            raise ConfigError(f"reduction must be 'sum' or 'mean'; got {reduction!r}.")
        if temperature is not None and temperature <= 0:
            raise ConfigError(f"temperature must be positive; got {temperature}.")
        if num_hard_negatives is not None and num_hard_negatives < 1:
            raise ConfigError(f"num_hard_negatives must be >= 1; got {num_hard_negatives}.")
        self.loss_fn = loss
        self.temperature = temperature
        self.num_hard_negatives = num_hard_negatives
        self.remove_accidental_hits = remove_accidental_hits
        self.reduction = reduction
        self.name = name

    def forward(
        self,
        query_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
        candidate_sampling_probability: torch.Tensor | None = None,
        candidate_ids: torch.Tensor | None = None,
        compute_metrics: bool = True,
        compute_batch_metrics: bool = True,
        query_keys: torch.Tensor | None = None,
        positive_index: torch.Tensor | None = None,
        candidate_counts: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Loss for one batch; also updates metrics.

        Args:
            query_embeddings: [n, d].
            candidate_embeddings: [m, d] with m >= n; candidate i is query i's positive.
            sample_weight: [n].
            candidate_sampling_probability: [m] probability that each candidate is
                sampled as a negative (logQ correction).
            candidate_ids: [m] integer candidate ids (accidental hits; also passed
                to FactorizedTopK as the positives' ids).
            compute_metrics: update the factorized metrics (slow on big catalogues).
            compute_batch_metrics: update the batch metrics.
            query_keys: [n] integer query keys for metrics with exclusions/grouping.
            positive_index: [n] the candidate row of query i's positive (default: row i).
            candidate_counts: deduplicated candidates (see
                :func:`~recstack.layers.retrieval_loss.softmax_retrieval_loss`): then
                ``candidate_embeddings`` [u, d] (and ``candidate_ids`` /
                ``candidate_sampling_probability`` [u]) hold each distinct in-batch candidate
                once and ``candidate_counts`` [u] its number of copies. Same loss and gradients
                as the expanded batch, at u/n of the cost; use it when a candidate's embedding
                depends only on its id.

        Returns:
            Scalar loss tensor.
        """
        if positive_index is not None:
            self._check_positives(query_embeddings, candidate_embeddings, positive_index, candidate_counts)
            if (self.loss_fn is not None or self.num_hard_negatives is not None
                    or (compute_batch_metrics and self._batch_metrics)):
                # These paths need the materialised [n, n] logits of a plain batch.
                if candidate_counts is None or int(candidate_counts.sum()) != query_embeddings.shape[0]:
                    raise ConfigError("a custom loss, num_hard_negatives and batch metrics need the plain "
                                      "in-batch form (not supported with distributed training).")
                candidate_embeddings = candidate_embeddings.index_select(0, positive_index)
                if candidate_ids is not None:
                    candidate_ids = candidate_ids.index_select(0, positive_index)
                if candidate_sampling_probability is not None:
                    candidate_sampling_probability = candidate_sampling_probability.index_select(0, positive_index)
                positive_index = candidate_counts = None
        n, m = self._check_shapes(query_embeddings, candidate_embeddings, sample_weight,
                                  candidate_sampling_probability, candidate_ids, positive_index is not None)
        if self.remove_accidental_hits and candidate_ids is None:
            raise ConfigError("remove_accidental_hits=True needs candidate_ids= in the call.")
        ids_for_loss = candidate_ids if self.remove_accidental_hits else None

        if self.loss_fn is None:
            loss = softmax_retrieval_loss(
                query_embeddings, candidate_embeddings, sample_weight,
                candidate_sampling_probability, ids_for_loss, self.temperature,
                self.num_hard_negatives, self.reduction, positive_index, candidate_counts)
            scores = labels = None
        else:
            scores, labels = self.logits_and_labels(
                query_embeddings, candidate_embeddings, candidate_sampling_probability, ids_for_loss)
            loss = self.loss_fn(labels, scores, sample_weight)

        if compute_metrics and self._metrics:
            positives = candidate_embeddings[:n] if positive_index is None else candidate_embeddings[positive_index]
            positive_ids = None
            if candidate_ids is not None:
                positive_ids = candidate_ids[:n] if positive_index is None else candidate_ids[positive_index]
            for metric in self._metrics:
                metric.update_state(query_embeddings, positives, true_candidate_ids=positive_ids,
                                    sample_weight=sample_weight, query_keys=query_keys)
        if compute_batch_metrics and self._batch_metrics:
            with torch.no_grad():
                if scores is None:
                    scores, labels = self.logits_and_labels(
                        query_embeddings, candidate_embeddings, candidate_sampling_probability, ids_for_loss)
                for metric in self._batch_metrics:
                    metric.update_state(labels, scores, sample_weight)
        return loss

    def logits_and_labels(
        self,
        query_embeddings: torch.Tensor,
        candidate_embeddings: torch.Tensor,
        candidate_sampling_probability: torch.Tensor | None = None,
        candidate_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Materialised transformed logits and one-hot labels (the reference path)."""
        scores = query_embeddings @ candidate_embeddings.T
        n, m = scores.shape
        labels = torch.eye(n, m, dtype=scores.dtype)
        if self.temperature is not None:
            scores = scores / self.temperature
        if candidate_sampling_probability is not None:
            scores = sampling_probability_correction(scores, candidate_sampling_probability)
        if candidate_ids is not None:
            scores = remove_accidental_hits(scores, candidate_ids)
        if self.num_hard_negatives is not None:
            scores, labels = hard_negative_mining(scores, self.num_hard_negatives)
        return scores, labels

    @staticmethod
    def _check_positives(q, c, positive_index, candidate_counts) -> None:
        n, m = q.shape[0], c.shape[0]
        if positive_index.reshape(-1).shape[0] != n:
            raise ShapeError(f"positive_index must have {n} entries (one per query); got {tuple(positive_index.shape)}.")
        if candidate_counts is None:
            return
        if candidate_counts.reshape(-1).shape[0] != m:
            raise ShapeError(f"candidate_counts must have {m} entries (one per candidate row); got "
                             f"{tuple(candidate_counts.shape)}.")
        if int(candidate_counts.sum()) < n or bool((candidate_counts < 1).any()):
            raise ShapeError(f"candidate_counts must be >= 1 and sum to at least the number of queries ({n}); got "
                             f"sum {int(candidate_counts.sum())}. Use torch.unique(ids, return_inverse=True, "
                             "return_counts=True) on the batch's candidate ids.")

    @staticmethod
    def _check_shapes(q, c, sample_weight, sampling_probability, candidate_ids,
                      deduplicated: bool = False) -> tuple[int, int]:
        if q.dim() != 2 or c.dim() != 2:
            raise ShapeError(
                f"query and candidate embeddings must be 2-D [batch, dim]; got {tuple(q.shape)} "
                f"and {tuple(c.shape)}.")
        n, m = q.shape[0], c.shape[0]
        if q.shape[1] != c.shape[1]:
            raise ShapeError(
                f"query embeddings have dimension {q.shape[1]} but candidate embeddings "
                f"{c.shape[1]}; both towers must output the same embedding size.")
        if m < n and not deduplicated:
            raise ShapeError(
                f"{n} queries but only {m} candidates: every query needs its positive candidate "
                "at the same row (extra candidate rows are extra negatives).")
        for name, t, size in (("sample_weight", sample_weight, n),
                              ("candidate_sampling_probability", sampling_probability, m),
                              ("candidate_ids", candidate_ids, m)):
            if t is not None and t.reshape(-1).shape[0] != size:
                raise ShapeError(f"{name} must have {size} entries; got shape {tuple(t.shape)}.")
        return n, m


def softmax_cross_entropy(labels: torch.Tensor, logits: torch.Tensor,
                          sample_weight: torch.Tensor | None = None,
                          reduction: str = "sum") -> torch.Tensor:
    """Keras CategoricalCrossentropy(from_logits=True): -sum_j y_ij log softmax(logits_i)_j."""
    per_row = -(labels * F.log_softmax(logits, dim=1).nan_to_num(neginf=0.0)).sum(dim=1)
    if sample_weight is not None:
        per_row = per_row * sample_weight.reshape(-1)
    total = per_row.sum()
    return total if reduction == "sum" else total / max(per_row.shape[0], 1)


__all__ = ["Retrieval", "softmax_cross_entropy"]
