"""The next-item protocols of a run, for every model kind, and the validation that selects a model.

A leave-one-out split (``split.method: leave-one-out``) holds out each user's last item for the
test and the one before it for validation. ``next-item`` ranks the held-out item among the
whole catalogue given the user's history: for the test, every earlier item (training and
validation, in time order); for validation, the training items. ``next-item-sampled`` ranks it
among sampled items only. The ranking rules are those of
:mod:`recstack.models.next_item_eval` (ties count against the held-out item; a non-finite
score of it is a miss), so every kind is compared on one protocol:

* sequential kinds (``score_items``) read the history's last ``max_length`` items;
* a kind with a ``history_query`` (EASE, popularity, two_tower with ``model.user_history``) turns
  the history's items into a query for its item embeddings (a history two-tower: its latest
  ``max_length`` items, as for a user unseen in training);
* other kinds (two-tower) score the user: their user x item scores (with the held-out row's
  timestamp when the user tower uses time).

The histories are :class:`~recstack.core.id_lists.IdLists` per user id, items in time order
(equal timestamps in split order): the run folder's histories.pt holds those before the test
split.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.columns import Columns
from ..core.errors import DataError
from ..core.id_lists import IdLists
from ..datasets.sampled_negatives import sample_negatives
from ..datasets.sequences import EvalSequences, targets_after
from ..models.next_item_eval import rank_metrics, sampled_ranks, target_ranks
from ..training.callbacks import Callback
from ..training.history import History
from ..training.loop import model_device
from ..training.model import Model
from .config import NextItemConfig
from .model_kinds import ModelKind
from .run_dir import RunDir

#: The prefix of the next-item metrics in a run's history (``val_next_item/ndcg_at_10``).
HISTORY_PREFIX = "next_item/"


def ordered_histories(parts: list[Columns], num_users: int) -> IdLists:
    """Per user id (rows 0 .. num_users - 1), the items of ``parts`` ordered by ``timestamp``
    (stable: equal timestamps keep the order of the parts and of their rows; without a timestamp
    column, that order). Unknown users (id 0) and unknown items are left out."""
    users = torch.cat([p["user"] for p in parts]).cpu().numpy().astype(np.int64)
    items = torch.cat([p["item"] for p in parts]).cpu().numpy().astype(np.int64)
    if all("timestamp" in p for p in parts):
        order = np.argsort(torch.cat([p["timestamp"] for p in parts]).cpu().numpy(), kind="stable")
    else:
        order = np.arange(users.shape[0])
    order = order[(users[order] > 0) & (items[order] > 0)]
    order = order[np.argsort(users[order], kind="stable")]
    indptr = np.zeros(int(num_users) + 1, dtype=np.int64)
    np.cumsum(np.bincount(users[order], minlength=int(num_users)), out=indptr[1:])
    return IdLists(indptr, items[order])


class HistoryScorer:
    """Scores of every item id (``[b, V]``, column 0 = unknown, never ranked) for rows of
    (user, history): the one rule of the next-item protocols and of ``recommend``.

    Args:
        model: a built model of ``kind`` (in eval mode while it scores).
        kind: its registered kind (for ``history_query``).
        num_items: V, the item id space.
    """

    def __init__(self, model: Model, kind: ModelKind, num_items: int):
        self.model, self.kind, self.num_items = model, kind, int(num_items)
        self.direct = callable(getattr(model, "score_items", None))
        # A kind may read histories in some configurations only (see the model-kinds contract).
        self.history_query = kind.history_query if getattr(model, "reads_histories", True) else None
        self._items: torch.Tensor | None = None

    @property
    def reads_histories(self) -> bool:
        """Whether the scores depend on the history (else on the user only)."""
        return self.direct or self.history_query is not None

    @property
    def max_length(self) -> int:
        """How many of a history's latest items the model reads (its whole history when it has no
        ``max_length``: those models read the id lists, not the padded rows)."""
        return int(getattr(self.model, "max_length", 1)) if self.direct else 1

    def sequences(self, histories: IdLists, users: Any, targets: Any) -> EvalSequences:
        """Eval rows of ``targets`` [E] after the whole stored history of ``users`` [E]."""
        return targets_after(histories, np.asarray(users), np.asarray(targets), self.max_length)

    @torch.no_grad()
    def __call__(self, users: torch.Tensor, history: torch.Tensor, seen: IdLists,
                 batch: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``users`` [b], ``history`` [b, L] (left-padded), ``seen`` [b] rows (every earlier item),
        ``batch``: the rows' columns (a time-aware user tower reads their timestamp)."""
        model = self.model
        device = model_device(model)
        if self.direct:
            return model.score_items(history.to(device))
        if self.history_query is not None:
            queries = self.history_query(model, seen)
        elif batch is not None and callable(getattr(model, "query_embeddings", None)):
            queries = model.query_embeddings({k: v.to(device) for k, v in batch.items()})
        else:
            queries = model.user_embeddings(users.to(device))
        items = self._item_table(device)
        return queries.to(device=items.device, dtype=items.dtype) @ items.T

    def _item_table(self, device: torch.device) -> torch.Tensor:
        if self._items is None:
            ids = torch.arange(self.num_items, device=device)
            self._items = torch.cat([self.model.item_embeddings(ids[i:i + 8192])
                                     for i in range(0, self.num_items, 8192)])
        return self._items


@torch.no_grad()
def evaluate_next_item(model: Model, kind: ModelKind, rows: Columns, histories: IdLists, protocol: str,
                       options: NextItemConfig, ks: list[int] | tuple[int, ...], num_items: int,
                       batch_size: int = 4096) -> dict[str, float]:
    """Mean HR@K, NDCG@K and MRR (``hr_at_K``, ``ndcg_at_K``, ``mrr``) of ``rows`` (``user``,
    ``item``: the held-out items) ranked after ``histories`` (per user id) under ``protocol``
    ("next-item" or "next-item-sampled", see :class:`~recstack.experiment.config.NextItemConfig`),
    plus ``rows``: how many were ranked (one per evaluated user under leave-one-out)."""
    ranks = next_item_ranks(model, kind, rows, histories, protocol, options, num_items, batch_size)
    out = {name: float(values.mean()) if values.size else math.nan
           for name, values in rank_metrics(ranks, ks).items()}
    out["rows"] = float(ranks.shape[0])
    return out


def next_item_ranks(model: Model, kind: ModelKind, rows: Columns, histories: IdLists, protocol: str,
                    options: NextItemConfig, num_items: int, batch_size: int = 4096) -> np.ndarray:
    """[E] float64 rank of each row's item (0 = first; inf = a miss on a non-finite score)."""
    scorer = HistoryScorer(model, kind, num_items)
    users = rows["user"].cpu()
    data = scorer.sequences(histories, users.numpy(), rows["item"].cpu().numpy())
    seen = data.seen()
    negatives = None
    if protocol == "next-item-sampled":
        weights = None
        if options.sampled_distribution == "popularity":
            weights = np.bincount(histories.ids, minlength=num_items).astype(np.float64)
        negatives = sample_negatives(data, num_items, options.sampled_negatives, weights=weights,
                                     exclude_seen=options.exclude_history, seed=options.sampled_seed)
    was_training = model.training
    model.eval()
    ranks = np.empty(data.num_rows, dtype=np.float64)
    try:
        for start in range(0, data.num_rows, batch_size):
            part = np.arange(start, min(start + batch_size, data.num_rows))
            batch = {k: v[start:part[-1] + 1] for k, v in rows.items()}
            part_seen = seen.take(part)
            scores = scorer(users[part], torch.from_numpy(data.history[part]), part_seen, batch)
            if negatives is None:
                targets = torch.from_numpy(data.target[part])
                exclude = part_seen if options.exclude_history else None
                ranks[part] = target_ranks(scores, targets, exclude).cpu().numpy()
            else:
                columns = torch.from_numpy(np.concatenate([data.target[part, None], negatives[part]], axis=1))
                columns = columns.to(scores.device)   # item ids: the columns gathered (ties: lower id first)
                ranks[part] = sampled_ranks(scores.gather(1, columns), columns).cpu().numpy()
    finally:
        if was_training:
            model.train()
    return ranks


class NextItemValidation(Callback):
    """Per-epoch next-item metrics on the validation item, and model selection on one of them.

    Every ``freq`` epochs ``evaluate()`` gives the validation metrics; they join the epoch's logs
    as ``val_next_item/<metric>`` (history.csv, plots) and are reported. With ``metric`` given, the
    best value's weights are kept (in memory and in ``best_path``, so a resumed run keeps them),
    and after ``patience`` validations without improvement (0: never) training stops.

    Args:
        evaluate: () -> {metric: value} on the validation split.
        freq: validate every ``freq`` epochs.
        report: (message) -> None, one line per validation.
        metric: the selection metric (``ndcg_at_10``), or None for metrics only.
        patience: validations without improvement before stopping (0: never stop early).
        best_path: where the best weights are written (None: memory only).
        prior: the history of the epochs before a resume (their validation values count).
    """

    def __init__(self, evaluate: Callable[[], dict[str, float]], freq: int, report: Callable[[str], None],
                 metric: str | None = None, patience: int = 0, best_path: Path | None = None,
                 prior: History | None = None):
        self.evaluate, self.freq, self.report = evaluate, int(freq), report
        self.metric, self.patience, self.best_path = metric, int(patience), best_path
        self.best: float | None = None
        self.best_epoch: int | None = None
        self.best_metrics: dict[str, float] = {}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.last_metrics: dict[str, float] = {}
        self.wait = 0
        if prior is not None and metric is not None:
            self._resume(prior)

    def _resume(self, prior: History) -> None:
        """Best value and patience count from the epochs already run; the weights from best_path."""
        values = prior.history.get(f"val_{HISTORY_PREFIX}{self.metric}", [])
        for epoch, value in zip(prior.epochs, values):
            if math.isnan(value):
                continue
            if self.best is None or value > self.best:
                self.best, self.best_epoch, self.wait = value, epoch, 0
            else:
                self.wait += 1
        if self.best_epoch is not None and self.best_path is not None and self.best_path.exists():
            state = torch.load(self.best_path, map_location="cpu", weights_only=True)
            if isinstance(state, dict) and state.get("epoch") == self.best_epoch:
                self.best_state = state["model"]
                self.best_metrics = dict(state.get("metrics", {}))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch % self.freq:
            return
        metrics = self.evaluate()
        self.last_metrics = metrics
        if logs is not None:
            logs.update({f"val_{HISTORY_PREFIX}{k}": v for k, v in metrics.items() if k != "rows"})
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if k != "rows")
        if self.metric is None:
            self.report(f"epoch {epoch}: validation next-item {shown}")
            return
        value = metrics.get(self.metric, math.nan)
        if self.best is None or value > self.best:
            self.best, self.best_epoch, self.best_metrics, self.wait = value, epoch, dict(metrics), 0
            self.best_state = copy.deepcopy({k: v.detach().cpu() for k, v in self.model.state_dict().items()})
            if self.best_path is not None:
                RunDir.save_tensors(self.best_path, {"epoch": epoch, "metrics": metrics, "model": self.best_state})
            self.report(f"epoch {epoch}: validation next-item {shown} (best {self.metric} so far)")
            return
        self.wait += 1
        self.report(f"epoch {epoch}: validation next-item {shown} (best {self.metric} {self.best:.4f} at epoch "
                    f"{self.best_epoch}; {self.wait} without improvement)")
        if self.patience and self.wait >= self.patience:
            self.model.stop_training = True
            self.report(f"early stopping after epoch {epoch}: {self.metric} has not improved for {self.wait} "
                        "validations")


def require_histories(histories: IdLists | None, where: str) -> IdLists:
    """``histories``, or a DataError saying that the run folder lacks them."""
    if histories is None:
        raise DataError(f"{where} needs the users' histories (histories.pt in the run folder), which this run "
                        "folder does not have: it was made by an older recstack; train it again.")
    return histories


__all__ = ["HISTORY_PREFIX", "HistoryScorer", "NextItemValidation", "evaluate_next_item", "next_item_ranks",
           "ordered_histories", "require_histories"]
