"""A two-tower retrieval model: query tower, candidate tower, Retrieval task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..columns import Batch
from ..errors import ConfigError
from ..tasks.retrieval import Retrieval
from .base import Model

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
    """

    def __init__(self, query_tower: nn.Module, candidate_tower: nn.Module, task: Retrieval,
                 query_inputs: InputSpec, candidate_inputs: InputSpec,
                 candidate_id: str | None = None, query_key: str | None = None,
                 sample_weight: str | None = None, sampling_probability: str | None = None,
                 train_metrics: bool = True):
        super().__init__()
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
        return self.task(
            self.query_embeddings(batch),
            self.candidate_embeddings(batch),
            sample_weight=batch[self.sample_weight] if self.sample_weight else None,
            candidate_sampling_probability=probability,
            candidate_ids=batch[self.candidate_id] if self.candidate_id else None,
            query_keys=batch[self.query_key] if self.query_key else None,
            compute_metrics=self.train_metrics or not training,
        )
