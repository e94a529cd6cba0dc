"""The ``itemknn`` model kind: item-based cosine neighbourhoods in closed form
(:class:`~recstack.models.itemknn.ItemKNN`, RecBole 1.2.1's ItemKNN).

Like EASE it scores a user's binary training row against item-item weights, so ``recommend``,
``similar``, indexes and bundles use it unchanged, and it folds in histories (``history_query``:
the multi-hot row of the history), so the next-item protocols and ``recommend --history`` read the
history given. Registered lazily from :data:`~recstack.experiment.model_kinds.MODEL_KINDS` (this
module is imported the first time ``itemknn`` is looked up).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..core.id_lists import IdLists
from ..training.model import Model
from .limits import MemoryEstimate
from .model_kinds import ModelContext, _baseline_kwargs, ease_history_query, register_model_kind


@dataclass
class ItemKNNParams:
    """``k``: neighbours kept per item (its k largest cosine similarities; RecBole's default 100);
    ``shrink``: added to the cosine's denominator |x_i| |x_j|, damping rarely seen items (RecBole's
    default 0). Tune both on validation data."""

    k: int = 100
    shrink: float = 0.0


def check_itemknn(p: ItemKNNParams) -> list[str]:
    problems = []
    if p.k < 1:
        problems.append(f"model.k: must be >= 1 (the neighbours kept per item), got {p.k}")
    if p.shrink < 0:
        problems.append(f"model.shrink: must be >= 0 (it is added to the cosine's denominator), got {p.shrink}")
    return problems


def itemknn_memory(ctx: ModelContext, p: ItemKNNParams) -> MemoryEstimate:
    """Float64 dense user x item matrix, and item x item matrices: the Gram matrix, the similarities,
    the top-k selection's workspace (candidates, masks) and the kept neighbours."""
    u, i = ctx.num_users, ctx.num_items
    return MemoryEstimate(8 * (u * i + 5 * i * i),
                          f"a dense {u:,} x {i:,} user-item matrix and {i:,} x {i:,} item-item matrices, float64")


def build_itemknn(ctx: ModelContext, p: ItemKNNParams) -> Model:
    from ..models.itemknn import ItemKNN

    model = ItemKNN(ctx.num_items, ctx.num_users, k=p.k, shrink=p.shrink, **_baseline_kwargs(ctx))
    model.X = torch.zeros(ctx.num_users, ctx.num_items, dtype=model.dtype)   # full size: see the builder contract
    model.N = torch.zeros(ctx.num_items, ctx.num_items, dtype=model.dtype)
    return model


def itemknn_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, V] the multi-hot rows of the histories' items (item-KNN's x_u, from the history given)."""
    return ease_history_query(model, histories)


register_model_kind("itemknn", build_itemknn, ItemKNNParams,
                    "item-KNN: cosine item-item neighbourhoods of the training rows (closed form, RecBole's ItemKNN)",
                    gradient_trained=False, check=check_itemknn, memory=itemknn_memory,
                    history_query=itemknn_history_query)

__all__ = ["ItemKNNParams", "build_itemknn", "check_itemknn", "itemknn_history_query", "itemknn_memory"]
