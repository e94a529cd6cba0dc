"""Retrieval metrics for models that train on something other than interaction rows.

Mult-VAE trains on user rows and LightGCN on (user, item, sampled negative) triples, but both
are validated and evaluated like every other retrieval model: on interaction rows
``{"user", "item", "query_key"}``, each row's item ranked against the catalogue by the dot
product ``user_embeddings(user) · item_embeddings(item)``. :class:`CatalogueScored` holds the
:class:`~recstack.metrics.FactorizedTopK` of those rows (the same tie rule, masking and
exclusions as the two-tower and baseline models) so the subclasses only define the embeddings.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..core.columns import Batch
from ..core.errors import DataError
from ..core.exclusions import Exclusions
from ..metrics.factorized_top_k import FactorizedTopK
from ..training.model import Model
from .baselines import ScoringTask, score_rows


class CatalogueScored(Model):
    """Base class: FactorizedTopK over ``catalogue`` for interaction-row batches.

    Args:
        num_items: V, the item id space (0 = unknown).
        catalogue: [C] item ids ranked by the metrics (default 1 .. V - 1).
        ks: FactorizedTopK cut-offs.
        exclude: seen items per query key ("exclude-seen" validation), or None.
        per_user_metrics: group rows by ``query_key`` (per-user recall/NDCG/MRR).
    """

    def __init__(self, num_items: int, catalogue: torch.Tensor | None = None, ks: Sequence[int] = (1, 5, 10, 50, 100),
                 exclude: Exclusions | None = None, per_user_metrics: bool = False):
        super().__init__()
        self.num_items = int(num_items)
        ids = torch.arange(1, self.num_items) if catalogue is None else torch.as_tensor(catalogue).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_items):
            raise DataError(f"catalogue ids must lie in [0, {self.num_items}); got range "
                            f"[{int(ids.min())}, {int(ids.max())}].")
        self.catalogue_ids = ids
        self.per_user = bool(per_user_metrics or exclude is not None)
        self.task = ScoringTask(FactorizedTopK(self.catalogue_embeddings, candidate_ids=ids, ks=ks, exclude=exclude))

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def catalogue_embeddings(self) -> torch.Tensor:
        """[C, d] embeddings of the catalogue rows (FactorizedTopK's candidates)."""
        return self.item_embeddings(self.catalogue_ids.to(self._device()))

    def _device(self) -> torch.device:
        return next(iter(self.parameters())).device

    def score_interactions(self, batch: Batch) -> torch.Tensor:
        """Update the metrics with the batch's (user, item) rows; returns a zero loss (these rows are
        what the model is evaluated on, not what it is trained on)."""
        users, items = batch["user"].long(), batch["item"].long()
        return score_rows(self.task, self.user_embeddings, users, self.item_embeddings(items), items,
                          batch["query_key"] if self.per_user else None)


__all__ = ["CatalogueScored"]
