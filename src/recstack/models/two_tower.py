"""A two-tower retrieval model: query tower, candidate tower, Retrieval task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..core import distributed
from ..core.columns import Batch
from ..core.errors import ConfigError
from ..tasks.retrieval import Retrieval
from ..training.model import Model

InputSpec = str | Sequence[str]


def select_inputs(batch: Batch, spec: InputSpec) -> Any:
    """One column's tensor for a str spec, a dict of tensors for a list of column names."""
    if isinstance(spec, str):
        return batch[spec]
    return {name: batch[name] for name in spec}


class TwoTowerRetrieval(Model):
    """The model of the TFRS retrieval tutorials, for any pair of towers.

    ``compute_loss`` embeds the batch's query inputs and candidate inputs and
    calls the Retrieval task, which scores every query against every candidate
    of the batch (in-batch negatives).

    Args:
        query_tower: module mapping ``select_inputs(batch, query_inputs)`` to [B, d].
        candidate_tower: module mapping ``select_inputs(batch, candidate_inputs)`` to [B, d].
        task: the Retrieval task (carrying FactorizedTopK for metrics).
        query_inputs: column name (tensor input) or names (dict input) of the query tower.
        candidate_inputs: the same for the candidate tower.
        candidate_id: integer candidate-id column, passed to the task as
            ``candidate_ids`` (accidental hits, exact metric ranks).
        query_key: integer query-key column (e.g. encoded user id) for metrics with
            exclusions or per-user grouping.
        sample_weight: optional weight column.
        sampling_probability: optional column holding each positive's probability of being
            sampled as an in-batch negative (e.g. its training frequency); during training the
            Retrieval task subtracts its log from the logits (logQ correction, Yi et al. 2019).
            Evaluation losses are computed without it.
        train_metrics: update the task's metrics during training too (TFRS's
            default; turning it off makes epochs faster on large catalogues).
        deduplicate_candidates: declare that a candidate's tower inputs depend only on its
            ``candidate_id`` (true when candidate features come from an item table, false
            with per-interaction candidate context). The candidate tower then runs once per
            distinct candidate of the batch and the loss scores the distinct candidates
            with their multiplicities (:func:`~recstack.layers.retrieval_loss.softmax_retrieval_loss`):
            the same loss and gradients as TFRS's in-batch softmax, with a batch of n rows and
            u distinct items costing u/n of the logits (MovieLens, n = 2048: u ~ 790).
    """

    distributed_ready = True  # candidates gathered over ranks (batch_candidates)

    def __init__(self, query_tower: nn.Module, candidate_tower: nn.Module, task: Retrieval,
                 query_inputs: InputSpec, candidate_inputs: InputSpec,
                 candidate_id: str | None = None, query_key: str | None = None,
                 sample_weight: str | None = None, sampling_probability: str | None = None,
                 train_metrics: bool = True, deduplicate_candidates: bool = False):
        super().__init__()
        if deduplicate_candidates and candidate_id is None:
            raise ConfigError("deduplicate_candidates=True needs candidate_id= (the column the "
                              "candidate tower's inputs depend on).")
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.task = task
        self.query_inputs = query_inputs
        self.candidate_inputs = candidate_inputs
        self.candidate_id = candidate_id
        self.query_key = query_key
        self.sample_weight = sample_weight
        self.sampling_probability = sampling_probability
        self.train_metrics = train_metrics
        self.deduplicate_candidates = deduplicate_candidates

    def query_embeddings(self, batch: Batch) -> torch.Tensor:
        """[B, d] query embeddings of a batch."""
        return self.query_tower(select_inputs(batch, self.query_inputs))

    def candidate_embeddings(self, batch: Batch) -> torch.Tensor:
        """[B, d] embeddings of the batch's (positive) candidates."""
        return self.candidate_tower(select_inputs(batch, self.candidate_inputs))

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        probability = None
        if self.sampling_probability and training:
            if self.sampling_probability not in batch:
                raise ConfigError(
                    f"sampling_probability={self.sampling_probability!r} is not a column of the training "
                    f"data (columns: {sorted(batch)}); add it (e.g. item frequency / number of rows).")
            probability = batch[self.sampling_probability]
        queries = self.query_embeddings(batch)
        candidates, offset, size = batch_candidates(batch, _names(self.candidate_inputs), self.candidate_id,
                                                    probability)
        probability = candidates.pop(_PROBABILITY, None)
        positives: dict[str, torch.Tensor] = {}
        if self.deduplicate_candidates:
            _, inverse, counts, first = distinct_rows(candidates[self.candidate_id])
            candidates = {name: column.index_select(0, first) for name, column in candidates.items()}
            probability = probability.index_select(0, first) if probability is not None else None
            positives = {"positive_index": inverse[offset:offset + queries.shape[0]], "candidate_counts": counts}
        elif size != queries.shape[0]:   # distributed: this rank's queries against the global batch
            positives = {"positive_index": torch.arange(queries.shape[0], device=queries.device) + offset}
        loss = self.task(
            queries,
            self.candidate_embeddings(candidates),
            sample_weight=batch[self.sample_weight] if self.sample_weight else None,
            candidate_sampling_probability=probability,
            candidate_ids=candidates[self.candidate_id] if self.candidate_id else None,
            query_keys=batch[self.query_key] if self.query_key else None,
            compute_metrics=self.train_metrics or not training,
            **positives,
        )
        return global_batch_loss(loss, self.task, queries.shape[0], size)


_PROBABILITY = "__sampling_probability__"


def batch_candidates(batch: Batch, inputs: list[str], candidate_id: str | None,
                     probability: torch.Tensor | None = None) -> tuple[dict[str, torch.Tensor], int, int]:
    """The candidate columns of the batch, from every rank when batches are sharded.

    Returns ({column: [g, ...]}, offset of this rank's rows, g = rows of the global batch).
    Inputs, not embeddings, are gathered: each rank runs the candidate tower on the whole
    global batch, so the negatives (and the gradient summed over ranks) are a single process's.
    """
    columns = {name: batch[name] for name in inputs}
    if candidate_id:
        columns[candidate_id] = batch[candidate_id]
    if probability is not None:
        columns[_PROBABILITY] = probability
    if not distributed.sharding_active():
        return columns, 0, next(iter(columns.values())).shape[0]
    gathered, offset = distributed.gather_rows(columns)
    return gathered, offset, next(iter(gathered.values())).shape[0]


def global_batch_loss(loss: torch.Tensor, task: Retrieval, local_rows: int, global_rows: int) -> torch.Tensor:
    """Rescale a rank's "mean" loss (over its rows) to its share of the global batch's mean."""
    if task.reduction == "mean" and global_rows != local_rows:
        return loss * (local_rows / max(global_rows, 1))
    return loss


def distinct_rows(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Distinct values of ``ids`` [n] and how the batch maps onto them.

    Returns:
        (distinct [u], inverse [n] with ids == distinct[inverse], counts [u], first [u] = the
        first row holding each distinct value, to gather that value's features from).
    """
    distinct, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    n = ids.shape[0]
    first = torch.full_like(distinct, n, dtype=torch.long).scatter_reduce_(
        0, inverse, torch.arange(n, device=ids.device), reduce="amin")
    return distinct, inverse, counts, first


def _names(spec: InputSpec) -> list[str]:
    return [spec] if isinstance(spec, str) else list(spec)
