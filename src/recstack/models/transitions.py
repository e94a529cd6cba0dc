"""Non-neural next-item baselines: most popular, and item-to-item transitions.

Both are fitted in closed form on the training :class:`~recstack.datasets.sequences.Histories`
of a protocol and score every item id for a batch of histories ``[B, L]``
(:meth:`score_items` -> ``[B, V]``), as the sequential models do, so
:func:`recstack.models.next_item_eval.evaluate_next_item` ranks all of them the same way.

Scores never tie: popularity adds ``0.5 * (1 - j / V)`` to count_j (equal counts rank by
lower id), and transition scores add popularity scaled into [0, 0.5) to the integer
transition count (equal counts rank by popularity, then id). A tie rule inside the scores
makes the ranking independent of the evaluator's.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import nn

from ..core.errors import DataError, NotFittedError
from ..datasets.sequences import Histories
from .sequential import last_positions


def _popularity_scores(counts: np.ndarray) -> torch.Tensor:
    """[V] float64 count_j + 0.5 * (1 - j / V): the order of counts, ties by lower id."""
    V = counts.shape[0]
    return torch.from_numpy(counts.astype(np.float64) + 0.5 * (1.0 - np.arange(V) / V))


def _check_fit(histories: Histories, num_items: int) -> None:
    if histories.items.size == 0:
        raise DataError("fit() got no training interactions.")
    if int(histories.items.max()) >= num_items:
        raise DataError(f"item id {int(histories.items.max())} is >= num_items ({num_items}).")


class MostPopular(nn.Module):
    """score(history, j) = number of training interactions of item j (+ the id tie-break).

    Args:
        num_items: item id space V (0 = pad).
    """

    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = int(num_items)
        self.register_buffer("scores", torch.zeros(0, dtype=torch.float64))

    def fit(self, histories: Histories) -> MostPopular:
        _check_fit(histories, self.num_items)
        self.scores = _popularity_scores(histories.item_counts(self.num_items))
        return self

    def _check_fitted(self) -> None:
        if self.scores.numel() != self.num_items:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(split.train_histories) first.")

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, L] histories -> [B, V] the same popularity scores for every row."""
        self._check_fitted()
        return self.scores.expand(histories.shape[0], -1)

    def query_embeddings(self, histories: torch.Tensor,
                         features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, 1] ones: with :meth:`item_embeddings` a dot-product model for the indexes."""
        return torch.ones(histories.shape[0], 1, dtype=torch.float64, device=self.scores.device)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[...] ids -> [..., 1] popularity scores."""
        self._check_fitted()
        return self.scores[items.long()].unsqueeze(-1)


class ItemTransitions(nn.Module):
    """"Users who had X next had Y": score(history, j) = C[x, j] + popularity backoff.

    C[a, b] counts how often item b came right after item a in a training history (one
    user's consecutive interactions); x is the history's last item. The backoff
    ``0.5 * pop_j / (max pop + 1)`` (pop = :class:`MostPopular`'s scores, in [0, 0.5)) only
    orders items with equal counts, so a history whose last item was never followed in
    training (or an empty one) ranks by popularity. C is stored sparse (CSR by source item,
    nnz = distinct transitions) and built with one ``np.unique`` over the pairs.

    Args:
        num_items: item id space V (0 = pad).
    """

    def __init__(self, num_items: int):
        super().__init__()
        self.num_items = int(num_items)
        self.register_buffer("indptr", torch.zeros(0, dtype=torch.long))
        self.register_buffer("next_items", torch.zeros(0, dtype=torch.long))
        self.register_buffer("counts", torch.zeros(0, dtype=torch.float64))
        self.register_buffer("backoff", torch.zeros(0, dtype=torch.float64))

    def fit(self, histories: Histories) -> ItemTransitions:
        _check_fit(histories, self.num_items)
        V = self.num_items
        items, owner = histories.items, histories.lists.rows
        same_user = owner[1:] == owner[:-1]
        keys = items[:-1][same_user] * V + items[1:][same_user]      # V**2 < 2**63 for any real catalogue
        pairs, counts = np.unique(keys, return_counts=True)          # sorted by (source, next)
        indptr = np.zeros(V + 1, dtype=np.int64)
        np.cumsum(np.bincount(pairs // V, minlength=V), out=indptr[1:])
        self.indptr = torch.from_numpy(indptr)
        self.next_items = torch.from_numpy(pairs % V)
        self.counts = torch.from_numpy(counts.astype(np.float64))
        pop = _popularity_scores(histories.item_counts(V))
        self.backoff = 0.5 * pop / (float(pop.max()) + 1.0)
        return self

    @property
    def num_transitions(self) -> int:
        """Distinct (item, next item) pairs seen in training."""
        return int(self.next_items.numel())

    def transition_counts(self, item: int) -> dict[int, int]:
        """{next item: count} after ``item`` (for inspection)."""
        self._check_fitted()
        lo, hi = int(self.indptr[item]), int(self.indptr[item + 1])
        return dict(zip(self.next_items[lo:hi].tolist(), self.counts[lo:hi].long().tolist()))

    def _check_fitted(self) -> None:
        if self.indptr.numel() != self.num_items + 1:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(split.train_histories) first.")

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """[B, L] histories (0 = pad) -> [B, V] float64 scores from each row's last item."""
        self._check_fitted()
        B = histories.shape[0]
        device = self.indptr.device
        last = histories[torch.arange(B, device=histories.device), last_positions(histories)].long().to(device)
        if last.numel() and (int(last.max()) >= self.num_items or int(last.min()) < 0):
            raise DataError(f"history item ids must lie in [0, {self.num_items}).")
        scores = self.backoff.expand(B, -1).clone()
        starts = self.indptr[last]
        lengths = self.indptr[last + 1] - starts
        total = int(lengths.sum())
        if total:
            rows = torch.repeat_interleave(torch.arange(B, device=device), lengths)
            offsets = torch.arange(total, device=device) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
            entries = torch.repeat_interleave(starts, lengths) + offsets
            scores[rows, self.next_items[entries]] += self.counts[entries]
        return scores


__all__ = ["ItemTransitions", "MostPopular"]
