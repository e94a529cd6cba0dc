"""A next-item run folder (sasrec, gru4rec) as a serving bundle with a history query tower.

The bundle holds (all listed in its manifest, see :mod:`recstack.serving.export`):

* ``query_tower.json`` + weights: :class:`~recstack.models.history_tower.HistoryQueryTower`
  over the run's encoder, rebuilt on load from registered names (``history_query_tower``,
  ``sasrec_encoder`` / ``gru4rec_encoder``);
* the candidates: the catalogue's raw item ids (item id j at position j - 1) and their output
  embeddings, searched exactly by the index;
* ``history/``: each user's stored history (the run's histories.pt: items before the test
  split, in time order), ``max_length``, and the training popularity that ranks an empty
  history (counts; equal counts by lower item id, as ``recstack recommend``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import RecstackError
from ..models.history_tower import HistoryQueryTower
from .next_item import require_histories

__all__ = ["export_history_bundle"]


@torch.no_grad()
def export_history_bundle(serving: Any, loaded: Any, bundle_dir: Path) -> Path:
    """Write ``loaded`` (a run of a sequential kind) to ``bundle_dir`` as a next-item bundle."""
    model, pre, config = loaded.model, loaded.pre, loaded.config
    if getattr(model, "features", ()):
        raise RecstackError(f"model kind {config.model.kind!r} with per-position item features cannot be bundled "
                            "yet; export a model trained without model.features.")
    histories = require_histories(loaded.histories, f"export of model kind {config.model.kind!r}")
    catalogue = pre.catalogue()                                 # item ids 1..V-1
    embeddings = model.item_embeddings(catalogue).float()
    item_ids = np.asarray(pre.items.get_vocabulary()[1:], dtype=str)
    # rows of histories.pt are user ids (0 = unknown user, never stored); items as positions id - 1
    users = np.arange(1, histories.num_keys)
    lists = histories.take(users)
    popularity = torch.floor(model.popularity[1:]).float().numpy()  # training counts (tie-break: position)
    history = {"max_length": int(model.max_length), "user_field": config.data.columns.user,
               "users": np.asarray(pre.users.lookup_inverse(users), dtype=str),
               "indptr": lists.indptr, "items": lists.ids.astype(np.int64) - 1, "popularity": popularity}
    spec = serving.ServingSpec(query_tower=HistoryQueryTower(model.encoder), query_inputs="history",
                               kind=config.model.kind)
    result = serving.export(spec, bundle_dir, candidate_key=config.data.columns.item,
                            candidate_identifiers=item_ids, candidate_embeddings=embeddings, history=history,
                            extra={"run_dir": str(loaded.run.root), "experiment": config.name,
                                   "model_kind": config.model.kind})
    return Path(result)
