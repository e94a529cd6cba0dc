"""A weighted blend of retrieval models' scores, written as one dot product.

:class:`ScoreEnsemble` holds M fitted-or-not member models, each of which scores a user by a dot
product (``user_embeddings(users) [B, d_m]`` · ``item_embeddings(items) [B, d_m]``). Its score is

    score(u, j) = Σ_m  w_m · s_m(u, j) / σ_m,

with w_m the member's weight and σ_m the standard deviation of the member's scores over
(up to ``scale_users``) training users × the catalogue, measured once after the members are
fitted. Dividing by σ_m puts members with very different score ranges on one scale (EASE's
scores are O(0.1), Mult-VAE's logits O(1-10)), so that a weight says how much a member counts and
one search range suits every member.

The blend is still a dot product, of concatenated embeddings:

    query(u) = [w_1/σ_1 · q_1(u), ..., w_M/σ_M · q_M(u)]     [B, Σ d_m]
    item(j)  = [c_1(j), ..., c_M(j)]                          [B, Σ d_m]

so FactorizedTopK ranks it exactly like any other model (same tie rule, same masking, same
exclusions) and ``recommend``/``similar`` work unchanged. A per-user constant added to a
member's scores (Mult-VAE's log-softmax normaliser) does not change any user's ranking, so raw
logits blend correctly.

Members are trained by ``fit`` with one ``trainer(member, train, reporter)`` callable each
(default: the member's own closed-form ``fit(train)``); the experiment layer passes trainers that
run each member's own optimizer and epochs, and the ``reporter`` it hands to ``fit`` (its progress
display, passed through untouched; None when nobody watches).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..core.columns import Columns, as_columns
from ..core.errors import ConfigError, DataError
from ..training.history import History
from ..training.model import Model
from .baselines import EmbeddingBaseline

#: ``trainer(member, train, reporter)``: fits one member on the training rows (``reporter``: what
#: ``ScoreEnsemble.fit`` was given, for the trainer's own progress display; may be None).
Trainer = Callable[[Model, Columns, Any], None]


def _closed_form(member: Model, train: Columns, reporter: Any = None) -> None:
    member.fit(train)


class ScoreEnsemble(EmbeddingBaseline):
    """score(u, j) = Σ_m w_m · s_m(u, j) / σ_m over member models (see the module docstring).

    Args:
        members: M models exposing ``user_embeddings`` / ``item_embeddings``.
        weights: M non-negative weights w_m, at least one positive.
        num_items: item id space V; ``candidate_ids`` the catalogue rows (default all V ids).
        trainers: one ``trainer(member, train, reporter)`` per member (default: ``member.fit(train)``).
        names: labels of the members (history keys ``<name>_seconds``; default member_0, ...).
        scale_users: how many training users (the lowest ids) σ_m is measured over.
        Other arguments as :class:`~recstack.models.baselines.EmbeddingBaseline`.

    Example::

        ensemble = ScoreEnsemble([ease, ials], [1.0, 0.5], num_items=V)
        ensemble.fit(train)             # fits both, then measures σ_1, σ_2
        ensemble.scores(users)          # [B, V] = 1.0 · s_ease/σ_1 + 0.5 · s_ials/σ_2
    """

    def __init__(self, members: Sequence[Model], weights: Sequence[float], num_items: int,
                 trainers: Sequence[Trainer] | None = None, names: Sequence[str] | None = None,
                 scale_users: int = 1024, **kwargs: Any):
        super().__init__(num_items, **kwargs)
        if len(members) < 1:
            raise ConfigError("an ensemble needs at least one member model.")
        if len(weights) != len(members):
            raise ConfigError(f"an ensemble needs one weight per member: {len(members)} members, {len(weights)} weights.")
        w = torch.tensor([float(x) for x in weights], dtype=torch.float64)
        if not bool(torch.isfinite(w).all()) or bool((w < 0).any()) or not bool((w > 0).any()):
            raise ConfigError(f"ensemble weights must be finite, >= 0 and not all 0; got {w.tolist()}.")
        if trainers is not None and len(trainers) != len(members):
            raise ConfigError(f"an ensemble needs one trainer per member: {len(members)} members, "
                              f"{len(trainers)} trainers.")
        if scale_users < 1:
            raise ConfigError(f"scale_users must be >= 1; got {scale_users}.")
        self.members = torch.nn.ModuleList(members)
        self.member_names = list(names) if names is not None else [f"member_{i}" for i in range(len(members))]
        self.trainers: list[Trainer] = list(trainers) if trainers is not None else [_closed_form] * len(members)
        self.scale_users = int(scale_users)
        self.register_buffer("weights", w)
        self.register_buffer("scales", torch.zeros(len(members), dtype=torch.float64))  # 0 = not fitted

    @property
    def is_fitted(self) -> bool:
        return bool((self.scales > 0).all())

    @property
    def query_factors(self) -> torch.Tensor:
        """[M] w_m / σ_m: what each member's query embedding is multiplied by."""
        self._check_fitted()
        return self.weights / self.scales

    def fit(self, train: Columns | Any, *args: Any, reporter: Any = None, **kwargs: Any) -> History:  # type: ignore[override]
        """Fit every member with its trainer, then measure σ_m. Returns a one-entry History with
        ``fit_seconds`` and ``<member>_seconds``. ``reporter`` goes to each trainer untouched."""
        data = as_columns(train)
        start = time.perf_counter()
        logs: dict[str, float] = {}
        for name, member, trainer in zip(self.member_names, self.members, self.trainers):
            t0 = time.perf_counter()
            trainer(member, data, reporter)
            logs[f"{name}_seconds"] = time.perf_counter() - t0
        self.scales.copy_(self.measure_scales(data[self.user_column].long()))
        self.task.metrics[0].invalidate()
        history = History()
        history.append(1, {"fit_seconds": time.perf_counter() - start, **logs})
        self.history = history
        return history

    @torch.no_grad()
    def measure_scales(self, users: torch.Tensor) -> torch.Tensor:
        """[M] σ_m: the standard deviation of each member's scores over the lowest ``scale_users``
        distinct ``users`` × the catalogue. A non-finite or constant member is an error (a diverged
        or empty member must not pass as a blend)."""
        distinct = torch.unique(users)[: self.scale_users]
        scales = []
        for name, member in zip(self.member_names, self.members):
            member.eval()
            s = (member.user_embeddings(distinct).double() @ member.item_embeddings(self.catalogue_ids).double().T)
            if not bool(torch.isfinite(s).all()):
                raise DataError(f"ensemble member {name!r} gives non-finite scores after fitting: it diverged; "
                                "lower its optimizer.learning_rate or set its training.clip_grad_norm.")
            sigma = float(s.std())
            if not sigma > 0:
                raise DataError(f"ensemble member {name!r} gives every user and item the same score after "
                                "fitting; it cannot rank, so the blend would ignore it: check its config.")
            scales.append(sigma)
        return torch.tensor(scales, dtype=torch.float64)

    def _dtype(self) -> torch.dtype:
        dtype = torch.float32
        for member in self.members:
            for tensor in (*member.parameters(), *member.buffers()):
                if tensor.is_floating_point():
                    dtype = torch.promote_types(dtype, tensor.dtype)
        return dtype

    def combine_queries(self, queries: Sequence[torch.Tensor]) -> torch.Tensor:
        """[B, Σ d_m] the blend's query from each member's query [B, d_m] (scaled by w_m/σ_m)."""
        factors = self.query_factors
        dtype = self._dtype()
        return torch.cat([q.to(dtype) * float(f) for q, f in zip(queries, factors)], dim=1)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return self.combine_queries([member.user_embeddings(users) for member in self.members])

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        dtype = self._dtype()
        return torch.cat([member.item_embeddings(items).to(dtype) for member in self.members], dim=1)


__all__ = ["ScoreEnsemble", "Trainer"]
