"""Item-KNN (item-based collaborative filtering with cosine neighbourhoods), closed form.

RecBole 1.2.1's ``ItemKNN`` (``recbole/model/general_recommender/itemknn.py``, its
``ComputeSimilarity(..., method="item")``), written as one vectorised torch computation:

* X [U, V]: the binary user x item training matrix (repeated pairs count once);
* S_ij = <x_i, x_j> / (|x_i| |x_j| + shrink + 1e-6) over the item columns x_i of X, with
  S_jj = 0 (RecBole adds the 1e-6 so that items without interactions get similarity 0);
* for each target item j only its ``k`` largest similarities S_ij over i are kept (RecBole keeps
  the top-k of each *column* j of its weight matrix W [V, V] and scores ``X @ W``, so that
  score_uj = sum_i x_ui W_ij sums the user's items among j's own k neighbours);
* score_uj = x_u · W[:, j].

S is symmetric, so the kept weights are W = Nᵀ with N [V, V] the *row*-pruned similarity (row j
of N: item j's k nearest neighbours); the candidate embedding of item j is N[j] and the query
embedding of user u is x_u, so FactorizedTopK ranks the scores like EASE's (same tie rule, same
masking, same exclusions). Ties at the k-th largest similarity keep the lower item ids (RecBole's
``argpartition`` leaves that order unspecified); zero similarities carry no weight either way.
"""

from __future__ import annotations

from typing import Any

import torch

from ..core.errors import ConfigError, DataError
from .baselines import EmbeddingBaseline

#: RecBole's guard against a zero denominator (items without interactions).
EPSILON = 1e-6


def cosine_similarity(X: torch.Tensor, shrink: float = 0.0) -> torch.Tensor:
    """Item-item cosine similarity S [V, V] of the columns of X [U, V] (float64), diagonal zeroed.

    S_ij = <x_i, x_j> / (|x_i| |x_j| + shrink + 1e-6).
    """
    if shrink < 0:
        raise ConfigError(f"item-KNN needs shrink >= 0; got {shrink}.")
    X = X.double()
    gram = X.T @ X
    norms = gram.diagonal().sqrt()
    S = gram / (norms[:, None] * norms[None, :] + float(shrink) + EPSILON)
    S.fill_diagonal_(0.0)
    return S


def keep_top_k(S: torch.Tensor, k: int) -> torch.Tensor:
    """S [V, V] with each row's ``k`` largest off-diagonal entries kept and every other entry zeroed.

    Among entries equal to a row's k-th largest value the lowest column ids are kept, so exactly
    min(k, V - 1) entries per row survive and the result does not depend on the order in which
    torch.topk returns ties.
    """
    if k < 1:
        raise ConfigError(f"item-KNN needs k >= 1; got {k}.")
    V = S.shape[0]
    if k >= V - 1:
        return S.clone()
    candidates = S.clone()
    candidates.fill_diagonal_(-float("inf"))                  # the diagonal is never a neighbour
    kth = torch.topk(candidates, k, dim=1).values[:, -1:]     # [V, 1] the k-th largest value of each row
    above = candidates > kth
    tied = candidates == kth
    room = k - above.sum(dim=1, keepdim=True)                 # how many tied entries still fit
    keep = above | (tied & (torch.cumsum(tied, dim=1) <= room))
    return torch.where(keep, S, torch.zeros((), dtype=S.dtype))


def itemknn_neighbours(X: torch.Tensor, k: int = 100, shrink: float = 0.0) -> torch.Tensor:
    """N [V, V] (float64): row j holds item j's k largest cosine similarities (others 0).

    RecBole's weight matrix is W = Nᵀ and its scores X @ W; here score_uj = x_u · N[j].
    """
    return keep_top_k(cosine_similarity(X, shrink), k)


class ItemKNN(EmbeddingBaseline):
    """Item-KNN: score(u, j) = sum over the user's items i among j's k neighbours of S_ij.

    Args:
        num_items: V.
        num_users: rows of X (users outside [0, num_users) get an all-zero row).
        k: neighbours kept per item (RecBole's default 100).
        shrink: added to the cosine's denominator; damps similarities of rarely seen items
            (RecBole's default 0).
        dtype: dtype of the embeddings (float64 keeps near-equal scores ordered exactly).

    Buffers (the state_dict): ``X`` [U, V] the binary training rows, ``N`` [V, V] the row-pruned
    similarities (see the module docstring). Query embedding x_u [V], candidate embedding N[j] [V].
    """

    def __init__(self, num_items: int, num_users: int, k: int = 100, shrink: float = 0.0,
                 dtype: torch.dtype = torch.float64, **kwargs: Any):
        super().__init__(num_items, **kwargs)
        if k < 1:
            raise ConfigError(f"item-KNN needs k >= 1; got {k}.")
        if shrink < 0:
            raise ConfigError(f"item-KNN needs shrink >= 0; got {shrink}.")
        self.num_users = int(num_users)
        self.k, self.shrink = int(k), float(shrink)
        self.dtype = dtype
        self.register_buffer("X", torch.zeros(0))
        self.register_buffer("N", torch.zeros(0))

    @property
    def is_fitted(self) -> bool:
        return self.N.numel() == self.num_items ** 2

    def _fit(self, users: torch.Tensor, items: torch.Tensor) -> None:
        if int(users.min()) < 0 or int(users.max()) >= self.num_users:
            raise DataError(f"user ids must lie in [0, {self.num_users}); got max {int(users.max())}.")
        X = torch.zeros(self.num_users, self.num_items, dtype=torch.float64)
        X[users, items] = 1.0  # binary: repeated pairs count once
        self.X = X.to(self.dtype)
        self.N = itemknn_neighbours(X, self.k, self.shrink).to(self.dtype)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        known = (users >= 0) & (users < self.num_users)
        rows = self.X[users.clamp(0, self.num_users - 1)]
        return rows * known[:, None].to(rows.dtype)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        return self.N[items]


__all__ = ["EPSILON", "ItemKNN", "cosine_similarity", "itemknn_neighbours", "keep_top_k"]
