"""FaissIVF: approximate MIPS with a FAISS IVF-Flat index over MIPS->L2-augmented vectors.

Inner-product search is reduced to L2 search (Bachrach et al. 2014): with
M >= max ||x||,

    x' = [x, sqrt(M² - ||x||²)],   q' = [q, 0]
    ||q' - x'||² = ||q||² + M² - 2 q.x

so the L2-nearest x' are the inner-product-best x, and ordinary L2 k-means
makes much better IVF cells than inner-product k-means (see
docs/serving.md and the research notes: 2.4-2.8x fewer scanned vectors at equal
recall). Returned scores are exact inner products, recomputed from the stored
vectors (the index keeps a hash-table direct map for id -> vector).

Norm bound: M = ``norm_headroom`` x the largest norm at build time. Adding an
item with a larger norm raises M in place (every stored augmentation
coordinate and every centroid's is rewritten for the new M, O(N d)); distances
stay exact, only the cells were trained for the old M, so recall may drift
and the tuning record is marked stale. Rebuild (``build``) to retrain.

Optional dependency: ``pip install faiss-cpu`` (extra ``recstack[faiss]``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError, ShapeError
from .approximate import ApproximateIndex
from .arrays import as_ids, as_numpy_f32, build_inputs, check_unique, load_npy
from .registry import register_index


def _faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise ImportError("The FAISS index needs faiss-cpu: pip install 'recstack[faiss]' "
                          "(or pip install faiss-cpu).") from None
    return faiss


def default_nlist(n: int) -> int:
    """≈ 4 sqrt(N) rounded to a power of two (1024 at 100k, 4096 at 1M), with >= 39 points per cell."""
    if n <= 0:
        return 1
    target = 2 ** round(math.log2(max(1.0, 4.0 * math.sqrt(n))))
    return int(max(1, min(target, n // 39)))


@register_index("faiss_ivf", aliases=("faiss",))
class FaissIVF(ApproximateIndex):
    """IVF-Flat over MIPS->L2-augmented vectors (FAISS), with deterministic builds.

    Args:
        nlist: number of IVF cells (default :func:`default_nlist`).
        nprobe: cells scanned per query (default nlist/16, >= 8; see :meth:`tune`).
        train_size: k-means sample size (default 50 x nlist, at most N).
        seed: seed of the training sample and of k-means (same data + seed = same index).
        norm_headroom: M = norm_headroom x max norm at build (>= 1).
        exact_allow_limit: allow-lists with up to this many distinct ids are scored exactly.
        num_threads: FAISS OpenMP threads (None: FAISS default; process-wide setting).
    """

    def __init__(self, nlist: int | None = None, nprobe: int | None = None, train_size: int | None = None,
                 seed: int = 0, norm_headroom: float = 1.0, exact_allow_limit: int = 16384,
                 num_threads: int | None = None):
        if norm_headroom < 1.0:
            raise ConfigError(f"norm_headroom must be >= 1 (M must bound every norm); got {norm_headroom}.")
        self.nlist = None if nlist is None else int(nlist)
        self.nprobe = None if nprobe is None else int(nprobe)
        self._auto = {"nlist": nlist is None, "nprobe": nprobe is None}   # re-derived on every build
        self.train_size = None if train_size is None else int(train_size)
        self.seed = int(seed)
        self.norm_headroom = float(norm_headroom)
        self.exact_allow_limit = int(exact_allow_limit)
        self.num_threads = num_threads
        self._index: Any = None
        self._dim = 0
        self._norm_bound = 0.0
        self._lock = threading.Lock()      # serialises mutations (search is read-only)
        self._set_ids(np.empty(0, np.int64))
        if num_threads is not None:
            _faiss().omp_set_num_threads(int(num_threads))

    # -- building ---------------------------------------------------------------------------
    def _augment(self, x: np.ndarray) -> np.ndarray:
        extra = np.sqrt(np.maximum(self._norm_bound ** 2 - np.einsum("ij,ij->i", x, x, dtype=np.float64), 0.0))
        return np.hstack([x, extra.astype(np.float32)[:, None]])

    def build(self, ids: Any, embeddings: Any) -> "FaissIVF":
        """Train the cells on a seeded sample and add every candidate (in chunks of 64k)."""
        faiss = _faiss()
        ids, x = build_inputs(ids, embeddings)
        n, d = x.shape
        sorted_ids = np.sort(ids)
        nlist = min(default_nlist(n) if self._auto["nlist"] or self.nlist is None else self.nlist, n)
        self.nlist = nlist
        if self._auto["nprobe"] or self.nprobe is None:
            self.nprobe = min(nlist, max(8, nlist // 16))
        self.nprobe = min(self.nprobe, nlist)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
        self._norm_bound = float(norms.max()) * self.norm_headroom
        self._dim = d
        rng = np.random.default_rng(self.seed)
        size = min(n, self.train_size or 50 * nlist)
        sample = x[np.sort(rng.choice(n, size=size, replace=False))] if size < n else x
        quantizer = faiss.IndexFlatL2(d + 1)
        index = faiss.IndexIVFFlat(quantizer, d + 1, nlist, faiss.METRIC_L2)
        index.cp.seed = self.seed
        index.cp.max_points_per_centroid = max(256, -(-size // nlist))   # we sampled already
        index.train(self._augment(sample))
        index.set_direct_map_type(faiss.DirectMap.Hashtable)
        for start in range(0, n, 65536):
            stop = min(n, start + 65536)
            index.add_with_ids(self._augment(x[start:stop]), ids[start:stop])
        self._quantizer = quantizer       # the IVF index does not own its quantizer here
        self._index = index
        self._set_ids(sorted_ids)
        self.metadata.update({"norm_bound": self._norm_bound, "nlist": nlist, "train_size": int(size),
                              "seed": self.seed})
        self.metadata.pop("tuning", None)
        self.metadata.pop("recall", None)
        return self

    @property
    def num_candidates(self) -> int:
        return int(self.candidate_ids().shape[0]) if self._index is not None else 0

    @property
    def dimension(self) -> int:
        return self._dim

    @property
    def norm_bound(self) -> float:
        """M of the augmentation."""
        return self._norm_bound

    # -- search hooks ---------------------------------------------------------------------------
    def search_params(self) -> dict[str, Any]:
        return {"nprobe": self.nprobe}

    def set_search_params(self, nprobe: int | None = None, **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"FaissIVF search settings are nprobe only; got {sorted(unknown)}.")
        if nprobe is not None:
            if int(nprobe) < 1:
                raise ConfigError(f"nprobe must be >= 1; got {nprobe}.")
            self.nprobe = min(int(nprobe), self.nlist or int(nprobe))

    def _tuning_ladder(self, k: int) -> list[dict[str, Any]]:
        nlist = self.nlist or 1
        steps = sorted({min(nlist, 2 ** p) for p in range(int(math.log2(nlist)) + 2)} | {nlist})
        # Half steps between powers of two: finer choice at little tuning cost.
        half = [int(a * 1.5) for a in steps if 2 <= a and int(a * 1.5) < nlist]
        return [{"nprobe": p} for p in sorted(set(steps) | set(half))]

    def _params_ivf(self, nprobe: int, sel: Any = None) -> Any:
        faiss = _faiss()
        params = faiss.SearchParametersIVF()
        params.nprobe = int(nprobe)
        if sel is not None:
            params.sel = sel
        return params

    def _rescore(self, q: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact q . x for returned ids, re-sorted descending; -1 ids -> -inf.

        The L2 distances would give q . x = (||q||² + M² - dist) / 2, but in float32 that
        loses ~1e-7 (||q||² + M²) absolute; re-scoring from the stored vectors is exact and
        costs one hash lookup + d multiply-adds per result.
        """
        valid = ids >= 0
        if valid.all():
            vecs = self._index.reconstruct_batch(ids.reshape(-1))[:, :self._dim]
            if ids.shape[0] == 1:
                scores = (vecs @ q[0])[None, :]
            else:
                scores = np.einsum("bd,bkd->bk", q, vecs.reshape(*ids.shape, self._dim))
            if scores.shape[1] < 2 or not (scores[:, 1:] > scores[:, :-1]).any():
                return scores, ids                       # faiss's order survived re-scoring
        else:
            scores = np.full(ids.shape, -np.inf, dtype=np.float32)
            if valid.any():
                vecs = self._index.reconstruct_batch(ids[valid])[:, :self._dim]
                rows = np.nonzero(valid)[0]
                scores[valid] = np.einsum("ij,ij->i", q[rows], vecs)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _search_batch(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        qa = np.hstack([q, np.zeros((q.shape[0], 1), np.float32)])
        _, ids = self._index.search(qa, int(fetch), params=self._params_ivf(self.nprobe))
        return self._rescore(q, ids)

    def _filtered_search_row(self, q: np.ndarray, k: int, allow: np.ndarray | None,
                             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """IDSelector search, doubling nprobe until min(k, remaining) results (nprobe = nlist
        scans every cell, so the loop always ends complete)."""
        faiss = _faiss()
        keep: list[Any] = []              # selectors must outlive the search call
        sel = None
        if allow is not None:
            allow = np.unique(allow)
            allow = allow[self.contains(allow)]
            sel = faiss.IDSelectorBatch(allow)
            keep.append(sel)
        exclude = np.unique(exclude)
        if exclude.shape[0]:
            batch = faiss.IDSelectorBatch(exclude)
            not_ex = faiss.IDSelectorNot(batch)
            keep += [batch, not_ex]
            sel = not_ex if sel is None else faiss.IDSelectorAnd(sel, not_ex)
            keep.append(sel)
        pool = self.candidate_ids() if allow is None else allow
        remaining = int(pool.shape[0] - np.isin(exclude, pool, assume_unique=True).sum())
        need = min(k, remaining)
        if need == 0:
            return np.empty(0, np.float32), np.empty(0, np.int64)
        qa = np.hstack([q[None, :], np.zeros((1, 1), np.float32)])
        nprobe = min(self.nlist, max(1, self.nprobe) * 2)
        while True:
            _, ids = self._index.search(qa, need, params=self._params_ivf(nprobe, sel))
            if (ids >= 0).sum() >= need or nprobe >= self.nlist:
                break
            nprobe = min(self.nlist, nprobe * 4)
        s, i = self._rescore(q[None, :], ids)
        ok = i[0] >= 0
        return s[0][ok], i[0][ok]

    def _vectors_np(self, ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._index.reconstruct_batch(ids)[:, :self._dim])

    def _iter_lists(self) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
        """(list number, ids [n], augmented vectors [n, d+1]) copies, cell by cell."""
        faiss = _faiss()
        invlists = self._index.invlists
        width = self._dim + 1
        for lst in range(self._index.nlist):
            n = invlists.list_size(lst)
            if n == 0:
                continue
            codes = faiss.rev_swig_ptr(invlists.get_codes(lst), n * width * 4)
            ids = faiss.rev_swig_ptr(invlists.get_ids(lst), n)
            yield lst, np.array(ids, dtype=np.int64), np.array(codes).view(np.float32).reshape(n, width)

    def _iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        ids_parts: list[np.ndarray] = []
        vec_parts: list[np.ndarray] = []
        size = 0
        for _, ids, vecs in self._iter_lists():
            ids_parts.append(ids)
            vec_parts.append(vecs[:, :self._dim])
            size += ids.shape[0]
            if size >= chunk:
                yield np.concatenate(ids_parts), np.ascontiguousarray(np.concatenate(vec_parts))
                ids_parts, vec_parts, size = [], [], 0
        if size:
            yield np.concatenate(ids_parts), np.ascontiguousarray(np.concatenate(vec_parts))

    # -- mutation -----------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Delete candidates by id (IVF ``remove_ids``); returns how many were removed."""
        self._require_built()
        ids = np.unique(as_ids(np.atleast_1d(np.asarray(ids))))
        with self._lock:
            # The hash-table direct map only supports removal through an IDSelectorArray.
            removed = int(self._index.remove_ids(_faiss().IDSelectorArray(ids)))
            self._set_ids(np.setdiff1d(self.candidate_ids(), ids, assume_unique=True))
        return removed

    def add(self, ids: Any, embeddings: Any) -> "FaissIVF":
        """Add new candidates to the trained cells; raises M first if a new norm exceeds it."""
        if self._index is None:
            return self.build(ids, embeddings)
        x = as_numpy_f32(embeddings, "candidate embeddings")
        if x.shape[1] != self._dim:
            raise ShapeError(f"embeddings must be [n, {self._dim}]; got {tuple(x.shape)}.")
        new = as_ids(ids, x.shape[0])
        check_unique(new, "new candidate ids")
        clash = self.contains(new)
        if clash.any():
            raise DataError(f"candidate id(s) {new[clash][:5].tolist()} are already indexed; remove them first.")
        with self._lock:
            top = float(np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64).max())) if x.shape[0] else 0.0
            if top > self._norm_bound:
                self._raise_norm_bound(top * self.norm_headroom)
            for start in range(0, x.shape[0], 65536):
                self._index.add_with_ids(self._augment(x[start:start + 65536]), new[start:start + 65536])
            self._set_ids(np.union1d(self.candidate_ids(), new))
        return self

    def _raise_norm_bound(self, bound: float) -> None:
        """Rewrite the augmentation coordinate of every stored vector and centroid for a new M."""
        faiss = _faiss()
        old = self._norm_bound
        invlists = self._index.invlists
        for lst, ids, vecs in self._iter_lists():
            sq = np.einsum("ij,ij->i", vecs[:, :-1], vecs[:, :-1], dtype=np.float64)
            vecs[:, -1] = np.sqrt(np.maximum(bound ** 2 - sq, 0.0))
            invlists.update_entries(lst, 0, ids.shape[0], faiss.swig_ptr(ids),
                                    faiss.swig_ptr(np.ascontiguousarray(vecs).view(np.uint8)))
        quantizer = faiss.downcast_index(self._index.quantizer)
        cents = quantizer.reconstruct_n(0, quantizer.ntotal)
        # A centroid's last coordinate approximates sqrt(M² - ||x||²) of its members.
        cents[:, -1] = np.sqrt(np.maximum(bound ** 2 - old ** 2 + cents[:, -1].astype(np.float64) ** 2, 0.0))
        quantizer.reset()
        quantizer.add(np.ascontiguousarray(cents, dtype=np.float32))
        self._norm_bound = bound
        self.metadata["norm_bound"] = bound
        self.metadata["norm_bound_raised_from"] = old
        if "tuning" in self.metadata:
            self.metadata["tuning"]["stale"] = True

    # -- persistence --------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"nlist": self.nlist, "nprobe": self.nprobe, "train_size": self.train_size, "seed": self.seed,
                "norm_headroom": self.norm_headroom, "exact_allow_limit": self.exact_allow_limit}

    def _save_files(self, directory: Path) -> list[str]:
        self._require_built()
        _faiss().write_index(self._index, str(directory / "ivf.faiss"))
        np.save(directory / "ids.npy", self.candidate_ids(), allow_pickle=False)
        self.metadata["norm_bound"] = self._norm_bound
        self.metadata["dimension"] = self._dim
        return ["ivf.faiss", "ids.npy"]

    def _load_files(self, directory: Path, state: dict[str, Any]) -> None:
        faiss = _faiss()
        path = directory / "ivf.faiss"
        if not path.exists():
            raise FileNotFoundError(f"index file {path} is missing")
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise DataError(f"{path} is not a readable FAISS index: {exc}") from exc
        if not isinstance(index, faiss.IndexIVFFlat):   # read_index already returns the concrete type
            raise DataError(f"{path} holds a {type(index).__name__}, not an IVF-Flat index.")
        self._index = index
        self._dim = int(self.metadata.get("dimension", self._index.d - 1))
        self._norm_bound = float(self.metadata["norm_bound"])
        self._set_ids(load_npy(directory / "ids.npy").astype(np.int64))
        if self._index.ntotal != self.candidate_ids().shape[0]:
            raise DataError(f"{directory}: ids.npy lists {self.candidate_ids().shape[0]} ids but the FAISS index "
                            f"holds {self._index.ntotal} vectors.")
