"""Next-item answers from a bundle: a history of raw item ids (or a user's stored one) -> top-k.

The history path is generic: a bundle whose manifest has a "history" section holds a query
tower that maps ``[B, L]`` left-padded histories (candidate position + 1, 0 = pad) to
``[B, d]`` queries for the index (:class:`~recstack.models.history_tower.HistoryQueryTower`
for SASRec / GRU4Rec), the users' stored histories and a fallback ranking for an empty
history (popularity). Unknown ids are dropped and reported; a history longer than the
model's ``max_length`` keeps its latest items; the history's items are excluded from the
answer unless ``keep_history``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from ..core.errors import DataError
from ..core.id_lists import IdLists
from ..index.brute_force import stable_top_k

if TYPE_CHECKING:
    from .query import Bundle, SortedKeys

__all__ = ["HistoryRecommendation", "HistoryStore", "recommend_history"]


@dataclass
class HistoryStore:
    """Stored histories (rows by user key, candidate positions in time order), the [C]
    empty-history ranking and the model's ``max_length``."""

    users: "SortedKeys"
    lists: IdLists
    fallback: np.ndarray
    max_length: int


@dataclass
class HistoryRecommendation:
    items: list[Any]
    scores: list[float]
    dropped: list[Any] = field(default_factory=list)
    history_length: int = 0
    fallback: bool = False


def _rows(bundle: "Bundle", store: HistoryStore, histories: Sequence[Sequence[Any] | None],
          users: Sequence[Any] | None) -> tuple[list[np.ndarray], list[list[Any]]]:
    """Per query: the known candidate positions (time order) and the dropped raw ids."""
    out, dropped = [], []
    for r, history in enumerate(histories):
        if history is None:
            user = None if users is None else users[r]
            if user is None:
                raise DataError(f"query {r}: pass a history or a user id.")
            row = int(store.users.lookup(np.asarray([str(user)]))[0])
            pos = store.lists.row(row) if row >= 0 else np.zeros(0, dtype=np.int64)
            out.append(np.asarray(pos, dtype=np.int64))
            dropped.append([])
            continue
        pos = bundle._positions(list(history))
        dropped.append([history[i] for i in np.flatnonzero(pos < 0)])
        out.append(pos[pos >= 0].astype(np.int64))
    return out, dropped


@torch.no_grad()
def recommend_history(bundle: "Bundle", histories: Sequence[Sequence[Any] | None], k: int = 10,
                      users: Sequence[Any] | None = None, keep_history: bool = False
                      ) -> list[HistoryRecommendation]:
    """Top-k next items per query.

    Args:
        histories: per query, raw item ids oldest first, or None to use ``users[r]``'s stored
            history (an unknown user has an empty one).
        users: per query, the user id (read only where the history is None).
        keep_history: also return items of the history (default: excluded).

    Returns:
        one :class:`HistoryRecommendation` per query (``dropped``: the unknown ids).
    """
    store: HistoryStore | None = getattr(bundle, "history", None)
    if store is None:
        raise DataError("this bundle answers user queries, not histories (it has no history section); "
                        "export a next-item model (sasrec, gru4rec) to serve histories.")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be an integer >= 1; got {k!r}.")
    k = min(int(k), bundle.num_candidates)
    rows, dropped = _rows(bundle, store, histories, users)
    B = len(rows)
    lengths = np.fromiter((min(len(r), store.max_length) for r in rows), dtype=np.int64, count=B)
    # Padded to the longest history of this batch, not to max_length: the encoders count
    # positions from a row's first real item and treat padding as absent, so the queries are
    # the same, and a 50-item history costs half the attention of a 100-wide window.
    L = max(1, int(lengths.max()) if B else 1)
    padded = np.zeros((B, L), dtype=np.int64)
    for b, r in enumerate(rows):          # request-sized (B queries), not the catalogue
        if lengths[b]:
            padded[b, L - lengths[b]:] = r[-lengths[b]:] + 1
    empty = lengths == 0
    queries = bundle.query_tower(torch.from_numpy(padded))                       # [B, d]
    with warnings.catch_warnings():   # the memory-mapped embeddings are read-only; they are only read here
        warnings.simplefilter("ignore", UserWarning)
        table = torch.from_numpy(np.asarray(bundle.embeddings))
    scores = queries.float() @ table.T                                             # [B, C] brute force
    if empty.any():
        scores[torch.from_numpy(empty)] = torch.from_numpy(store.fallback).float()
    if not keep_history:
        flat = np.concatenate([r for r in rows]) if B else np.zeros(0, dtype=np.int64)
        which = np.repeat(np.arange(B), [len(r) for r in rows])
        scores[torch.from_numpy(which), torch.from_numpy(flat)] = -torch.inf
    top, ids = stable_top_k(scores, k)     # equal scores: lower candidate position first (as recommend)
    out = []
    for b in range(B):
        ok = torch.isfinite(top[b]).numpy()
        out.append(HistoryRecommendation(items=bundle.identifiers[ids[b].numpy()[ok]].tolist(),
                                         scores=top[b].numpy()[ok].tolist(), dropped=dropped[b],
                                         history_length=int(len(rows[b])), fallback=bool(empty[b])))
    return out
