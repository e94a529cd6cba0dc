"""The query tower of a next-item bundle: a history of item ids -> one query vector.

:class:`HistoryQueryTower` wraps a sequence encoder (SASRec-, GRU4Rec-style) and returns its
state at each row's last real item, the query of
:meth:`recstack.models.sequential.SequentialRetrieval.query_embeddings`:

    q_b = encoder(items)[b, last(b)],   items [B, L] int (0 = pad, left-padded), q [B, d]

Saved through the one tower codec (:mod:`recstack.models.tower_codec`) as
``{"type": "history_query_tower", "config": {"encoder": <encoder config>}}``.
"""

from __future__ import annotations

import torch
from torch import nn

from .sequential import last_positions

__all__ = ["HistoryQueryTower"]


class HistoryQueryTower(nn.Module):
    """[B, L] left-padded item ids -> [B, d] the encoder's state at each row's last real item.

    An all-pad row gets the zero vector; the serving path answers empty histories with the
    bundle's fallback ranking (popularity) instead.
    """

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    @property
    def max_length(self) -> int | None:
        value = getattr(self.encoder, "max_length", None)
        return None if value is None else int(value)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        states = self.encoder(items, None)
        return states[torch.arange(states.shape[0], device=states.device), last_positions(items)]
