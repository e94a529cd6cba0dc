"""Pooling a history of item ids into one vector: the mean or a learned attention over their embeddings.

    m_bt = [x_bt != 0]                                          (0 = padding, at any position)
    mean:       out_b = sum_t m_bt E[x_bt] / max(1, sum_t m_bt)
    attention:  s_bt  = E[x_bt] . w / sqrt(d)                    (w: a learned query vector [d])
                a_bt  = exp(s_bt) m_bt / sum_u exp(s_bu) m_bu    (softmax over real positions only)
                out_b = sum_t a_bt E[x_bt]

An all-padding row gives zeros. ``w`` starts at 0, so attention pooling starts as the mean.
Input LongTensor [B, L] -> [B, d]; both poolings ignore the order of the ids.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ShapeError
from .embedding import Embedding

Pooling = Literal["mean", "attention"]
POOLINGS = ("mean", "attention")

__all__ = ["POOLINGS", "HistoryPooling"]


class HistoryPooling(nn.Module):
    """[B, L] item ids (0 = padding) -> [B, d] pooled item embeddings (see the module docstring).

    Args:
        num_items: rows of the item table (id 0 included: it is the padding and never pooled).
        embedding_dim: d.
        pooling: "mean" or "attention".
        l2: L2 coefficient on the table (as :class:`~recstack.layers.Embedding`).
        sparse: the table produces sparse gradients.

    ``embedding`` may be replaced by another :class:`~recstack.layers.Embedding` of the same shape
    (e.g. the item tower's id table, to share it): :meth:`share_embedding`.
    """

    def __init__(self, num_items: int, embedding_dim: int, pooling: str = "mean", l2: float = 0.0,
                 sparse: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ConfigError(f"history pooling must be one of {', '.join(POOLINGS)}; got {pooling!r}.")
        self.pooling = pooling
        self.embedding = Embedding(int(num_items), int(embedding_dim), l2=l2, sparse=sparse)
        self.query = nn.Parameter(torch.zeros(int(embedding_dim))) if pooling == "attention" else None

    def share_embedding(self, embedding: Embedding) -> None:
        """Pool the rows of ``embedding`` (same shape) instead of this layer's own table."""
        if tuple(embedding.weight.shape) != tuple(self.embedding.weight.shape):
            raise ShapeError(f"a shared history table must have shape {tuple(self.embedding.weight.shape)}; got "
                             f"{tuple(embedding.weight.shape)}.")
        self.embedding = embedding

    def attention_weights(self, items: torch.Tensor) -> torch.Tensor:
        """[B, L] the pooling weights of each position: softmax over the real positions (attention) or
        1 / count (mean); 0 on padding and on all-padding rows."""
        items = items.long()
        if self.query is None:
            mask = (items != 0).to(self.embedding.weight.dtype)
            return mask / mask.sum(dim=1, keepdim=True).clamp_min(1.0)
        return self._attend(items, self.embedding(items))[0]

    def _attend(self, items: torch.Tensor, e: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        real = items != 0
        scores = (e @ self.query) / math.sqrt(e.shape[-1])                  # [B, L]
        scores = scores.masked_fill(~real, -math.inf)
        # An all-padding row would be a softmax of -inf only (NaN, and NaN gradients): score it 0, weigh it 0.
        scores = scores.masked_fill(~real.any(dim=1, keepdim=True), 0.0)
        weights = torch.softmax(scores, dim=1) * real
        return weights, (weights.unsqueeze(-1) * e).sum(dim=1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        if items.dim() != 2:
            raise ShapeError(f"history item ids must be [batch, length]; got shape {tuple(items.shape)}.")
        items = items.long()
        if self.query is None:
            # embedding_bag's mean skips padding_idx in the sum and the count (zeros for an all-pad bag).
            return F.embedding_bag(items, self.embedding.weight, mode="mean", padding_idx=0,
                                   sparse=self.embedding.sparse)
        return self._attend(items, self.embedding(items))[1]
