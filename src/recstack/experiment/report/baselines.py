"""The popularity baseline on a run's own split, for a run whose metrics.json has none.

A run that evaluated its baselines itself records them in metrics.json (``baselines``), and
the report uses those. For older runs the report recomputes popularity from the run folder
alone: item counts from seen.pt (one per user who had the item before the test split), scored
under the run's protocols on the run's test rows, exactly as the ``popularity`` kind is
evaluated (same tie rule: equal counts rank by item id). The counts are of (user, item) pairs, so with ``data.duplicates: keep-all`` a
repeated rating counts once here (the popularity kind counts rows); the report says which
figures it shows.

Popularity ranks every query's candidates in one fixed order, so its ranks need no scoring:
with ``pos[j]`` the position of item j in that order (counts descending, ties by id), a test
row (u, i) ranks ``pos[i]`` under all-items and ``pos[i] - |{j seen by u : pos[j] < pos[i]}|``
under exclude-seen (the seen items ahead of it are removed). One sort and one binary search
per row: milliseconds, where scoring the catalogue for 20,000 rows takes seconds. The metrics
are then computed from the ranks by the same function FactorizedTopK uses.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch

from ...core.columns import Columns
from ...core.id_lists import IdLists
from ...metrics.factorized_top_k import metrics_from_ranks
from ..config import NEXT_ITEM_PROTOCOLS
from ..evaluation import evaluate_run
from ..model_kinds import MODEL_KINDS, PopularityParams
from ..building import model_context
from ..saved_run import LoadedRun
from ..schema import ModelConfig

POPULARITY = "popularity"


def popularity_ranks(counts: np.ndarray, users: np.ndarray, items: np.ndarray,
                     seen: IdLists | None) -> np.ndarray:
    """[N] 0-based ranks of test rows (``users``, ``items`` [N]) under the fixed order of
    ``counts`` [V] (id 0, the unknown item, is never a candidate), with each user's ``seen``
    items removed from the ranking when given (the positive itself never is)."""
    catalogue = np.arange(1, len(counts))
    order = catalogue[np.argsort(-counts[1:], kind="stable")]
    pos = np.empty(len(counts), dtype=np.int64)
    pos[order] = np.arange(len(order))
    pos[0] = len(order)
    ranks = pos[items]
    if seen is not None and len(seen.ids):
        rows, ids = seen.pairs()
        span = np.int64(len(counts) + 1)
        keys = np.sort(rows * span + pos[ids])          # per user, the positions of its seen items, sorted
        ahead = np.searchsorted(keys, users * span + ranks, side="left") - np.searchsorted(keys, users * span,
                                                                                          side="left")
        ranks = ranks - ahead
    return ranks


def recompute_popularity(loaded: LoadedRun) -> dict[str, dict[str, float]]:
    """``{protocol: metrics}`` of the popularity baseline fitted on the run's seen items and
    evaluated on its test split under the run's protocols (next-item protocols need histories.pt)."""
    config = dataclasses.replace(loaded.config, model=ModelConfig(POPULARITY, PopularityParams()))
    protocols = [p for p in config.evaluation.protocols if p not in NEXT_ITEM_PROTOCOLS or loaded.histories is not None]
    test = loaded.test_columns()
    counts = np.bincount(loaded.seen.ids, minlength=loaded.pre.num_items).astype(np.float64)
    out: dict[str, dict[str, float]] = {}
    users, items = test["user"].numpy(), test["item"].numpy()
    for protocol in [p for p in protocols if p in ("all-items", "exclude-seen")]:
        per_user = protocol == "exclude-seen"
        ranks = popularity_ranks(counts, users, items, loaded.seen if per_user else None)
        out[protocol] = metrics_from_ranks(torch.from_numpy(ranks), torch.ones(len(ranks), dtype=torch.float64),
                                           test["query_key"] if per_user else None, config.evaluation.ks,
                                           "factorized_top_k")
    protocols = [p for p in protocols if p in NEXT_ITEM_PROTOCOLS]
    if not protocols:
        return out
    ctx = model_context(config, loaded.pre, None, False, False, histories=loaded.histories)
    model = MODEL_KINDS.get(POPULARITY).builder(ctx, config.model.params)
    users, items = loaded.seen.pairs()
    model.fit(Columns({"user": torch.from_numpy(users), "item": torch.from_numpy(items),
                       "query_key": torch.from_numpy(users)}))
    model.eval()
    result: dict[str, Any] = evaluate_run(config, model, test, loaded.pre, loaded.seen, protocols, with_loss=False,
                                          histories=loaded.histories)
    return {**out, **result["protocols"]}


__all__ = ["POPULARITY", "popularity_ranks", "recompute_popularity"]
