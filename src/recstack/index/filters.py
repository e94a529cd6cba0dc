"""Exclude / allow filters: the specs every index accepts, and k-filling filtered search for ANN backends.

Filter specs (normalised by :func:`exclusion_rows` and :func:`allow_rows`):

* ``exclude``: ``None``; an :class:`~recstack.core.id_lists.IdLists` (e.g.
  :class:`recstack.Exclusions`) - with ``query_keys=`` the lists of those keys
  (keys it does not hold exclude nothing), without them one list per query row;
  or a sequence of B id lists (``None`` entries exclude nothing).
* ``allow``: ``None``; a sequence of B id lists where an entry may be ``None``
  (that row is unrestricted); or an IdLists with one list per row (all rows restricted).

:class:`FilteredSearch` turns an unfiltered approximate batch search into a
filtered one that still returns ``min(k, remaining)`` results per row:

* exclusions by over-fetching ``k + longest exclusion list in the batch`` and
  dropping excluded ids; rows still short of ``min(k, remaining)`` are redone with
  the backend's filtered single-row search, widened until complete;
* allow-lists scored exactly (the union of allowed ids up to ``exact_allow_limit``
  is gathered and scored by one matmul), larger ones through the filtered search.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np
import torch

from ..core.errors import ShapeError
from ..core.id_lists import IdLists

_NONE = np.empty(0, np.int64)


def exclusion_rows(spec: Any, batch: int, query_keys: Any = None) -> IdLists | None:
    """Normalise an ``exclude=`` spec to one id list per query row (None: nothing to exclude)."""
    if spec is None:
        return None
    if isinstance(spec, IdLists):
        if query_keys is not None:
            keys = np.asarray(query_keys.detach().cpu() if isinstance(query_keys, torch.Tensor) else query_keys)
            if keys.reshape(-1).shape[0] != batch:
                raise ShapeError(f"{batch} queries but {keys.reshape(-1).shape[0]} query_keys.")
            return spec.take(keys)
        if spec.num_rows != batch:
            raise ShapeError(f"exclude has {spec.num_rows} lists for {batch} queries: pass query_keys= (one key "
                             "per query row) to look the lists up by key, or give one list per row.")
        return spec
    if len(spec) != batch:
        raise ShapeError(f"Expected {batch} exclude id lists (one per query); got {len(spec)}.")
    return IdLists.from_lists(spec)


def allow_rows(spec: Any, batch: int) -> tuple[IdLists, np.ndarray] | None:
    """Normalise an ``allow=`` spec to (id lists, restricted [B] bool); None when unrestricted."""
    if spec is None:
        return None
    if isinstance(spec, IdLists):
        if spec.num_rows != batch:
            raise ShapeError(f"allow has {spec.num_rows} lists for {batch} queries.")
        return spec, np.ones(batch, dtype=bool)
    if len(spec) != batch:
        raise ShapeError(f"Expected {batch} allow id lists (one per query, None = unrestricted); got {len(spec)}.")
    restricted = np.array([s is not None for s in spec], dtype=bool)
    if not restricted.any():
        return None
    return IdLists.from_lists(spec), restricted


class FilteredSearch(abc.ABC):
    """Exclude / allow with k-fill on top of a backend's unfiltered batch search (see the module doc).

    Backends implement the hooks; returned scores are exact inner products of the
    returned candidates.
    """

    exact_allow_limit: int = 16384

    # -- hooks --------------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def num_candidates(self) -> int:
        """Live candidates."""

    @abc.abstractmethod
    def candidate_ids(self) -> np.ndarray:
        """Sorted int64 ids of the live candidates."""

    @abc.abstractmethod
    def _search_batch(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Unfiltered ANN search: (scores [b, fetch] f32 exact, ids [b, fetch] i64), desc, -inf/-1 pad."""

    @abc.abstractmethod
    def _filtered_search_row(self, q: np.ndarray, k: int, allow: np.ndarray | None,
                             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One query [d]: top-k among ``allow`` (None: all) minus ``exclude``, returning all
        ``min(k, remaining)`` results (widening the search as needed)."""

    @abc.abstractmethod
    def _vectors_np(self, ids: np.ndarray) -> np.ndarray:
        """ids [n] -> float32 [n, d]."""

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """[n] bool: which ids are live candidates."""
        live = self.candidate_ids()
        if live.shape[0] == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.clip(np.searchsorted(live, ids), 0, live.shape[0] - 1)
        return live[pos] == ids

    # -- search ---------------------------------------------------------------------------
    def _search_filtered(self, q: np.ndarray, k: int, excl: IdLists | None,
                         allowed: tuple[IdLists, np.ndarray] | None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of every row of ``q`` [B, d] under its filters: (scores [B, k], ids [B, k])."""
        if allowed is None:                       # the common case: no allow-lists, no copies
            return self._search_excluding(q, k, excl)
        batch = q.shape[0]
        out_s = np.full((batch, k), -np.inf, dtype=np.float32)
        out_i = np.full((batch, k), -1, dtype=np.int64)
        lists, restricted = allowed
        rows = np.flatnonzero(restricted)
        s, i = self._search_allowed(q[rows], k, lists.take(rows), None if excl is None else excl.take(rows))
        out_s[rows], out_i[rows] = s, i
        free = np.flatnonzero(~restricted)
        if free.shape[0]:
            s, i = self._search_excluding(q[free], k, None if excl is None else excl.take(free))
            out_s[free], out_i[free] = s, i
        return out_s, out_i

    def _search_excluding(self, q: np.ndarray, k: int, excl: IdLists | None) -> tuple[np.ndarray, np.ndarray]:
        """Over-fetch, drop excluded ids, redo rows that came up short."""
        live = self.num_candidates
        if q.shape[0] == 1 and excl is not None and 0 < excl.ids.shape[0] <= 4096:
            return self._search_excluding_one(q, k, excl.ids)
        if excl is None or excl.ids.shape[0] == 0:
            scores, ids = self._search_batch(q, k)
            ok = ids >= 0
            if ok.all():                                     # the common case: nothing to compact
                return scores, ids
            excluded = np.zeros(ids.shape, dtype=bool)
            live_excluded = np.zeros(q.shape[0], dtype=np.int64)
        else:
            fetch = min(live, k + int(excl.counts.max()))
            scores, ids = self._search_batch(q, fetch)
            if q.shape[0] == 1:
                excluded = np.isin(ids, excl.ids)
                live_excluded = np.array([int(self.contains(np.unique(excl.ids)).sum())])
            else:
                excluded = excl.isin(ids)
                # Distinct live excluded ids per row decide how many results can exist.
                uniq = np.unique(np.stack([excl.rows, excl.ids]), axis=1)
                live_excluded = np.bincount(uniq[0][self.contains(uniq[1])], minlength=q.shape[0])
        valid = (ids >= 0) & ~excluded
        order = np.argsort(~valid, axis=1, kind="stable")[:, :k]
        s = np.take_along_axis(scores, order, 1)
        i = np.take_along_axis(ids, order, 1)
        ok = np.take_along_axis(valid, order, 1)
        s[~ok], i[~ok] = -np.inf, -1
        if s.shape[1] < k:  # fetch was capped by the catalogue
            s = np.pad(s, ((0, 0), (0, k - s.shape[1])), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, k - i.shape[1])), constant_values=-1)
        need = np.minimum(k, live - live_excluded)
        short = np.flatnonzero(ok.sum(1) < need)
        for r in short:  # rare: the probed part held too few non-excluded candidates
            ex = excl.row(r) if excl is not None else _NONE
            rs, ri = self._filtered_search_row(q[r], k, None, ex)
            s[r], i[r] = -np.inf, -1
            s[r, :rs.shape[0]], i[r, :ri.shape[0]] = rs, ri
        return s, i

    def _search_excluding_one(self, q: np.ndarray, k: int, excluded: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One query with a short exclusion list (the serving hot path): same result as the
        batch path, with Python sets instead of vectorised set operations on tiny arrays."""
        ex = set(excluded.tolist())
        live = self.num_candidates
        scores, ids = self._search_batch(q, min(live, k + len(ex)))
        row = ids[0].tolist()
        keep = [j for j, v in enumerate(row) if v >= 0 and v not in ex][:k]
        s = np.full((1, k), -np.inf, dtype=np.float32)
        i = np.full((1, k), -1, dtype=np.int64)
        s[0, :len(keep)] = scores[0, keep]
        i[0, :len(keep)] = ids[0, keep]
        if len(keep) < k:
            ex_arr = np.fromiter(ex, dtype=np.int64, count=len(ex))
            need = min(k, live - int(self.contains(ex_arr).sum()))
            if len(keep) < need:   # rare: widen with the filtered search
                rs, ri = self._filtered_search_row(q[0], k, None, ex_arr)
                s[0], i[0] = -np.inf, -1
                s[0, :rs.shape[0]], i[0, :ri.shape[0]] = rs, ri
        return s, i

    def _search_allowed(self, q: np.ndarray, k: int, allowed: IdLists,
                        excl: IdLists | None) -> tuple[np.ndarray, np.ndarray]:
        """Exact scoring of allow-listed candidates (vectorised over the union of the lists)."""
        b = q.shape[0]
        union = np.unique(allowed.ids)
        union = union[self.contains(union)]
        out_s = np.full((b, k), -np.inf, dtype=np.float32)
        out_i = np.full((b, k), -1, dtype=np.int64)
        if union.shape[0] == 0:
            return out_s, out_i
        if union.shape[0] > self.exact_allow_limit:
            for r in range(b):
                ex = excl.row(r) if excl is not None else _NONE
                rs, ri = self._filtered_search_row(q[r], k, allowed.row(r), ex)
                out_s[r, :rs.shape[0]], out_i[r, :ri.shape[0]] = rs, ri
            return out_s, out_i
        vecs = self._vectors_np(union)
        scores = torch.from_numpy(q) @ torch.from_numpy(vecs).T              # [b, U]
        cand = np.broadcast_to(union, (b, union.shape[0]))
        mask = ~allowed.isin(cand)
        if excl is not None:
            mask |= excl.isin(cand)
        scores[torch.from_numpy(mask)] = float("-inf")
        kk = min(k, union.shape[0])
        top = torch.topk(scores, kk, dim=1)
        order = torch.sort(top.values, dim=1, descending=True, stable=True).indices
        s = top.values.gather(1, order).numpy()
        pos = top.indices.gather(1, order).numpy()
        i = union[pos]
        i[np.isneginf(s)] = -1
        out_s[:, :kk], out_i[:, :kk] = s, i
        return out_s, out_i
