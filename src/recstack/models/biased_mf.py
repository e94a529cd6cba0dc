"""Biased matrix factorisation (Koren et al., 2009): the rating-prediction baseline.

    r_hat(u, i) = mu + b_u + b_i + p_u . q_i

with ``mu`` the training mean (fixed), user/item biases ``b`` and factors ``p``, ``q``.
Training minimises, per batch B of observed ratings,

    loss = 1/|B| sum_{(u,i) in B} [ (r_ui - r_hat(u,i))^2
                                    + l2 (||p_u||^2 + ||q_i||^2) + bias_l2 (b_u^2 + b_i^2) ]

i.e. the classic per-rating L2 of SGD matrix factorisation: a user or item is penalised
once per rating it appears in, so frequent ids are not shrunk harder than the data
supports. The penalty is part of the training loss only; ``evaluate`` reports the plain
MSE and RMSE of predictions clipped to the rating range.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.columns import Batch
from ..core.errors import ConfigError, DataError
from ..metrics.base import Metric, RootMeanSquaredError
from ..tasks.ranking import Ranking
from ..training.model import Model
from .rating_data import RatingIndex, RatingMatrix

__all__ = ["BiasedMF"]


class BiasedMF(Model):
    """mu + b_u + b_i + p_u . q_i, trained with ``Ranking`` (MSE) on (user, item, rating) rows.

    Args:
        num_users, num_items: table sizes (dense indices 0..n-1).
        embedding_dim: factor width d.
        global_mean: mu (use the training mean; :meth:`from_matrix` does).
        l2: per-rating penalty on the factors (see module doc).
        bias_l2: per-rating penalty on the biases.
        init_std: factors ~ Normal(0, init_std); biases start at 0.
        rating_range: (low, high) clip for evaluation and :meth:`predict`; None disables.
        index: optional RatingIndex, needed only for :meth:`predict` with raw ids.
        metrics: metrics of the Ranking task (default RootMeanSquaredError).

    Batches: ``{"user": [B] int64, "item": [B] int64, "rating": [B] float}``, e.g.
    ``index.pairs(train_df)``. Indices outside the tables raise DataError.
    """

    def __init__(
        self,
        num_users: int,
        num_items: int,
        embedding_dim: int = 32,
        global_mean: float = 0.0,
        l2: float = 0.1,
        bias_l2: float = 0.001,
        init_std: float = 0.01,
        rating_range: tuple[float, float] | None = None,
        index: RatingIndex | None = None,
        metrics: Metric | Sequence[Metric] | None = None,
    ) -> None:
        super().__init__()
        if num_users < 1 or num_items < 1 or embedding_dim < 1:
            raise ConfigError(f"num_users, num_items and embedding_dim must be positive; got "
                              f"{num_users}, {num_items}, {embedding_dim}")
        if l2 < 0 or bias_l2 < 0:
            raise ConfigError(f"l2 and bias_l2 must be >= 0; got {l2}, {bias_l2}")
        self.l2, self.bias_l2 = float(l2), float(bias_l2)
        self.global_mean = float(global_mean)
        self.rating_range = rating_range
        self.index = index
        self.user_factors = nn.Embedding(num_users, embedding_dim)
        self.item_factors = nn.Embedding(num_items, embedding_dim)
        self.user_bias = nn.Embedding(num_users, 1)
        self.item_bias = nn.Embedding(num_items, 1)
        nn.init.normal_(self.user_factors.weight, 0.0, init_std)
        nn.init.normal_(self.item_factors.weight, 0.0, init_std)
        nn.init.zeros_(self.user_bias.weight)
        nn.init.zeros_(self.item_bias.weight)
        self.task = Ranking(metrics=metrics if metrics is not None else [RootMeanSquaredError()])

    @classmethod
    def from_matrix(cls, train: RatingMatrix, **kwargs: Any) -> "BiasedMF":
        """Sizes, ``global_mean``, ``rating_range`` and ``index`` from the training matrix."""
        kwargs.setdefault("global_mean", train.global_mean())
        kwargs.setdefault("rating_range", train.rating_range())
        kwargs.setdefault("index", train.index)
        return cls(train.num_users, train.num_items, **kwargs)

    def _check(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.user_bias.weight.device
        users = torch.as_tensor(users, dtype=torch.long, device=device).reshape(-1)
        items = torch.as_tensor(items, dtype=torch.long, device=device).reshape(-1)
        if users.shape != items.shape:
            raise DataError(f"got {users.numel()} user indices but {items.numel()} item indices")
        for name, idx, n in (("user", users, self.user_bias.num_embeddings),
                             ("item", items, self.item_bias.num_embeddings)):
            bad = (idx < 0) | (idx >= n)
            if bool(bad.any()):
                raise DataError(f"{name} index {int(idx[bad][0])} is out of range [0, {n}): "
                                f"the model has {n} {name}s.")
        return users, items

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Unclipped predictions [n] for index pairs (users [n], items [n])."""
        users, items = self._check(users, items)
        dot = (self.user_factors(users) * self.item_factors(items)).sum(dim=1)
        return self.global_mean + self.user_bias(users)[:, 0] + self.item_bias(items)[:, 0] + dot

    def _clip(self, values: torch.Tensor) -> torch.Tensor:
        if self.rating_range is None:
            return values
        return values.clamp(self.rating_range[0], self.rating_range[1])

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        if not {"user", "item", "rating"} <= batch.keys():
            raise ConfigError(f"BiasedMF batches need 'user', 'item' and 'rating' columns; got {sorted(batch)}")
        users, items = self._check(batch["user"], batch["item"])
        predictions = self(users, items)
        if not training:
            return self.task(batch["rating"].to(predictions), self._clip(predictions))
        loss = self.task(batch["rating"].to(predictions), predictions)
        penalty = (self.l2 * (self.user_factors(users).pow(2).sum(1) + self.item_factors(items).pow(2).sum(1))
                   + self.bias_l2 * (self.user_bias(users)[:, 0].pow(2) + self.item_bias(items)[:, 0].pow(2)))
        return loss + penalty.mean()

    @torch.no_grad()
    def predict_indices(self, users: Any, items: Any, clip: bool = True) -> torch.Tensor:
        """Predicted ratings [n] for dense index pairs (out-of-range indices raise DataError)."""
        out = self(torch.as_tensor(users), torch.as_tensor(items))
        return self._clip(out) if clip else out

    def predict(self, user_ids: Any, item_ids: Any, clip: bool = True) -> np.ndarray:
        """Predicted ratings [n] for raw ids (needs ``index``; unknown ids raise DataError)."""
        if self.index is None:
            raise ConfigError("predict() with raw ids needs the model's RatingIndex: build it with "
                              "BiasedMF.from_matrix(train) or pass index=; or use predict_indices().")
        return self.predict_indices(self.index.users(user_ids), self.index.items(item_ids), clip).cpu().numpy()
