"""Users' histories as padded item tables: what a history-reading user tower pools.

* :func:`latest_items_table`: per user id, the latest ``max_length`` training items (by timestamp
  when there is one, else by row order) as a ``[U, L]`` LongTensor, 0 = padding. The two-tower
  model keeps it as a buffer, so a saved run queries its users without the training data.
* :func:`padded_latest`: the same layout for :class:`~recstack.core.id_lists.IdLists` rows
  (ad-hoc histories, oldest first), for ``history_query`` and ``recommend --history``.

Neither loops over users in Python.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..core.id_lists import IdLists

__all__ = ["latest_items_table", "padded_latest"]


def _latest(users: np.ndarray, items: np.ndarray, order: np.ndarray, num_rows: int, max_length: int) -> np.ndarray:
    """[num_rows, max_length] int64: for each row key, the items of the last ``max_length`` entries of
    ``order`` (indices into users/items, oldest first) holding that key, latest first; 0 = padding."""
    order = order[np.argsort(users[order], kind="stable")]              # by user, time order kept
    keys = users[order]
    counts = np.bincount(keys, minlength=num_rows)
    ends = np.cumsum(counts)
    from_end = ends[keys] - 1 - np.arange(order.shape[0])                # 0 = the user's latest entry
    keep = from_end < max_length
    table = np.zeros((num_rows, max_length), dtype=np.int64)
    table[keys[keep], from_end[keep]] = items[order[keep]]
    return table


def latest_items_table(users: Any, items: Any, timestamps: Any, num_users: int, max_length: int) -> torch.Tensor:
    """[num_users, max_length] LongTensor: each user's latest ``max_length`` items, latest first, 0-padded.

    Args:
        users, items: [n] encoded ids of the training rows (0 = unknown: such rows are left out).
        timestamps: [n] interaction times, or None (row order is time order). Ties keep row order.
        num_users, max_length: the table's shape.
    """
    users = torch.as_tensor(users).cpu().numpy().astype(np.int64)
    items = torch.as_tensor(items).cpu().numpy().astype(np.int64)
    if timestamps is None:
        order = np.arange(users.shape[0])
    else:
        order = np.argsort(torch.as_tensor(timestamps).cpu().numpy(), kind="stable")
    order = order[(users[order] > 0) & (users[order] < num_users) & (items[order] > 0)]
    return torch.from_numpy(_latest(users, items, order, int(num_users), int(max_length)))


def padded_latest(histories: IdLists, max_length: int, num_items: int) -> torch.Tensor:
    """[R, max_length] LongTensor: each row's last ``max_length`` ids (rows are oldest first), latest
    first, 0-padded; ids outside [1, num_items) (unknown items) are left out."""
    rows, ids = histories.rows, histories.ids
    order = np.flatnonzero((ids > 0) & (ids < num_items))
    return torch.from_numpy(_latest(rows, ids, order, histories.num_rows, int(max_length)))
