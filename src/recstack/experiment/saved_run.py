"""A finished run folder, loaded back: its model, preprocessing and seen lists; recommend and similar.

Nothing but the run folder is read (no data files): ``config.yaml`` rebuilds the model through its
registered kind, ``model.pt`` fills it, ``preprocessing.json`` maps raw ids.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.columns import Columns
from ..core.errors import ConfigError, DataError, UsageError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from ..training.model import Model
from .building import build_model, model_context
from .config import ExperimentConfig
from .config_files import load_config
from .model_kinds import MODEL_KINDS
from .next_item import HistoryScorer, require_histories
from .preprocessing import Preprocessing
from .run_dir import RunDir


@dataclass
class LoadedRun:
    run: RunDir
    config: ExperimentConfig
    pre: Preprocessing
    model: Model
    seen: Exclusions
    labels: list[str] | None
    histories: IdLists | None = None   # histories.pt: items per user before the test split, in time order

    def test_columns(self) -> Columns:
        return load_test_columns(self.run, self.pre)


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Rebuild the model of a finished run from its folder (no data files needed).

    Every file is checked as it is read: a damaged or foreign file is a DataError naming it, never
    a traceback from deep inside torch or the feature layers.
    """
    run = RunDir.open(Path(path), need=("config", "preprocessing", "model", "seen"))
    config = load_config(run.config)
    pre = load_preprocessing(run)
    test = run.load_tensor_dict(run.test) if run.test.exists() else {}
    histories = run.load_histories(pre.num_users, pre.num_items)
    ctx = model_context(config, pre, None, "rating" in test, "weight" in test, histories=histories)
    try:
        model = build_model(config, ctx)
    except ConfigError as exc:  # e.g. a preprocessing.json claiming more ids than memory holds
        raise DataError(f"{run.root}: the model described by config.yaml and preprocessing.json cannot be "
                        f"built: {exc}") from None
    state = run.load_tensor_dict(run.model)
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        raise DataError(f"{run.model} does not match the model its config describes: {reason}") from None
    model.eval()
    return LoadedRun(run, config, pre, model, _load_seen(run, pre), _load_labels(run, pre), histories)


def load_preprocessing(run: RunDir) -> Preprocessing:
    """The run's fitted preprocessing.json; a damaged or foreign file is a DataError."""
    data = run.read_json(run.preprocessing, expect=dict)
    try:
        return Preprocessing.from_dict(data)
    except DataError as exc:
        raise DataError(f"{run.preprocessing}: {exc}") from None
    except (ConfigError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"{run.preprocessing} is not a valid recstack preprocessing file ({type(exc).__name__}: "
                        f"{exc}); the run folder is damaged.") from None


def load_test_columns(run: RunDir, pre: Preprocessing) -> Columns:
    """test.pt: the encoded test split, with user and item ids inside the run's vocabularies."""
    test = run.load_tensor_dict(run.test, ("user", "item", "query_key"))
    try:
        columns = Columns(test)
        for name, size in (("user", pre.num_users), ("item", pre.num_items)):
            ids = columns[name]
            if ids.dtype != torch.long or ids.ndim != 1 or (len(ids) and (ids.min() < 0 or ids.max() >= size)):
                raise DataError(f"{run.test}: column {name!r} must hold ids in [0, {size}) (int64, 1-D); the run "
                                "folder is damaged.")
    except DataError:
        raise
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(f"{run.test} is not a valid encoded test split ({exc}); the run folder is damaged.") from None
    return columns


def _load_seen(run: RunDir, pre: Preprocessing) -> Exclusions:
    seen = run.load_seen()
    ids = seen.ids
    if seen.num_keys > pre.num_users or (len(ids) and (ids.min() < 1 or ids.max() >= pre.num_items)):
        raise DataError(f"{run.seen} lists users or items outside the run's vocabularies ({pre.num_users} users, "
                        f"{pre.num_items} items); the run folder is damaged.")
    return seen


def _load_labels(run: RunDir, pre: Preprocessing) -> list[str] | None:
    if not run.item_labels.exists():
        return None
    labels = run.read_json(run.item_labels, expect=list)
    if len(labels) != pre.num_items or not all(isinstance(x, str) for x in labels):
        raise DataError(f"{run.item_labels} must list one text per item id ({pre.num_items}); the run folder is "
                        "damaged.")
    return labels


@torch.no_grad()
def recommend(loaded: LoadedRun, user: str | None = None, k: int = 10, exclude_seen: bool = False,
              history: list[str] | None = None, keep_history: bool = False) -> dict[str, Any]:
    """Top-``k`` items for a raw user id, or for an ad-hoc ``history`` of raw item ids (oldest first).

    Returns ``{"user" | "history", "known", "items": [{"item", "score", "label"?}], ...}``; ties keep
    item-id order.

    * ``user`` of a run whose kind reads histories (sasrec, gru4rec, transitions): the user's stored
      history (the items before the test split, histories.pt) is ranked after; the history's items
      are left out of the result unless ``keep_history``. An unknown user has an empty history
      (popularity). Other kinds score the user's embedding (an unknown user gets the unknown-user,
      cold-start embedding) and leave out the user's earlier items only with ``exclude_seen``.
    * ``history`` (kinds that read histories: the sequential ones, EASE, popularity, multvae, two_tower
      with ``model.user_history``, which queries as for a user unseen in training): ids not in the
      run's catalogue are dropped and listed under ``"unknown"`` (``"history"`` lists the ones used;
      ``"known"`` is False when none is left: the ranking of an empty history); the used ones are
      left out of the result unless ``keep_history``.
    """
    pre, model = loaded.pre, loaded.model
    kind = MODEL_KINDS.get(loaded.config.model.kind)
    scorer = HistoryScorer(model, kind, pre.num_items)
    if (user is None) == (history is None):
        raise UsageError("recommend takes a user id or a history, not both (nor neither).")
    if history is not None:
        if not scorer.reads_histories:
            raise UsageError(f"this {kind.name!r} run scores users, not histories: recommend --history needs a "
                             "kind that reads them (sasrec, gru4rec, transitions, ease, popularity, multvae, or "
                             "two_tower trained with model.user_history); use --user.")
        raw = [str(x) for x in history]
        ids = pre.items(raw)
        unknown = [r for r, i in zip(raw, ids.tolist()) if i == 0]
        lists = IdLists.from_lists([ids[ids > 0]])
        scores = _history_scores(scorer, lists, torch.zeros(1, dtype=torch.long))
        out: dict[str, Any] = {"history": [r for r, i in zip(raw, ids.tolist()) if i > 0],
                               "known": len(unknown) < len(raw), "unknown": unknown}
        excluded = None if keep_history else lists.row(0)
    else:
        index = pre.users([str(user)])
        known = bool(index[0] > 0)
        out = {"user": str(user), "known": known}
        if kind.sequential:
            stored = require_histories(loaded.histories, f"recommend for model kind {kind.name!r}")
            lists = stored.take(index.numpy())
            scores = _history_scores(scorer, lists, index)
            out["history_length"] = int(lists.counts[0])
            excluded = None if keep_history and not exclude_seen else lists.row(0)
        else:
            scores = (model.user_embeddings(index) @ model.item_embeddings(pre.catalogue()).T)[0].double()
            scores = torch.cat([scores.new_full((1,), -math.inf), scores])   # id 0 (unknown) first, as above
            u = int(index[0])
            excluded = None
            if exclude_seen and known and u < loaded.seen.num_keys:
                excluded = loaded.seen.row(u)
    if excluded is not None and len(excluded):
        scores[torch.from_numpy(excluded)] = -math.inf
    catalogue = pre.catalogue()
    scores = scores[1:]                                   # catalogue position = item id - 1
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    out["items"] = _items(loaded, catalogue[order], scores[order])
    return out


def _history_scores(scorer: HistoryScorer, lists: IdLists, users: torch.Tensor) -> torch.Tensor:
    """[V] float64 scores of every item id (0 = unknown) after the one history of ``lists``."""
    rows = scorer.sequences(lists, np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.int64))
    scores = scorer(users, torch.from_numpy(rows.history), lists)[0].double().cpu()
    if not bool(torch.isfinite(scores[1:]).all()):
        raise DataError("the model gave non-finite scores for this history; the run's weights are damaged.")
    return scores


@torch.no_grad()
def similar(loaded: LoadedRun, item: str, k: int = 10) -> dict[str, Any]:
    """The ``k`` items whose embeddings have the highest cosine similarity to ``item``'s."""
    pre, model = loaded.pre, loaded.model
    if not callable(getattr(model, "item_embeddings", None)):
        raise UsageError(f"model kind {loaded.config.model.kind!r} has no item embeddings to compare; similar needs "
                         "an embedding model (e.g. sasrec, gru4rec, two_tower).")
    index = int(pre.items([str(item)])[0])
    if index == 0:
        vocab = pre.items.get_vocabulary()[1:]
        raise DataError(f"item {item!r} is not in the catalogue of this run ({len(vocab)} items, e.g. "
                        f"{', '.join(map(repr, vocab[:5]))}).")
    catalogue = pre.catalogue()
    emb = torch.nn.functional.normalize(model.item_embeddings(catalogue).double(), dim=1)
    scores = emb @ emb[index - 1]
    scores[index - 1] = -math.inf
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return {"item": str(item), "items": _items(loaded, catalogue[order], scores[order])}


def _items(loaded: LoadedRun, ids: torch.Tensor, scores: torch.Tensor) -> list[dict[str, Any]]:
    names = loaded.pre.items.lookup_inverse(ids)
    out = []
    for i, name, score in zip(ids.tolist(), names.tolist(), scores.tolist()):
        entry: dict[str, Any] = {"item": str(name), "score": float(score)}
        if loaded.labels is not None and loaded.labels[i] and loaded.labels[i] != name:
            entry["label"] = loaded.labels[i]
        out.append(entry)
    return out


__all__ = ["LoadedRun", "load_preprocessing", "load_run", "load_test_columns", "recommend", "similar"]
