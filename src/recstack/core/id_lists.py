"""Per-row id lists in CSR form: one type for "the ids of each query key" and "of each query row".

Row ``r`` owns ``ids[indptr[r]:indptr[r + 1]]``. The rows are either

* query keys: the items each user rated in training, looked up per batch
  (exported as :class:`recstack.Exclusions`), or
* the rows of one query batch: the exclude / allow lists an index search gets
  (exported as :class:`recstack.index.RowIds`).

They are one concept: a batch's lists are ``lists.take(query_keys)`` of the per-key
lists. Storage is numpy int64 (the indexes and the server work in numpy);
``torch.from_numpy`` / ``Tensor.numpy()`` convert either way without copying, and
every constructor accepts tensors. No operation loops over rows in Python.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .errors import DataError, ShapeError

_EMPTY = np.empty(0, dtype=np.int64)


def _int64(values: Any, what: str) -> np.ndarray:
    """Tensor / array / list of integers -> int64 ndarray (no copy when it is one already)."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be integers; got dtype {arr.dtype}.")
    return arr.astype(np.int64, copy=False)


class IdLists:
    """Integer ids per row, in CSR form.

    Args:
        indptr: int [R + 1] row pointers (0 first, ``len(ids)`` last, non-decreasing).
        ids: int [m] ids; row r owns ``ids[indptr[r]:indptr[r + 1]]``.

    Example:
        >>> seen = IdLists.from_pairs(train_users, train_items)   # per user key
        >>> batch = seen.take(user_keys)                          # per query row
        >>> rows, items = batch.pairs()                           # (row, id) pairs
    """

    __slots__ = ("indptr", "ids")

    def __init__(self, indptr: Any, ids: Any):
        indptr = _int64(indptr, "indptr")
        ids = _int64(ids, "ids")
        if indptr.ndim != 1 or ids.ndim != 1 or indptr.shape[0] == 0:
            raise ShapeError(f"IdLists needs 1-D indptr [R + 1] and 1-D ids; got shapes {indptr.shape}, {ids.shape}.")
        if indptr[0] != 0 or indptr[-1] != ids.shape[0] or (indptr[1:] < indptr[:-1]).any():
            raise ShapeError(f"IdLists indptr must rise from 0 to len(ids) = {ids.shape[0]}; "
                             f"got {indptr[0]} .. {indptr[-1]}.")
        self.indptr = indptr
        self.ids = ids

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def empty(cls, num_rows: int) -> IdLists:
        """``num_rows`` empty lists."""
        return cls(np.zeros(int(num_rows) + 1, dtype=np.int64), _EMPTY)

    @classmethod
    def same(cls, ids: Any, num_rows: int) -> IdLists:
        """The same list ``ids`` for each of ``num_rows`` rows (e.g. one request's allow-list)."""
        ids = _int64(ids, "ids").reshape(-1)
        return cls(np.arange(int(num_rows) + 1, dtype=np.int64) * ids.shape[0], np.tile(ids, int(num_rows)))

    @classmethod
    def from_lists(cls, lists: Sequence[Any]) -> IdLists:
        """One row per entry (a sequence, array or tensor of ids; None = empty), order kept."""
        arrays = [_EMPTY if x is None else _int64(x, "ids").reshape(-1) for x in lists]
        indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([a.shape[0] for a in arrays], out=indptr[1:])
        return cls(indptr, np.concatenate(arrays) if arrays else _EMPTY)

    @classmethod
    def from_pairs(cls, keys: Any, ids: Any, num_keys: int | None = None) -> IdLists:
        """From parallel (key, id) arrays in any order; each row sorted, repeats dropped.

        Args:
            keys: [n] non-negative row keys (e.g. encoded user ids, or batch rows).
            ids: [n] ids (e.g. encoded item ids).
            num_keys: number of rows R (default ``max(keys) + 1``); keys >= R are an error.
        """
        keys = _int64(keys, "keys").reshape(-1)
        ids = _int64(ids, "ids").reshape(-1)
        if keys.shape != ids.shape:
            raise ShapeError(f"keys and ids differ in length: {keys.shape[0]} vs {ids.shape[0]}.")
        if keys.size and int(keys.min()) < 0:
            raise ShapeError(f"keys must be non-negative integers; got {int(keys.min())}.")
        top = int(keys.max()) + 1 if keys.size else 0
        num_keys = top if num_keys is None else int(num_keys)
        if top > num_keys:
            raise ShapeError(f"a key ({top - 1}) is >= num_keys ({num_keys}).")
        order = np.lexsort((ids, keys))                      # by key, then id (no overflow)
        keys, ids = keys[order], ids[order]
        fresh = np.ones(keys.shape[0], dtype=bool)
        fresh[1:] = (keys[1:] != keys[:-1]) | (ids[1:] != ids[:-1])
        keys, ids = keys[fresh], ids[fresh]
        indptr = np.zeros(num_keys + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=num_keys), out=indptr[1:])
        return cls(indptr, ids)

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> IdLists:
        """Inverse of :meth:`state_dict`."""
        try:
            return cls(state["indptr"], state["indices"])
        except KeyError as exc:
            raise DataError(f"an id-list state needs 'indptr' and 'indices'; {exc.args[0]!r} is missing.") from None

    def state_dict(self) -> dict[str, torch.Tensor]:
        """{"indptr", "indices"} as tensors (what ``torch.save(weights_only)`` files hold)."""
        return {"indptr": torch.from_numpy(self.indptr), "indices": torch.from_numpy(self.ids)}

    # -- shape ------------------------------------------------------------------------------
    @property
    def num_rows(self) -> int:
        return self.indptr.shape[0] - 1

    num_keys = batch = num_rows   # the names Exclusions (keys) and RowIds (batch rows) used

    def __len__(self) -> int:
        return self.num_rows

    @property
    def indices(self) -> np.ndarray:
        """The ids array (scipy's CSR name)."""
        return self.ids

    @property
    def counts(self) -> np.ndarray:
        """[R] number of ids per row."""
        return np.diff(self.indptr)

    @property
    def rows(self) -> np.ndarray:
        """[m] the row of every id."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int64), self.counts)

    def row(self, i: int) -> np.ndarray:
        """The ids of row ``i``."""
        return self.ids[self.indptr[i]:self.indptr[i + 1]]

    # -- lookups ------------------------------------------------------------------------------
    def take(self, keys: Any) -> IdLists:
        """The lists of ``keys`` (in that order), one row each; keys outside [0, R) get an
        empty list (e.g. users unseen in training have nothing to exclude)."""
        keys = _int64(keys, "keys").reshape(-1)
        if self.num_rows == 0:
            return IdLists.empty(keys.shape[0])
        valid = (keys >= 0) & (keys < self.num_rows)
        safe = np.where(valid, keys, 0)
        starts = self.indptr[safe]
        counts = np.where(valid, self.indptr[safe + 1] - starts, 0)
        indptr = np.zeros(keys.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        if indptr[-1] == 0:
            return IdLists(indptr, _EMPTY)
        offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], counts)
        return IdLists(indptr, self.ids[np.repeat(starts, counts) + offsets])

    def pairs(self, keys: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """(row, id) pairs [m'] of every list, or of ``take(keys)`` (rows = positions in ``keys``)."""
        lists = self if keys is None else self.take(keys)
        return lists.rows, lists.ids

    def union(self, other: IdLists) -> IdLists:
        """Row-wise union with lists over the same rows (sorted, repeats dropped)."""
        if other.num_rows != self.num_rows:
            raise ShapeError(f"id lists differ in rows: {self.num_rows} vs {other.num_rows}.")
        return IdLists.from_pairs(np.concatenate([self.rows, other.rows]), np.concatenate([self.ids, other.ids]),
                                  self.num_rows)

    @classmethod
    def concat_rows(cls, a: IdLists, b: IdLists) -> IdLists:
        """``a.union(b)`` (the name RowIds used)."""
        return a.union(b)

    def isin(self, values: np.ndarray) -> np.ndarray:
        """[R, n] bool: ``values[r, j]`` is in row r's list. Vectorised through dense codes."""
        values = np.asarray(values)
        if values.ndim != 2 or values.shape[0] != self.num_rows:
            raise ShapeError(f"isin needs [{self.num_rows}, n] values; got shape {values.shape}.")
        if self.ids.shape[0] == 0 or values.size == 0:
            return np.zeros(values.shape, dtype=bool)
        uniq, inverse = np.unique(np.concatenate([values.reshape(-1), self.ids]), return_inverse=True)
        span = np.int64(uniq.shape[0])
        codes = inverse[:values.size].reshape(values.shape)
        row_keys = np.arange(values.shape[0], dtype=np.int64)[:, None] * span + codes
        return np.isin(row_keys, self.rows * span + inverse[values.size:])

    def __repr__(self) -> str:
        return f"IdLists(rows={self.num_rows}, ids={self.ids.shape[0]})"
