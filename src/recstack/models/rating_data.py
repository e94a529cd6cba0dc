"""Explicit-rating data for rating-prediction models: id mappings and the rating matrix.

A ratings table (one row per (user, item, rating)) becomes

* a :class:`RatingIndex`: raw user/item ids <-> dense indices 0..n-1 (sorted raw ids, so
  the mapping does not depend on row order or on how the table was split);
* a :class:`RatingMatrix`: the dense ``[num_users, num_items]`` matrix ``R`` with
  ``R[u, i]`` the rating and 0 where nothing was observed, plus the boolean ``observed``
  mask (a rating of 0 would otherwise be indistinguishable from "missing");
* :class:`~recstack.Columns` of encoded ``(user, item, rating)`` triples (``pairs``) for
  pointwise models and for evaluation, or of row indices (``row_columns``) for models that
  train on whole rows of ``R`` (AutoRec).

Build the index from the *full* table before splitting it, so train and test share one
mapping (d2l does the same: its matrix is ``[num_items, num_users]`` over all ids).
Everything is vectorised: ``pandas.Index.get_indexer`` for the lookups and one
``index_put`` scatter for the matrix.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..core.columns import Columns
from ..core.errors import DataError

__all__ = ["RatingIndex", "RatingMatrix", "row_columns"]


def _check_columns(df: pd.DataFrame, *names: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of ratings, got {type(df).__name__}")
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(f"ratings table lacks column(s) {missing}; available: {list(df.columns)}. "
                        "Pass user_col=/item_col=/rating_col= to name yours.")


@dataclass(frozen=True, eq=False)
class RatingIndex:
    """Bijection between raw user/item ids and dense indices.

    ``user_ids[u]`` is the raw id of user index ``u`` (likewise ``item_ids``); both are
    sorted unique arrays, so two indexes built from the same ids agree.

    Example:
        >>> index = RatingIndex.from_frame(ratings)                 # all users/items
        >>> index.users(["1", "42"])                                 # -> array([0, 345])
    """

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_col: str = "user_id"
    item_col: str = "movie_id"

    def __post_init__(self) -> None:
        # The lookups are pandas indexes built once (hash tables over the raw ids).
        object.__setattr__(self, "_users", pd.Index(self.user_ids))
        object.__setattr__(self, "_items", pd.Index(self.item_ids))
        for name, idx in (("user", self._users), ("item", self._items)):
            if not idx.is_unique:
                raise DataError(f"{name} ids of a RatingIndex must be unique")

    @classmethod
    def from_frame(cls, df: pd.DataFrame, user_col: str = "user_id",
                   item_col: str = "movie_id") -> "RatingIndex":
        """Index every user and item that appears in ``df`` (sorted raw ids)."""
        _check_columns(df, user_col, item_col)
        if len(df) == 0:
            raise DataError("cannot build a RatingIndex from an empty ratings table")
        return cls(np.unique(df[user_col].to_numpy()), np.unique(df[item_col].to_numpy()),
                   user_col=user_col, item_col=item_col)

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_items(self) -> int:
        return len(self.item_ids)

    def users(self, raw_ids: Any) -> np.ndarray:
        """Dense indices (int64) of raw user ids; an id not in the index raises DataError."""
        return self._lookup(self._users, raw_ids, "user")

    def items(self, raw_ids: Any) -> np.ndarray:
        """Dense indices (int64) of raw item ids; an id not in the index raises DataError."""
        return self._lookup(self._items, raw_ids, "item")

    @staticmethod
    def _lookup(index: pd.Index, raw_ids: Any, what: str) -> np.ndarray:
        values = np.atleast_1d(np.asarray(raw_ids))
        positions = index.get_indexer(values)
        unknown = np.flatnonzero(positions < 0)
        if unknown.size:
            shown = ", ".join(repr(v) for v in values[unknown[:5]].tolist())
            raise DataError(
                f"unknown {what} id(s) {shown}{' ...' if unknown.size > 5 else ''} "
                f"({unknown.size} of {values.size}): not in the RatingIndex of {len(index)} {what}s. "
                f"Build the index from the full ratings table (RatingIndex.from_frame) before "
                f"splitting, or drop ratings of {what}s the model has never seen.")
        return positions.astype(np.int64)

    def pairs(self, df: pd.DataFrame, rating_col: str | None = "user_rating") -> Columns:
        """Encoded columns ``user`` [n] int64, ``item`` [n] int64 and (if ``rating_col``)
        ``rating`` [n] float32, in ``df``'s row order."""
        cols = [self.user_col, self.item_col] + ([rating_col] if rating_col else [])
        _check_columns(df, *cols)
        if len(df) == 0:
            raise DataError("the ratings table has no rows")
        out = {"user": self.users(df[self.user_col].to_numpy()),
               "item": self.items(df[self.item_col].to_numpy())}
        if rating_col:
            out["rating"] = _ratings(df, rating_col)
        return Columns(out)


def _ratings(df: pd.DataFrame, rating_col: str) -> np.ndarray:
    # A writable copy: pandas may hand out read-only views, which torch warns about.
    values = np.array(pd.to_numeric(df[rating_col], errors="coerce").to_numpy(dtype=np.float32, na_value=np.nan))
    bad = np.flatnonzero(~np.isfinite(values))
    if bad.size:
        raise DataError(f"column {rating_col!r} has a missing or non-numeric rating at row "
                        f"position {int(bad[0])} ({df[rating_col].iloc[int(bad[0])]!r})")
    return values


@dataclass(frozen=True, eq=False)
class RatingMatrix:
    """Dense rating matrix of one table (usually the training split).

    Attributes:
        ratings: [num_users, num_items] float32, ``ratings[u, i]`` = r_ui, 0 where unobserved.
        observed: [num_users, num_items] bool, True where r_ui was observed.
        index: the id mapping that rows/columns follow.

    A user-based AutoRec reads rows of ``ratings``; an item-based one reads rows of
    ``ratings.T`` (d2l's ``[num_items, num_users]`` interaction matrix).
    """

    ratings: torch.Tensor
    observed: torch.Tensor
    index: RatingIndex

    @classmethod
    def from_frame(cls, df: pd.DataFrame, index: RatingIndex | None = None,
                   rating_col: str = "user_rating") -> "RatingMatrix":
        """Scatter ``df``'s ratings into a dense matrix.

        Args:
            df: ratings table with the index's user and item columns and ``rating_col``.
            index: the id mapping (default: built from ``df``); pass the full table's
                index when ``df`` is a split, so every split shares one mapping.
            rating_col: the rating column (finite numbers).

        Raises:
            DataError: a (user, item) pair occurs twice (which rating would win is
                arbitrary), an id is not in ``index``, or a rating is missing.
        """
        index = index or RatingIndex.from_frame(df)
        data = index.pairs(df, rating_col)
        return cls.from_ids(data["user"], data["item"], data["rating"], index)

    @classmethod
    def from_ids(cls, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor,
                 index: RatingIndex) -> "RatingMatrix":
        """Scatter encoded (user [n], item [n], rating [n]) triples into a dense matrix.

        Raises:
            DataError: a (user, item) pair occurs twice, naming it by its raw ids.
        """
        user, item = users.long(), items.long()
        flat = user * index.num_items + item
        unique_flat, counts = torch.unique(flat, return_counts=True)
        if bool((counts > 1).any()):
            dup = int(unique_flat[counts > 1][0])
            u, i = divmod(dup, index.num_items)
            raise DataError(
                f"user {index.user_ids[u]!r} rated item {index.item_ids[i]!r} more than once "
                f"({int((counts > 1).sum())} pairs repeat); a rating matrix holds one rating per pair: "
                "deduplicate the table first (e.g. keep the latest by timestamp; in a recstack "
                "config: data.duplicates: keep-last).")
        matrix = torch.zeros(index.num_users, index.num_items)
        observed = torch.zeros(index.num_users, index.num_items, dtype=torch.bool)
        matrix[user, item] = ratings.float()
        observed[user, item] = True
        return cls(matrix, observed, index)

    @property
    def num_users(self) -> int:
        return self.index.num_users

    @property
    def num_items(self) -> int:
        return self.index.num_items

    @property
    def num_ratings(self) -> int:
        return int(self.observed.sum())

    def global_mean(self) -> float:
        """Mean of the observed ratings (mu of a biased MF)."""
        n = self.num_ratings
        if n == 0:
            raise DataError("the rating matrix has no observed ratings")
        return float(self.ratings[self.observed].double().mean())

    def rating_range(self) -> tuple[float, float]:
        """(min, max) of the observed ratings: the clipping range for predictions."""
        if self.num_ratings == 0:
            raise DataError("the rating matrix has no observed ratings")
        values = self.ratings[self.observed]
        return float(values.min()), float(values.max())

    def oriented(self, based: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(ratings, observed) with one row per *input vector* of an AutoRec:
        [num_items, num_users] for ``based="item"``, [num_users, num_items] for "user"."""
        if based == "user":
            return self.ratings, self.observed
        if based == "item":
            return self.ratings.T.contiguous(), self.observed.T.contiguous()
        raise DataError(f"based must be 'item' or 'user'; got {based!r}")


def row_columns(num_rows: int) -> Columns:
    """Columns ``{"row": arange(num_rows)}``: one training example per matrix row.

    ``fit`` shuffles and slices this index column; the model gathers the rows of its
    rating matrix (``index_select``), so a batch is a [batch, width] slice of one tensor.
    """
    if num_rows < 1:
        raise DataError(f"num_rows must be positive; got {num_rows}")
    return Columns({"row": torch.arange(num_rows)})

