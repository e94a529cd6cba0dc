"""Interaction filters applied before a split: the k-core of the user x item graph.

:func:`k_core` keeps the interactions whose user and item both have at least ``k`` interactions
among the kept ones, RecBole 1.2.1's ``user_inter_num_interval: "[k,inf)"`` with
``item_inter_num_interval: "[k,inf)"`` (``Dataset._filter_by_inter_num``): every pass counts the
remaining interactions per user and per item, bans the users and the items below ``k`` from those
same counts, drops every interaction of a banned user or item, and repeats until a pass bans
nothing. The result is the unique largest set of users and items in which each one has ``k``
interactions with the others (removal only lowers counts, so the order of removal does not change
it); the number of passes is reported. Repeated (user, item) rows each count, as in RecBole.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True, eq=False)  # eq=False: a numpy mask has no single truth value.
class KCore:
    """``keep``: bool mask over the input rows; ``passes``: counting passes run (the last one bans
    nothing); ``users_dropped`` / ``items_dropped``: distinct ids of the input with no kept row."""

    keep: np.ndarray
    passes: int
    users_dropped: int
    items_dropped: int


def k_core(users: np.ndarray | pd.Series, items: np.ndarray | pd.Series, k: int) -> KCore:
    """The rows of the ``k``-core of the interactions ``(users[i], items[i])``.

    Args:
        users, items: ids of shape (N,) (any hashable dtype).
        k: the minimum number of interactions of every kept user and item (>= 1).

    Returns:
        :class:`KCore` with ``keep`` of shape (N,). Vectorised: each pass is two ``bincount``
        over the rows still kept.

    Example: with k = 2, rows (a, x), (a, y), (b, x), (c, y), (c, z): pass 1 bans user b and item
    z (one row each), which leaves c and x with one row; pass 2 bans them, which leaves a and y
    with one; pass 3 bans those, and pass 4 finds nothing left to ban: the 2-core is empty.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    user_codes, user_ids = pd.factorize(np.asarray(users))
    item_codes, item_ids = pd.factorize(np.asarray(items))
    rows = np.arange(len(user_codes))
    u, i = user_codes, item_codes
    passes = 0
    while True:
        passes += 1
        user_count = np.bincount(u, minlength=len(user_ids))
        item_count = np.bincount(i, minlength=len(item_ids))
        good = (user_count[u] >= k) & (item_count[i] >= k)
        if good.all():
            break
        rows, u, i = rows[good], u[good], i[good]
    keep = np.zeros(len(user_codes), dtype=bool)
    keep[rows] = True
    users_left = int(np.count_nonzero(np.bincount(u, minlength=len(user_ids))))
    items_left = int(np.count_nonzero(np.bincount(i, minlength=len(item_ids))))
    return KCore(keep, passes, len(user_ids) - users_left, len(item_ids) - items_left)


__all__ = ["KCore", "k_core"]
