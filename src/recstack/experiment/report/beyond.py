"""Beyond-accuracy figures of a run: what it recommends to its test users, not how often it hits.

For the top-``k`` lists of every test user (:func:`~.recommendations.top_k_items`, seen items
excluded):

* catalogue coverage@k = |{items in any user's top-k}| / |catalogue|;
* mean popularity of the recommended items = mean over all top-k slots of the item's training
  count c_i (users who had item i before the test split), beside the same mean over training
  interactions (sum c_i² / sum c_i: the popularity a random training interaction has) and over
  the catalogue (mean c_i);
* long-tail share = fraction of top-k slots on items outside the head, the most popular 20% of
  the catalogue, beside that fraction of training interactions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..saved_run import LoadedRun
from .recommendations import top_k_items, training_counts

HEAD_FRACTION = 0.2


@dataclass
class BeyondAccuracy:
    k: int
    users: np.ndarray                 # [U] encoded test users
    top: np.ndarray                   # [U, k] their top-k item ids (0: no item)
    coverage: dict[int, float]        # coverage@k' for each k' <= k of the config's ks
    mean_popularity: dict[str, float]  # "recommended", "interactions", "catalogue"
    tail_share: dict[str, float]       # "recommended", "interactions"
    train_counts: np.ndarray          # [V - 1] per catalogue item (id 1..V-1)
    recommended_counts: np.ndarray    # [V - 1] top-k slots per catalogue item


def beyond_accuracy(loaded: LoadedRun, users: np.ndarray, ks: list[int], k: int) -> BeyondAccuracy:
    """The figures above for ``users`` (encoded ids) at cut-off ``k`` (coverage at every k' in ``ks``, k' <= k)."""
    top = top_k_items(loaded, users, k)
    counts = training_counts(loaded)[1:]
    slots = top[top > 0]
    recommended = np.bincount(slots - 1, minlength=len(counts)).astype(np.float64)
    catalogue = max(len(counts), 1)
    coverage = {kk: float(len(np.unique(top[:, :kk][top[:, :kk] > 0])) / catalogue) for kk in sorted(set(ks)) if kk <= k}
    total = max(counts.sum(), 1.0)
    order = np.argsort(-counts, kind="stable")
    head = np.zeros(len(counts), dtype=bool)
    head[order[:int(np.ceil(HEAD_FRACTION * len(counts)))]] = True
    mean_popularity = {"recommended": float(counts[slots - 1].mean()) if len(slots) else float("nan"),
                       "interactions": float((counts ** 2).sum() / total),
                       "catalogue": float(counts.mean()) if len(counts) else float("nan")}
    tail_share = {"recommended": float(recommended[~head].sum() / max(recommended.sum(), 1.0)),
                  "interactions": float(counts[~head].sum() / total)}
    return BeyondAccuracy(k, np.asarray(users), top, coverage, mean_popularity, tail_share, counts, recommended)


__all__ = ["BeyondAccuracy", "HEAD_FRACTION", "beyond_accuracy"]
