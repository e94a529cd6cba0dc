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

import torch

from ..core.columns import Columns
from ..core.errors import DataError
from ..core.exclusions import Exclusions
from ..training.model import Model
from .building import build_model, model_context
from .config import ExperimentConfig
from .config_files import load_config
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

    def test_columns(self) -> Columns:
        return Columns(self.run.load_tensors(self.run.test))


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Rebuild the model of a finished run from its folder (no data files needed)."""
    run = RunDir.open(Path(path), need=("config", "preprocessing", "model", "seen"))
    config = load_config(run.config)
    pre = Preprocessing.from_dict(run.read_json(run.preprocessing))
    test = run.load_tensors(run.test) if run.test.exists() else {}
    ctx = model_context(config, pre, None, "rating" in test, "weight" in test)
    model = build_model(config, ctx)
    state = run.load_tensors(run.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{run.model} does not match the model its config describes: {exc}") from None
    model.eval()
    labels = run.read_json(run.item_labels) if run.item_labels.exists() else None
    return LoadedRun(run, config, pre, model, run.load_seen(), labels)


@torch.no_grad()
def recommend(loaded: LoadedRun, user: str, k: int = 10, exclude_seen: bool = False) -> dict[str, Any]:
    """Top-``k`` items for a raw user id: {"user", "known", "items": [{"item", "score", "label"?}]}.

    An unknown user gets the unknown-user (cold start) embedding. Ties keep item-id order.
    """
    pre, model = loaded.pre, loaded.model
    index = pre.users([str(user)])
    known = bool(index[0] > 0)
    catalogue = pre.catalogue()
    scores = (model.user_embeddings(index) @ model.item_embeddings(catalogue).T)[0].double()
    if exclude_seen and known:
        u = int(index[0])
        if u < loaded.seen.num_keys:
            seen = loaded.seen.indices[loaded.seen.indptr[u]:loaded.seen.indptr[u + 1]]
            scores[seen - 1] = -math.inf  # catalogue position = item id - 1
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return {"user": str(user), "known": known, "items": _items(loaded, catalogue[order], scores[order])}


@torch.no_grad()
def similar(loaded: LoadedRun, item: str, k: int = 10) -> dict[str, Any]:
    """The ``k`` items whose embeddings have the highest cosine similarity to ``item``'s."""
    pre, model = loaded.pre, loaded.model
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


__all__ = ["LoadedRun", "load_run", "recommend", "similar"]
