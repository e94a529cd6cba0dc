"""The ``ials`` model kind: :class:`~recstack.models.ials.IALS` (implicit alternating least squares,
Rendle et al. 2022's formulation with frequency-scaled regularisation).

How the sweeps map onto a run: **one epoch is one sweep** (all users solved with the items fixed,
then all items with the users fixed), and ``training.epochs`` is the number of sweeps. The kind is
registered as trained (``gradient_trained=True``, the default), not as a closed form, because the
sweeps are iterations whose quality is worth watching and choosing: through ``Model.fit`` every
sweep gets what every epoch gets, the validation metrics in history.json (``val_*``, every
``training.validation_freq`` sweeps), checkpoints and ``train --resume`` (a sweep is
deterministic, so a resumed run ends with the same factors), model selection and early stopping
on the next-item protocols, and pruning in ``recstack tune``. A closed-form registration would
get one ``fit`` call and one validation, so the per-sweep curve would be lost (or run.py would
need a third training path). The model makes this work without touching the training loop: its
``training_data`` is one row, so an epoch is one batch, whose training step runs the sweep and
returns the objective L as a leaf tensor (the logged ``loss``); the factors get no gradient, so
the config's optimizer (built because the loop needs one) never changes them; SGD, the shipped
config's choice, keeps no state either. ``training.batch_size`` and ``shuffle`` play no part.

The number of sweeps is therefore ``training.epochs``, not a model key (one knob for one thing);
the initialisation is seeded by the run's ``seed`` like every kind's. ``history_query`` folds a
history in (the user solve with the item factors fixed), so ``recommend --history`` and the
next-item protocols score the history given.

Registered lazily from :data:`~recstack.experiment.model_kinds.MODEL_KINDS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..core.id_lists import IdLists
from ..training.model import Model
from .limits import MAX_WIDTH, WIDTH_WHY, MemoryEstimate, bound
from .model_kinds import ModelContext, register_model_kind

#: The bound of regularization_exp (Rendle et al. use 0 or 1; past 2 the weights overflow float32 quickly).
MAX_REGULARIZATION_EXP = 2.0


@dataclass
class IALSParams:
    """iALS (Rendle et al. 2022): ``embedding_dim`` d; ``regularization`` λ (> 0); ``unobserved_weight``
    α0 (>= 0), the weight of every user-item pair's squared score; ``regularization_exp`` ν in [0, 2]:
    λ_u = λ (|I_u| + α0 |I|)^ν (0: plain L2, 1: Rendle et al.'s frequency-scaled L2); ``init_std``:
    the factors' initial N(0, init_std²) (null: 0.1 / sqrt(d), Rendle et al.'s). Sweeps: ``training.epochs``."""

    embedding_dim: int = 128
    regularization: float = 0.02      # ials.yaml's, selected on MovieLens 100K validation
    unobserved_weight: float = 0.3
    regularization_exp: float = 1.0
    init_std: float | None = None


def check_ials(p: IALSParams) -> list[str]:
    problems = [bound("model.embedding_dim", p.embedding_dim, 1, MAX_WIDTH, WIDTH_WHY)]

    def finite(key: str, value: float) -> bool:
        if isinstance(value, (int, float)) and math.isfinite(value):
            return True
        problems.append(f"model.{key}: must be a finite number, got {value}")
        return False

    if finite("regularization", p.regularization) and p.regularization <= 0:
        problems.append(f"model.regularization: must be > 0 (it keeps every user's and item's system solvable), "
                        f"got {p.regularization}")
    if finite("unobserved_weight", p.unobserved_weight) and p.unobserved_weight < 0:
        problems.append(f"model.unobserved_weight: must be >= 0 (the weight of the unobserved pairs; Rendle et al. "
                        f"tune it around 0.1), got {p.unobserved_weight}")
    if finite("regularization_exp", p.regularization_exp) and not 0 <= p.regularization_exp <= MAX_REGULARIZATION_EXP:
        problems.append(f"model.regularization_exp: must be in [0, {MAX_REGULARIZATION_EXP:g}] (0: plain L2, 1: "
                        f"frequency-scaled), got {p.regularization_exp}")
    if p.init_std is not None and finite("init_std", p.init_std) and p.init_std <= 0:
        problems.append(f"model.init_std: must be > 0 (or null: 0.1 / sqrt(embedding_dim)), got {p.init_std}")
    return [x for x in problems if x]


def ials_memory(ctx: ModelContext, p: IALSParams) -> MemoryEstimate:
    """Float32 user and item factors (held up to three times: the factors, a solved copy, optimizer
    state), the interactions in CSR form by user and by item (int64, with the padded chunk plans),
    and a sweep's two chunk workspaces."""
    from ..models.ials import CHUNK_ELEMENTS

    rows = ctx.num_users + ctx.num_items
    edges = ctx.train["item"].numel() if ctx.train is not None else 0
    return MemoryEstimate(3 * 4 * rows * p.embedding_dim + 4 * 8 * edges + 3 * 4 * CHUNK_ELEMENTS,
                          f"{rows:,} x {p.embedding_dim} float32 factors and {edges:,} interactions by user and item")


def build_ials(ctx: ModelContext, p: IALSParams) -> Model:
    from ..models.ials import IALS

    users = items = None
    if ctx.train is not None:   # a saved run is rebuilt without its interactions: it scores from its factors
        users, items = ctx.train["user"], ctx.train["item"]
    return IALS(ctx.num_users, ctx.num_items, embedding_dim=p.embedding_dim, regularization=p.regularization,
                unobserved_weight=p.unobserved_weight, regularization_exp=p.regularization_exp, init_std=p.init_std,
                users=users, items=items, catalogue=ctx.catalogue, ks=ctx.ks, exclude=ctx.exclude,
                per_user_metrics=ctx.validation_protocol == "exclude-seen")


def ials_history_query(model: Model, histories: IdLists) -> torch.Tensor:
    """[B, d] the histories' user solves with the item factors fixed (iALS fold-in)."""
    return model.fold_in(histories)  # type: ignore[operator]


register_model_kind("ials", build_ials, IALSParams,
                    "iALS matrix factorisation by alternating least squares (one sweep per epoch; Rendle et al. "
                    "2022's regularisation)", check=check_ials, memory=ials_memory, history_query=ials_history_query)

__all__ = ["IALSParams", "build_ials", "check_ials", "ials_history_query"]
