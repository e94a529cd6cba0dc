"""The ``autorec`` model kind (Sedhain et al. 2015): an autoencoder over the rows of the training
rating matrix, predicting ratings (:class:`~recstack.models.autorec.AutoRec`). Its params, checks,
memory bound and builder; registered lazily from
:data:`~recstack.experiment.model_kinds.MODEL_KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

from ..core.errors import ConfigError
from ..training.model import Model
from .limits import MemoryEstimate, width_problems
from .model_kinds import ModelContext, _activation_problem, register_model_kind


@dataclass
class AutoRecParams:
    """AutoRec (Sedhain et al. 2015; d2l's settings by default): an autoencoder over the rows of the
    training rating matrix (``based: item``: one row per item, users as inputs; ``user``: the
    transpose). ``hidden_sizes`` encoder widths, each followed by ``encoder_activation`` and
    ``dropout``; weights ~ N(0, ``init_std``) (null: Glorot); ``l2`` on the weight matrices;
    ``clip`` predictions to the training rating range; ``cold_start``: ``global_mean`` predicts
    the training mean for users/items without training ratings, ``model`` what the network says.
    """

    based: Literal["item", "user"] = "item"
    hidden_sizes: list[int] = field(default_factory=lambda: [500])
    encoder_activation: str = "sigmoid"
    decoder_activation: str = "identity"
    dropout: float = 0.05
    init_std: float | None = 0.01
    l2: float = 0.0
    clip: bool = True
    cold_start: Literal["global_mean", "model"] = "global_mean"


def check_autorec(p: AutoRecParams) -> list[str]:
    problems = [_activation_problem("model.encoder_activation", p.encoder_activation),
                _activation_problem("model.decoder_activation", p.decoder_activation)]
    if not p.hidden_sizes:
        problems.append("model.hidden_sizes: list at least one encoder width, e.g. [500]")
    if not 0 <= p.dropout < 1:
        problems.append(f"model.dropout: must be in [0, 1), got {p.dropout}")
    if p.init_std is not None and p.init_std <= 0:
        problems.append(f"model.init_std: must be > 0 (or null: Glorot initialisation), got {p.init_std}")
    if p.l2 < 0:
        problems.append(f"model.l2: must be >= 0, got {p.l2}")
    return [x for x in problems if x] + width_problems("model.hidden_sizes", p.hidden_sizes)


def autorec_memory(ctx: ModelContext, p: AutoRecParams) -> MemoryEstimate:
    """The dense user x item rating matrix (float32 ratings + bool mask, held twice: as given and
    oriented) and the float32 encoder/decoder weights with gradients and optimizer state."""
    u, i = ctx.num_users, ctx.num_items
    rows, width = (i, u) if p.based == "item" else (u, i)
    widths = [width, *p.hidden_sizes, width]
    params = sum(a * b for a, b in zip(widths, widths[1:]))
    return MemoryEstimate(10 * u * i + 16 * params + 4 * rows * width,
                          f"a dense {u:,} x {i:,} rating matrix and {params:,} weights, float32, with gradients "
                          "and optimizer state")


def build_autorec(ctx: ModelContext, p: AutoRecParams) -> Model:
    import numpy as np

    from ..models.autorec import AutoRec
    from ..models.rating_data import RatingIndex, RatingMatrix

    index = RatingIndex(np.arange(ctx.num_users), np.arange(ctx.num_items))
    if ctx.train is not None:
        if "rating" not in ctx.train:
            raise ConfigError("model kind autorec predicts ratings: map the rating column with "
                              "data.columns.rating.")
        matrix = RatingMatrix.from_ids(ctx.train["user"], ctx.train["item"], ctx.train["rating"], index)
    else:
        # Rebuilding a saved run: a same-shaped placeholder; load_state_dict brings the matrix.
        observed = torch.zeros(ctx.num_users, ctx.num_items, dtype=torch.bool)
        observed[0, 0] = True
        matrix = RatingMatrix(torch.zeros(ctx.num_users, ctx.num_items), observed, index)
    try:
        return AutoRec(matrix, based=p.based, hidden_sizes=p.hidden_sizes, encoder_activation=p.encoder_activation,
                       decoder_activation=p.decoder_activation, dropout=p.dropout, init_std=p.init_std, l2=p.l2,
                       rating_range="auto" if p.clip else None, cold_start=p.cold_start, persistent_data=True)
    except ValueError as exc:  # an unknown activation name
        raise ConfigError(f"model: {exc}") from None


register_model_kind("autorec", build_autorec, AutoRecParams,
                    "AutoRec rating autoencoder over rows of the training rating matrix", predicts_ratings=True,
                    check=check_autorec, memory=autorec_memory)

__all__ = ["AutoRecParams", "autorec_memory", "build_autorec", "check_autorec"]
