"""The query towers of history bundles: a history of item ids -> one query vector.

:class:`MultiHotQuery` is the query of the fold-in kinds that score a history by its items (EASE,
item-KNN): the history's multi-hot row. :class:`MultVAEFoldInQuery` encodes that row (Mult-VAE),
and :class:`ScaledConcatQuery` blends members' queries (the ensemble). iALS's user solve is
:class:`recstack.models.ials.IALSFoldInQuery`. :class:`UserHistoryQuery` queries a two-tower
model's history user tower as a new user with that history.

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

from .multvae import decoded_query
from .sequential import last_positions

__all__ = ["HistoryQueryTower", "MultiHotQuery", "MultVAEFoldInQuery", "ScaledConcatQuery", "UserHistoryQuery"]


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


class MultiHotQuery(nn.Module):
    """[B, L] left-padded item ids -> [B, V] each row's multi-hot vector x_b (float32):

        x_bj = 1 if item j occurs in row b (repeats count once), else 0;   ids 0 (pad) and >= V ignored

    The query of the fold-in kinds that score a history by its items alone (EASE: x_b · B[:, j];
    item-KNN: x_b · N[j]), so a bundle of such a model ranks a new user's history with the
    candidates' embeddings as its only weights. Saved as ``{"type": "multi_hot_query",
    "config": {"num_items": V}}`` (no state)."""

    def __init__(self, num_items: int):
        super().__init__()
        if int(num_items) < 1:
            raise ValueError(f"num_items must be >= 1; got {num_items}")
        self.num_items = int(num_items)

    def get_config(self) -> dict[str, int]:
        return {"num_items": self.num_items}

    @classmethod
    def from_config(cls, config: dict[str, int]) -> "MultiHotQuery":
        return cls(int(config["num_items"]))

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        items = items.long()
        x = torch.zeros(items.shape[0], self.num_items, device=items.device)
        known = (items > 0) & (items < self.num_items)
        rows = torch.arange(items.shape[0], device=items.device)[:, None].expand_as(items)
        x[rows[known], items[known]] = 1.0
        return x


class MultVAEFoldInQuery(nn.Module):
    """[B, L] left-padded item ids -> [B, H + 1] Mult-VAE's query of each history's multi-hot row x:

        q = [g(μ(x / ||x||₂)), 1],   μ: the encoder's mean head, g: the decoder's hidden layers

    so q · [D_o[j], c_o[j]] is the decoder's logit for item j (:meth:`MultVAE.fold_in` in eval
    mode: no dropout, z = μ). ``encoder`` maps [B, V] to [B, 2 · latent_dim] (μ first)."""

    def __init__(self, num_items: int, latent_dim: int, encoder: nn.Module, decoder_hidden: nn.Module):
        super().__init__()
        self.rows = MultiHotQuery(num_items)
        self.latent_dim = int(latent_dim)
        self.encoder, self.decoder_hidden = encoder, decoder_hidden

    @classmethod
    def of(cls, model: nn.Module) -> "MultVAEFoldInQuery":
        """The fold-in query of a fitted :class:`~recstack.models.multvae.MultVAE` (its own modules)."""
        return cls(model.num_items, model.latent_dim, model.encoder, model.decoder_hidden).eval()

    @torch.no_grad()
    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return decoded_query(self.encoder, self.decoder_hidden, self.latent_dim, self.rows(items))


class ScaledConcatQuery(nn.Module):
    """[B, L] left-padded item ids -> [B, Σ d_m] the members' queries, each times its factor:

        q = [f_1 · q_1, ..., f_M · q_M]   (the ensemble: f_m = w_m / σ_m, float32)

    whose dot product with the concatenated member item embeddings is the blend's score."""

    def __init__(self, towers: list[nn.Module], factors: list[float]):
        super().__init__()
        if len(towers) != len(factors) or not towers:
            raise ValueError(f"ScaledConcatQuery needs one factor per tower (at least one); got {len(towers)} "
                             f"towers and {len(factors)} factors")
        self.towers = nn.ModuleList(towers)
        self.factors = [float(f) for f in factors]

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        return torch.cat([tower(items).float() * f for tower, f in zip(self.towers, self.factors)], dim=1)


class UserHistoryQuery(nn.Module):
    """[B, L] left-padded item ids (0 = pad, latest last) -> [B, d] the two-tower user tower's query
    of each history's latest ``history_length`` items as a user unseen in training (id 0, the
    cold-start id embedding): ``recommend RUN --history`` (``FeatureTower.history_query_embeddings``).
    The pooling (mean, or attention from a learned query vector) reads real items only, in any
    order, so the serving path's left padding gives the tower's own answer."""

    def __init__(self, tower: nn.Module):
        super().__init__()
        self.tower = tower

    @torch.no_grad()
    def forward(self, items: torch.Tensor) -> torch.Tensor:
        items = items.long()[:, -int(self.tower.history_length):]   # left-padded: the latest are last
        ids = torch.zeros(items.shape[0], dtype=torch.long, device=items.device)
        return self.tower(ids, histories=items)
