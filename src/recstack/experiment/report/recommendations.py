"""Top-k lists of a loaded run for many users at once, by the rule ``recstack recommend`` uses.

Sequential kinds (sasrec, gru4rec, transitions) rank the items after each user's stored history
and never return a history item; the other kinds score the user's embedding against the
catalogue with the user's items from before the test split removed (``--exclude-seen``). Ties
keep item-id order (a stable descending sort), as everywhere in recstack.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..model_kinds import MODEL_KINDS
from ..next_item import HistoryScorer
from ..saved_run import LoadedRun


@torch.no_grad()
def top_k_items(loaded: LoadedRun, users: np.ndarray, k: int, batch_size: int = 512) -> np.ndarray:
    """``[U, k]`` int64 item ids (1..V-1) of each user's top-``k``; 0 where fewer than ``k`` items
    can be recommended. ``users``: ``[U]`` encoded user ids of the run's vocabulary.

    Scores are computed ``batch_size`` users at a time: ``[b, V]`` floats, never ``[U, V]``."""
    pre, model = loaded.pre, loaded.model
    kind = MODEL_KINDS.get(loaded.config.model.kind)
    users = np.asarray(users, dtype=np.int64)
    out = np.zeros((len(users), k), dtype=np.int64)
    sequential = kind.sequential and loaded.histories is not None
    scorer = HistoryScorer(model, kind, pre.num_items) if sequential else None
    catalogue = pre.catalogue()
    items = None if sequential else model.item_embeddings(catalogue).double()
    for start in range(0, len(users), batch_size):
        chunk = users[start:start + batch_size]
        index = torch.from_numpy(chunk)
        if scorer is not None:
            lists = loaded.histories.take(chunk)
            rows = scorer.sequences(lists, np.arange(len(chunk)), np.ones(len(chunk), dtype=np.int64))
            scores = scorer(index, torch.from_numpy(rows.history), lists).double().cpu()[:, 1:]
            excluded = lists
        else:
            scores = model.user_embeddings(index).double() @ items.T
            excluded = loaded.seen.take(chunk)   # users past the seen lists: nothing to exclude
        rows_, ids = excluded.pairs()
        keep = ids > 0
        scores[torch.from_numpy(rows_[keep]), torch.from_numpy(ids[keep] - 1)] = -math.inf
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
        finite = torch.isfinite(torch.gather(scores, 1, order))
        top = (order + 1).masked_fill(~finite, 0)
        out[start:start + len(chunk), :top.shape[1]] = top.numpy()
    return out


def training_counts(loaded: LoadedRun) -> np.ndarray:
    """``[V]`` float64: for each item id, how many users had it before the test split (seen.pt,
    one count per (user, item) pair; id 0, the unknown item, is 0)."""
    ids = loaded.seen.ids
    return np.bincount(ids[ids > 0], minlength=loaded.pre.num_items).astype(np.float64)


__all__ = ["top_k_items", "training_counts"]
