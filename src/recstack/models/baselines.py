"""Non-neural retrieval baselines scored by the same FactorizedTopK as the neural models.

Each baseline is a :class:`recstack.Model` whose scores are a dot product of a query
embedding and a candidate embedding, so ``FactorizedTopK`` ranks it exactly like a
two-tower model (same tie rule, same masking, same exclusions):

* :class:`Popularity`: score_j = count_j (training interactions of item j), with query
  embedding [1] and candidate embedding [count_j (+ tie-break)].
* :class:`EASE` (Steck 2019): P = (XᵀX + λI)⁻¹, B = I - P·diag(1/diag(P)) (so diag B = 0),
  score_uj = x_u · B[:, j], with query embedding x_u (the user's binary training row, [V])
  and candidate embedding B[:, j] ([V]). Computed in float64 by default.

``model.fit(train)`` is the closed-form fit (no gradient steps); ``model.evaluate(test)``
runs FactorizedTopK over the catalogue given at construction. :func:`evaluate_retrieval`
evaluates any model exposing ``query_embeddings(batch)`` / ``candidate_embeddings(batch)``
(baselines, :class:`~recstack.models.two_tower.TwoTowerRetrieval`) under a chosen protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..layers.candidates import CandidateEmbeddings
from ..core.columns import Batch, Columns, as_columns
from ..core.errors import ConfigError, DataError, NotFittedError
from ..core.exclusions import Exclusions
from ..metrics.factorized_top_k import FactorizedTopK
from ..tasks.base import Task
from ..training.history import History
from ..training.model import Model


class ScoringTask(Task):
    """A metrics-only task: updates FactorizedTopK with (queries, positives) and returns 0."""

    def forward(self, query_embeddings: torch.Tensor, positive_embeddings: torch.Tensor,
                candidate_ids: torch.Tensor | None = None, query_keys: torch.Tensor | None = None,
                compute_metrics: bool = True, query_rows: torch.Tensor | None = None) -> torch.Tensor:
        """``query_rows``: see :meth:`FactorizedTopK.update_state` (queries [Q, d], one per user)."""
        if compute_metrics:
            for metric in self._metrics:
                metric.update_state(query_embeddings, positive_embeddings, true_candidate_ids=candidate_ids,
                                    query_keys=query_keys, query_rows=query_rows)
        return query_embeddings.new_zeros(())


def users_once(users: torch.Tensor, keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(distinct users [Q], rows [B]) with ``users == distinct[rows]`` when every user's rows share one
    query key (so each user can be embedded and scored once: FactorizedTopK's ``query_rows``); else None."""
    if keys is None:
        return None
    distinct, rows = torch.unique(users.long(), return_inverse=True)
    keys = keys.long().reshape(-1)
    key_of = torch.empty(distinct.shape[0], dtype=torch.long, device=keys.device)
    key_of[rows] = keys
    return (distinct, rows) if torch.equal(key_of[rows], keys) else None


def score_rows(task: ScoringTask, user_embeddings: Callable[[torch.Tensor], torch.Tensor], users: torch.Tensor,
               positive_embeddings: torch.Tensor, items: torch.Tensor, keys: torch.Tensor | None) -> torch.Tensor:
    """Update ``task``'s metrics with (user, item) rows, embedding each user once when the keys allow
    (:func:`users_once`): a query tower that reads only the user gives every row of a user the same
    embedding, and with d = V (EASE, item-KNN, Mult-VAE's encoder input) per-row embeddings would
    cost more than the ranking."""
    once = users_once(users, keys)
    if once is None:
        return task(user_embeddings(users), positive_embeddings, candidate_ids=items, query_keys=keys)
    distinct, rows = once
    return task(user_embeddings(distinct), positive_embeddings, candidate_ids=items, query_keys=keys, query_rows=rows)


class EmbeddingBaseline(Model):
    """Base class: a closed-form scorer written as query x candidate embeddings.

    Args:
        num_items: item id space V (e.g. ``StringLookup.vocabulary_size()``).
        candidate_ids: [C] item ids of the catalogue rows ranked by FactorizedTopK
            (default ``arange(num_items)``).
        exclude: exclusions for the "exclude seen" protocol (then ``query_key`` is needed).
        user_column, item_column: batch keys of the encoded user and item ids.
        query_key: batch key passed as FactorizedTopK ``query_keys`` (per-user metrics;
            default ``user_column``; None = one query per row).
        ks: FactorizedTopK cut-offs.
    """

    def __init__(self, num_items: int, candidate_ids: torch.Tensor | None = None,
                 exclude: Exclusions | None = None, user_column: str = "user_id", item_column: str = "title_id",
                 query_key: str | None = "user_id", ks: Sequence[int] = (1, 5, 10, 50, 100)):
        super().__init__()
        if exclude is not None and query_key is None:
            raise ConfigError("exclude= needs a query_key column (e.g. 'user_id').")
        self.num_items = int(num_items)
        ids = torch.arange(self.num_items) if candidate_ids is None else torch.as_tensor(candidate_ids).long()
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.num_items):
            raise DataError(f"candidate_ids must lie in [0, {self.num_items}); got range "
                            f"[{int(ids.min())}, {int(ids.max())}].")
        self.catalogue_ids = ids
        self.user_column, self.item_column, self.query_key = user_column, item_column, query_key
        self.task = ScoringTask(FactorizedTopK(self.catalogue_embeddings, candidate_ids=ids, ks=ks,
                                               exclude=exclude))

    # To implement --------------------------------------------------------------
    def _fit(self, users: torch.Tensor, items: torch.Tensor) -> None:
        raise NotImplementedError

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        """[B] encoded users -> [B, d] query embeddings."""
        raise NotImplementedError

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        """[B] encoded items -> [B, d] candidate embeddings."""
        raise NotImplementedError

    @property
    def is_fitted(self) -> bool:
        raise NotImplementedError

    # Shared ----------------------------------------------------------------------
    def fit(self, train: Columns | Any, *args: Any, **kwargs: Any) -> History:  # type: ignore[override]
        """Closed-form fit on the (user, item) pairs of ``train``; extra arguments are ignored.

        Returns a one-entry History (``fit_seconds``) so the call reads like ``Model.fit``.
        """
        import time

        data = as_columns(train)
        start = time.perf_counter()
        users, items = data[self.user_column].long(), data[self.item_column].long()
        if items.numel() == 0:
            raise DataError("fit() got no interactions.")
        if int(items.min()) < 0 or int(items.max()) >= self.num_items:
            raise DataError(f"item ids must lie in [0, {self.num_items}); got max {int(items.max())}.")
        self._fit(users, items)
        self.task.metrics[0].invalidate()
        history = History()
        history.append(1, {"fit_seconds": time.perf_counter() - start})
        self.history = history
        return history

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(train_columns) first.")

    def query_embeddings(self, batch: Batch) -> torch.Tensor:
        """[B, d] query embeddings of a batch (its ``user_column``)."""
        self._check_fitted()
        return self.user_embeddings(batch[self.user_column].long())

    def candidate_embeddings(self, batch: Batch) -> torch.Tensor:
        """[B, d] embeddings of the batch's positive items."""
        self._check_fitted()
        return self.item_embeddings(batch[self.item_column].long())

    def catalogue_embeddings(self) -> torch.Tensor:
        """[C, d] embeddings of the catalogue rows (FactorizedTopK's candidates)."""
        self._check_fitted()
        return self.item_embeddings(self.catalogue_ids)

    def scores(self, users: torch.Tensor) -> torch.Tensor:
        """[B, C] scores of encoded users against the catalogue rows."""
        return self.user_embeddings(users.long()) @ self.catalogue_embeddings().T

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        """Metrics only (:func:`score_rows`: each user of the batch embedded once)."""
        self._check_fitted()
        return score_rows(self.task, self.user_embeddings, batch[self.user_column].long(),
                          self.candidate_embeddings(batch), batch[self.item_column].long(),
                          batch[self.query_key] if self.query_key else None)


class Popularity(EmbeddingBaseline):
    """score(u, j) = count_j, the number of training interactions of item j.

    ``tie_break=True`` adds ``0.5 * (1 - j / V)`` so that equal counts rank by item id in
    the scores themselves; the order between different counts is unchanged. Metrics with
    candidate ids already order equal scores by catalogue position (the one tie rule,
    :mod:`recstack.metrics.factorized_top_k`), which over a catalogue in id order gives the
    same ranks; the tie-break makes every consumer of the scores agree (an index, a served
    list, in-batch ``TopKCategoricalAccuracy``, which has no ids and counts ties in the
    positive's favour as TFRS does).
    """

    def __init__(self, num_items: int, tie_break: bool = True, **kwargs: Any):
        super().__init__(num_items, **kwargs)
        self.tie_break = tie_break
        self.register_buffer("counts", torch.zeros(0))

    @property
    def is_fitted(self) -> bool:
        return self.counts.numel() == self.num_items

    def _fit(self, users: torch.Tensor, items: torch.Tensor) -> None:
        self.counts = torch.bincount(items, minlength=self.num_items).double()

    def item_scores(self) -> torch.Tensor:
        """[V] float64 item scores: counts (+ tie-break)."""
        self._check_fitted()
        if not self.tie_break:
            return self.counts
        return self.counts + 0.5 * (1.0 - torch.arange(self.num_items, dtype=torch.float64) / self.num_items)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return torch.ones(users.shape[0], 1, dtype=torch.float64)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        return self.item_scores()[items].unsqueeze(1)


def ease_weights(X: torch.Tensor, l2: float) -> torch.Tensor:
    """EASE item-item weights B [V, V] from a user x item matrix X [U, V] (float64).

    G = XᵀX + λI, P = G⁻¹, B = I - P / diag(P) (column j divided by P_jj), so diag(B) = 0.
    """
    if l2 <= 0:
        raise ConfigError(f"EASE needs l2 > 0 (it makes XᵀX + λI invertible); got {l2}.")
    X = X.double()
    gram = X.T @ X
    gram.diagonal().add_(float(l2))
    P = torch.linalg.inv(gram)
    B = -P / P.diagonal()[None, :]
    B.diagonal().zero_()
    return B


class EASE(EmbeddingBaseline):
    """EASE linear autoencoder (Steck 2019): score(u, j) = x_u · B[:, j].

    Args:
        num_items: V.
        num_users: rows of X (users outside [0, num_users) get an all-zero row).
        l2: λ of the closed form (tune it on validation data).
        dtype: dtype of the embeddings (float64 keeps near-equal scores ordered exactly).
    """

    def __init__(self, num_items: int, num_users: int, l2: float = 500.0, dtype: torch.dtype = torch.float64,
                 **kwargs: Any):
        super().__init__(num_items, **kwargs)
        self.num_users = int(num_users)
        self.l2 = float(l2)
        self.dtype = dtype
        self.register_buffer("X", torch.zeros(0))
        self.register_buffer("B", torch.zeros(0))

    @property
    def is_fitted(self) -> bool:
        return self.B.numel() == self.num_items ** 2

    def _fit(self, users: torch.Tensor, items: torch.Tensor) -> None:
        if int(users.min()) < 0 or int(users.max()) >= self.num_users:
            raise DataError(f"user ids must lie in [0, {self.num_users}); got max {int(users.max())}.")
        X = torch.zeros(self.num_users, self.num_items, dtype=torch.float64)
        X[users, items] = 1.0  # binary: repeated pairs count once
        self.X = X.to(self.dtype)
        self.B = ease_weights(X, self.l2).to(self.dtype)

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        known = (users >= 0) & (users < self.num_users)
        rows = self.X[users.clamp(0, self.num_users - 1)]
        return rows * known[:, None].to(rows.dtype)

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        return self.B.T[items]


QueryFn = Callable[[Batch], torch.Tensor]


@torch.no_grad()
def evaluate_retrieval(model: Any, data: Columns | Any, candidates: CandidateEmbeddings,
                       candidate_ids: torch.Tensor, *, positive_id: str = "title_id",
                       query_key: str | None = "user_id", exclude: Exclusions | None = None,
                       ks: Sequence[int] = (1, 5, 10, 50, 100), batch_size: int = 4096) -> dict[str, float]:
    """FactorizedTopK of any embedding model on ``data`` under one protocol.

    Args:
        model: exposes ``query_embeddings(batch) -> [B, d]`` and
            ``candidate_embeddings(batch) -> [B, d]`` (the batch positives).
        data: encoded test rows.
        candidates: [C, d] catalogue embeddings or a callable returning them.
        candidate_ids: [C] ids of the catalogue rows.
        positive_id: column of the positives' ids.
        query_key: column of query keys (per-user recall/NDCG; needed with ``exclude``).
        exclude: "exclude seen" lists (e.g. ``Exclusions.from_pairs(train users, train items)``).

    Returns:
        FactorizedTopK results (``factorized_top_k/...``).
    """
    columns = as_columns(data)
    metric = FactorizedTopK(candidates, candidate_ids=candidate_ids, ks=ks, exclude=exclude)
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        for batch in columns.batches(batch_size):
            metric.update_state(model.query_embeddings(batch), model.candidate_embeddings(batch),
                                true_candidate_ids=batch[positive_id],
                                query_keys=batch[query_key] if query_key else None)
    finally:
        if was_training:
            model.train()
    return metric.result()


__all__ = ["EASE", "EmbeddingBaseline", "Popularity", "ScoringTask", "ease_weights", "evaluate_retrieval"]
