"""ApproximateIndex: the shared base of ANN backends (FAISS IVF, ScaNN), and recall-targeted tuning.

A backend implements an unfiltered batch search, a filtered single-row search
that can be made exhaustive, vector lookup and iteration, and a ladder of
search settings. This class adds on top of them:

* filtered search with k-fill (:class:`~recstack.index.filters.FilteredSearch`);
* :meth:`ApproximateIndex.tune`: the cheapest search setting whose recall@k against
  exact search reaches a target, with a one-sided confidence margin;
* :func:`recall_at_k` and exact streamed top-k (:func:`exact_top_k_stream`) for checks.

Returned scores are exact inner products of the returned candidates.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError
from ..core.id_lists import IdLists
from .arrays import as_ids, as_numpy_f32
from .contract import Index
from .filters import FilteredSearch, allow_rows, exclusion_rows


def exact_top_k_stream(queries: np.ndarray, chunks: Iterator[tuple[np.ndarray, np.ndarray]],
                       k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by inner product over candidate chunks (ids [n], vectors [n, d]).

    Memory is one [B, chunk] score tile plus the running [B, k] best lists.
    Returns (scores [B, k] float32, ids [B, k] int64); -inf / -1 where fewer exist.
    """
    q = torch.from_numpy(queries)
    best_s = torch.full((q.shape[0], 0), float("-inf"))
    best_i = torch.zeros((q.shape[0], 0), dtype=torch.long)
    for ids, vecs in chunks:
        if ids.shape[0] == 0:
            continue
        scores = q @ torch.from_numpy(vecs).T
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        best_s = torch.cat([best_s, top.values], 1)
        best_i = torch.cat([best_i, torch.from_numpy(ids)[top.indices]], 1)
        if best_s.shape[1] > k:
            keep = torch.topk(best_s, k, dim=1)
            best_s, best_i = keep.values, best_i.gather(1, keep.indices)
    order = torch.sort(best_s, dim=1, descending=True, stable=True).indices
    best_s, best_i = best_s.gather(1, order), best_i.gather(1, order)
    pad = k - best_s.shape[1]
    s, i = best_s.numpy(), best_i.numpy()
    if pad > 0:
        s = np.concatenate([s, np.full((s.shape[0], pad), -np.inf, np.float32)], 1)
        i = np.concatenate([i, np.full((i.shape[0], pad), -1, np.int64)], 1)
    return s.astype(np.float32, copy=False), i


def recall_per_query(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """[B'] |found_r ∩ truth_r| / |truth_r| for rows with a non-empty truth (ids < 0 ignored)."""
    hits = IdLists.from_lists([t[t >= 0] for t in truth]).isin(found) & (found >= 0)
    sizes = (truth >= 0).sum(1)
    valid = sizes > 0
    return hits.sum(1)[valid] / sizes[valid]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean over rows of |found_r ∩ truth_r| / |truth_r| (ids < 0 ignored; 1.0 when no truth)."""
    per = recall_per_query(found, truth)
    return float(per.mean()) if per.size else 1.0


# ---------------------------------------------------------------------------------------
# The interface
# ---------------------------------------------------------------------------------------


class ApproximateIndex(FilteredSearch, Index):
    """Shared search logic for ANN backends: filters with k-fill, vector lookup, :meth:`tune`."""

    is_exact = False

    # -- hooks (besides FilteredSearch's) ---------------------------------------------------
    @abc.abstractmethod
    def _iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (ids [n], vectors [n, d]) over all live candidates."""

    @abc.abstractmethod
    def search_params(self) -> dict[str, Any]:
        """Current search-time setting (e.g. {"nprobe": 64})."""

    @abc.abstractmethod
    def set_search_params(self, **params: Any) -> None:
        """Change the search-time setting."""

    @abc.abstractmethod
    def _tuning_ladder(self, k: int) -> list[dict[str, Any]]:
        """Search settings in increasing cost order."""

    # -- shared state -----------------------------------------------------------------------
    def _set_ids(self, sorted_ids: np.ndarray) -> None:
        self._sorted_ids = sorted_ids

    def candidate_ids(self) -> np.ndarray:
        return getattr(self, "_sorted_ids", np.empty(0, dtype=np.int64))

    def vectors(self, ids: Any) -> torch.Tensor:
        ids = as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)))
        missing = ~self.contains(ids)
        if missing.any():
            raise DataError(f"unknown candidate id(s) {ids[missing][:5].tolist()}; the index holds "
                            f"{self.num_candidates} candidates.")
        return torch.from_numpy(self._vectors_np(ids))

    # -- search ---------------------------------------------------------------------------
    def search(self, queries: Any, k: int | None = 10, exclude: Any = None, allow: Any = None,
               query_keys: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """:meth:`Index.search`, approximately: filters with k-fill (:class:`FilteredSearch`)."""
        q, k = self._prepare_search(queries, k)
        batch = q.shape[0]
        if batch == 0:
            return torch.empty((0, k)), np.empty((0, k), dtype=np.int64)
        s, i = self._search_filtered(q, k, exclusion_rows(exclude, batch, query_keys), allow_rows(allow, batch))
        return torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)), i

    # -- tuning ---------------------------------------------------------------------------------
    def exact_search(self, queries: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k over the stored vectors (streamed; for tuning and recall checks)."""
        q = as_numpy_f32(queries, "queries")
        return exact_top_k_stream(q, self._iter_vectors(), min(k, self.num_candidates))

    def measure_recall(self, queries: Any, k: int = 100,
                       truth: np.ndarray | None = None) -> float:
        """recall@k of the current setting against exact search on ``queries``."""
        q = as_numpy_f32(queries, "queries")
        if truth is None:
            truth = self.exact_search(q, k)[1]
        _, found = self._search_batch(q, min(k, self.num_candidates))
        return recall_at_k(found, truth)

    def tune(self, queries: Any = None, target_recall: float = 0.95, k: int = 100,
             max_queries: int = 1000, seed: int = 0, conservative: bool = True) -> dict[str, Any]:
        """Pick the cheapest search setting whose recall@k on ``queries`` reaches ``target_recall``.

        recall@k = mean over queries of |ANN top-k ∩ exact top-k| / k, measured against exact
        search over the stored vectors. With ``conservative`` (default) the setting must reach
        the target with its one-sided 95% lower confidence bound, mean - 1.645 sd / sqrt(n),
        so that new queries from the same distribution meet the target too (a setting that
        only just reaches it on the sample falls short on about half of the resamples).

        ``queries`` should be a held-out sample of real query embeddings (e.g. query-tower
        outputs of users not used to pick anything else); if None, a random sample of indexed
        candidate vectors stands in (recorded as such).
        The chosen setting is applied and the measurement is stored in
        ``metadata["tuning"]`` (and saved with the index). If no setting reaches the
        target the best one is used and ``target_met`` is False.

        Returns:
            the tuning record: target, k, chosen params, measured recall and its lower bound,
            the whole curve.
        """
        self._require_built()
        if not 0.0 < target_recall <= 1.0:
            raise ConfigError(f"target_recall must be in (0, 1]; got {target_recall}.")
        rng = np.random.default_rng(seed)
        if queries is None:
            live = self.candidate_ids()
            pick = np.sort(rng.choice(live.shape[0], size=min(max_queries, live.shape[0]), replace=False))
            q = self._vectors_np(live[pick])
            source = "candidate_sample"
        else:
            q = as_numpy_f32(queries, "queries")
            if q.shape[0] > max_queries:
                q = q[np.sort(rng.choice(q.shape[0], size=max_queries, replace=False))]
            source = "queries"
        k = min(int(k), self.num_candidates)
        start = time.perf_counter()
        truth = self.exact_search(q, k)[1]
        before = self.search_params()
        curve: list[dict[str, Any]] = []
        chosen: dict[str, Any] | None = None
        for params in self._tuning_ladder(k):
            self.set_search_params(**params)
            _, found = self._search_batch(q, k)
            per = recall_per_query(found, truth)
            recall = float(per.mean()) if per.size else 1.0
            lower = recall - 1.645 * float(per.std(ddof=1)) / np.sqrt(per.size) if per.size > 1 else recall
            curve.append({"params": params, "recall": round(recall, 6), "lower_bound": round(lower, 6)})
            if (lower if conservative else recall) >= target_recall:
                chosen = {"params": params, "recall": recall, "lower_bound": lower}
                break
        met = chosen is not None
        if chosen is None:
            best = max(curve, key=lambda c: c["recall"]) if curve else {"params": before, "recall": 0.0}
            chosen = {"params": best["params"], "recall": best["recall"],
                      "lower_bound": best.get("lower_bound", best["recall"])}
        self.set_search_params(**chosen["params"])
        record = {
            "target_recall": target_recall, "k": k, "target_met": met, "params": chosen["params"],
            "recall": round(float(chosen["recall"]), 6), "lower_bound": round(float(chosen["lower_bound"]), 6),
            "conservative": conservative, "num_queries": int(q.shape[0]),
            "queries": source, "seconds": round(time.perf_counter() - start, 3), "curve": curve,
        }
        self.metadata["tuning"] = record
        self.metadata["recall"] = {"k": k, "value": record["recall"], "measured_on": source}
        return record
