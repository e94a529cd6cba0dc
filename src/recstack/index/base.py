"""The index interface shared by exact and approximate top-k search.

Every index maps integer candidate ids to embeddings and answers

    search(queries [B, d], k, exclude=None, allow=None) -> (scores [B, k'], ids [B, k'])

with scores = q . x (inner product), k' = min(k, live candidates), rows sorted
by descending score. ``exclude`` and ``allow`` name candidate ids per query row
and act as a score mask: an excluded (or not allowed) candidate scores -inf and
is never returned. When fewer than k candidates remain for a row the tail holds
score -inf and id -1.

Filter specs accepted by every index:

* ``exclude``: ``None``; an :class:`~recstack.Exclusions` (looked up with
  ``query_keys=``); a sequence of B id lists; or a :class:`RowIds`.
* ``allow``: ``None``; a sequence of B id lists where an entry may be ``None``
  (that row is unrestricted); or a :class:`RowIds` (all rows restricted).

Persistence: ``save(directory)`` writes ``index.json`` (kind, parameters,
metadata) plus backend files; :func:`load_index` rebuilds any kind from it.
Nothing is unpickled: arrays are ``.npy`` files read with ``allow_pickle=False``.
"""

from __future__ import annotations

import abc
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.io import atomic_write_json
from ..core.errors import ConfigError, DataError, ShapeError
from ..core.exclusions import Exclusions

INDEX_FORMAT = "recstack.index"
INDEX_VERSION = 1


# ---------------------------------------------------------------------------------------
# Per-row id lists (CSR)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowIds:
    """Candidate ids per query row in CSR form: row i owns ``ids[indptr[i]:indptr[i + 1]]``.

    Args:
        indptr: int64 [B + 1] row pointers.
        ids: int64 [m] candidate ids.
    """

    indptr: np.ndarray
    ids: np.ndarray

    @property
    def batch(self) -> int:
        return self.indptr.shape[0] - 1

    @property
    def counts(self) -> np.ndarray:
        """[B] number of ids per row."""
        return np.diff(self.indptr)

    @property
    def rows(self) -> np.ndarray:
        """[m] the row of every id."""
        return np.repeat(np.arange(self.batch, dtype=np.int64), self.counts)

    def row(self, i: int) -> np.ndarray:
        return self.ids[self.indptr[i]:self.indptr[i + 1]]

    def take(self, rows: np.ndarray) -> "RowIds":
        """The lists of ``rows`` (in that order) as a new RowIds."""
        rows = np.asarray(rows, dtype=np.int64)
        counts = self.counts[rows]
        indptr = np.zeros(rows.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        if counts.sum() == 0:
            return RowIds(indptr, np.empty(0, dtype=np.int64))
        starts = np.repeat(self.indptr[rows], counts)
        offsets = np.arange(indptr[-1]) - np.repeat(indptr[:-1], counts)
        return RowIds(indptr, self.ids[starts + offsets])

    @classmethod
    def from_lists(cls, lists: Sequence[Sequence[int] | np.ndarray | torch.Tensor]) -> "RowIds":
        arrays = [np.asarray(torch.as_tensor(x).cpu() if isinstance(x, torch.Tensor) else x,
                             dtype=np.int64).reshape(-1) for x in lists]
        indptr = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([a.shape[0] for a in arrays], out=indptr[1:])
        ids = np.concatenate(arrays) if arrays else np.empty(0, dtype=np.int64)
        return cls(indptr, ids.astype(np.int64, copy=False))

    @classmethod
    def from_pairs(cls, rows: np.ndarray, ids: np.ndarray, batch: int) -> "RowIds":
        """From parallel (row, id) arrays (any order)."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        order = np.argsort(rows, kind="stable")
        indptr = np.zeros(batch + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=batch)[:batch], out=indptr[1:])
        return cls(indptr, ids[order])

    @classmethod
    def concat_rows(cls, a: "RowIds", b: "RowIds") -> "RowIds":
        """Row-wise union of two RowIds over the same batch (duplicates kept)."""
        if a.batch != b.batch:
            raise ShapeError(f"RowIds batches differ: {a.batch} vs {b.batch}.")
        return cls.from_pairs(np.concatenate([a.rows, b.rows]), np.concatenate([a.ids, b.ids]), a.batch)


def exclusion_rows(spec: Any, batch: int, query_keys: Any = None) -> RowIds | None:
    """Normalise an ``exclude=`` spec to RowIds (None when there is nothing to exclude)."""
    if spec is None:
        return None
    if isinstance(spec, RowIds):
        if spec.batch != batch:
            raise ShapeError(f"exclude has {spec.batch} rows for {batch} queries.")
        return spec
    if isinstance(spec, Exclusions):
        if query_keys is None:
            raise ConfigError("Exclusions need query_keys= (one key per query row).")
        keys = torch.as_tensor(np.asarray(query_keys) if not isinstance(query_keys, torch.Tensor) else query_keys)
        keys = keys.long().reshape(-1)
        if keys.shape[0] != batch:
            raise ShapeError(f"{batch} queries but {keys.shape[0]} query_keys.")
        rows, ids = spec.pairs(keys)
        return RowIds.from_pairs(rows.numpy(), ids.numpy(), batch)
    if len(spec) != batch:
        raise ShapeError(f"Expected {batch} exclude id lists (one per query); got {len(spec)}.")
    return RowIds.from_lists([[] if s is None else s for s in spec])


def allow_rows(spec: Any, batch: int) -> tuple[RowIds, np.ndarray] | None:
    """Normalise an ``allow=`` spec to (RowIds, restricted [B] bool); None when unrestricted."""
    if spec is None:
        return None
    if isinstance(spec, RowIds):
        if spec.batch != batch:
            raise ShapeError(f"allow has {spec.batch} rows for {batch} queries.")
        return spec, np.ones(batch, dtype=bool)
    if len(spec) != batch:
        raise ShapeError(f"Expected {batch} allow id lists (one per query, None = unrestricted); got {len(spec)}.")
    restricted = np.array([s is not None for s in spec], dtype=bool)
    if not restricted.any():
        return None
    return RowIds.from_lists([[] if s is None else s for s in spec]), restricted


def row_membership(ids: np.ndarray, row_ids: RowIds) -> np.ndarray:
    """[b, n] bool: ``ids[r, j]`` is in row r's list. Vectorised through dense codes."""
    b, n = ids.shape
    if row_ids.ids.shape[0] == 0 or ids.size == 0:
        return np.zeros((b, n), dtype=bool)
    uniq, inverse = np.unique(np.concatenate([ids.reshape(-1), row_ids.ids]), return_inverse=True)
    span = np.int64(uniq.shape[0])
    code_ids = inverse[:ids.size].reshape(b, n)
    code_list = inverse[ids.size:]
    keys = np.arange(b, dtype=np.int64)[:, None] * span + code_ids
    list_keys = row_ids.rows * span + code_list
    return np.isin(keys, list_keys)


# ---------------------------------------------------------------------------------------
# Helpers shared by backends
# ---------------------------------------------------------------------------------------
def as_numpy_f32(x: Any, what: str = "embeddings") -> np.ndarray:
    """Tensor / array -> C-contiguous float32 ndarray (no copy when already one)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        x = x.float().numpy() if x.dtype != torch.float32 else x.numpy()
    arr = np.ascontiguousarray(np.asarray(x), dtype=np.float32)
    if arr.ndim != 2:
        raise ShapeError(f"{what} must be 2-D [n, d]; got shape {tuple(arr.shape)}.")
    return arr


def as_ids(ids: Any, n: int | None = None, what: str = "ids") -> np.ndarray:
    """Integer ids -> int64 [n] ndarray."""
    if isinstance(ids, torch.Tensor):
        ids = ids.detach().cpu().numpy()
    arr = np.asarray(ids)
    if arr.ndim != 1:
        raise ShapeError(f"{what} must be 1-D; got shape {tuple(arr.shape)}.")
    if arr.size and arr.dtype.kind not in "iu":
        raise DataError(f"{what} must be integers (encode raw ids first); got dtype {arr.dtype}.")
    if n is not None and arr.shape[0] != n:
        raise ShapeError(f"{n} embeddings but {arr.shape[0]} {what}.")
    return arr.astype(np.int64, copy=False)


def check_unique(ids: np.ndarray, what: str = "ids") -> np.ndarray:
    """Sorted copy of ``ids``; DataError when an id repeats."""
    sorted_ids = np.sort(ids)
    dup = sorted_ids[1:][sorted_ids[1:] == sorted_ids[:-1]]
    if dup.size:
        raise DataError(f"{what} must be unique; {np.unique(dup).size} repeat, e.g. {np.unique(dup)[:5].tolist()}.")
    return sorted_ids


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
    hits = row_membership(found, RowIds.from_lists([t[t >= 0] for t in truth])) & (found >= 0)
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
class Index(abc.ABC):
    """Top-k maximum-inner-product search over integer-identified candidates.

    Subclasses: :class:`~recstack.index.BruteForce` (exact), ``FaissIVF`` and
    ``ScaNN`` (approximate, optional extras). ``metadata`` is a JSON dict saved
    with the index (backend parameters, measured recall after :meth:`tune`).
    """

    kind: ClassVar[str] = "index"
    is_exact: ClassVar[bool] = False
    _registry: ClassVar[dict[str, type["Index"]]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "kind" in cls.__dict__:
            Index._registry[cls.kind] = cls

    # -- to implement ----------------------------------------------------------------
    @abc.abstractmethod
    def build(self, ids: Any, embeddings: Any) -> "Index":
        """Index ``embeddings`` [C, d] under integer ``ids`` [C] (None: 0..C-1); returns self."""

    @abc.abstractmethod
    def search(self, queries: Any, k: int | None = None, exclude: Any = None, allow: Any = None,
               query_keys: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """Top-k by inner product: (scores [B, k'] float32 tensor, ids [B, k'] ndarray)."""

    @property
    @abc.abstractmethod
    def num_candidates(self) -> int:
        """Live candidates (after removals)."""

    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Embedding width d."""

    def _require_built(self) -> None:
        if self.num_candidates == 0:
            raise ConfigError(f"This {type(self).__name__} index is empty; call build(ids, embeddings) first.")

    def _prepare_search(self, queries: Any, k: int | None) -> tuple[np.ndarray, int]:
        """Checked search inputs: (queries [B, d] float32, k' = min(k or 10, live candidates))."""
        self._require_built()
        q = as_numpy_f32(queries, "queries")
        if q.shape[1] != self.dimension:
            raise ShapeError(f"queries must be [B, {self.dimension}] to match the indexed candidates; "
                             f"got {tuple(q.shape)}.")
        k = 10 if k is None else int(k)
        if k < 1:
            raise ConfigError(f"k must be >= 1; got {k}.")
        return q, min(k, self.num_candidates)

    @abc.abstractmethod
    def vectors(self, ids: Any) -> torch.Tensor:
        """[n] ids -> [n, d] stored embeddings; DataError for unknown ids."""

    @abc.abstractmethod
    def candidate_ids(self) -> np.ndarray:
        """Sorted int64 ids of the live candidates."""

    @abc.abstractmethod
    def _params(self) -> dict[str, Any]:
        """Constructor arguments (JSON) that ``load`` passes back."""

    @abc.abstractmethod
    def _save_files(self, directory: Path) -> list[str]:
        """Write backend files into ``directory``; return their names."""

    @abc.abstractmethod
    def _load_files(self, directory: Path, state: dict[str, Any]) -> None:
        """Restore backend state from ``directory``."""

    def remove(self, ids: Any) -> int:
        """Delete candidates by id; returns how many were removed."""
        raise NotImplementedError(f"{type(self).__name__} does not support removal.")

    def add(self, ids: Any, embeddings: Any) -> "Index":
        """Add candidates (ids must be new)."""
        raise NotImplementedError(f"{type(self).__name__} does not support adding.")

    # -- shared ---------------------------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        meta = self.__dict__.setdefault("_metadata", {})
        return meta

    def describe(self) -> dict[str, Any]:
        """JSON summary: kind, exactness, size, parameters and metadata."""
        return {"kind": self.kind, "is_exact": self.is_exact, "num_candidates": self.num_candidates,
                "dimension": self.dimension, "params": self._params(), "metadata": dict(self.metadata)}

    def similar(self, ids: Any, k: int = 10, exclude: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """Item-to-item: search with each item's own embedding, the item itself excluded.

        Args:
            ids: [n] candidate ids.
            k: results per item.
            exclude: extra exclusions per row (as in :meth:`search`).
        """
        ids = as_ids(np.atleast_1d(np.asarray(ids)))
        own = RowIds(np.arange(ids.shape[0] + 1, dtype=np.int64), ids.copy())
        extra = exclusion_rows(exclude, ids.shape[0])
        rows = own if extra is None else RowIds.concat_rows(own, extra)
        return self.search(self.vectors(ids), k=k, exclude=rows)

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` (created if needed): index.json + backend files."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        files = self._save_files(directory)
        atomic_write_json(directory / "index.json", {
            "format": INDEX_FORMAT, "version": INDEX_VERSION, "kind": self.kind,
            "params": self._params(), "metadata": self.metadata, "files": files,
            "num_candidates": self.num_candidates, "dimension": self.dimension,
        })
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Index":
        """Read an index written by :meth:`save` (any kind when called on ``Index``)."""
        directory = Path(directory)
        state = read_index_json(directory)
        kind = state["kind"]
        target = _index_class(kind)
        if cls is not Index and not issubclass(target, cls):
            raise ConfigError(f"{directory} holds a {kind!r} index, not {cls.kind!r}; use recstack.index.load_index.")
        try:
            index = target(**state.get("params", {}))
        except TypeError as exc:
            raise ConfigError(f"{directory}/index.json has parameters this recstack does not know: {exc}") from exc
        index.__dict__["_metadata"] = dict(state.get("metadata", {}))
        index._load_files(directory, state)
        return index


def read_index_json(directory: Path) -> dict[str, Any]:
    path = directory / "index.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no index at {directory} (index.json is missing); "
                                "write one with index.save(dir)") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != INDEX_FORMAT:
        raise ConfigError(f"{path} is not a recstack index file.")
    if int(state.get("version", 0)) > INDEX_VERSION:
        raise ConfigError(f"{path} has index format version {state['version']}; "
                          f"this recstack reads <= {INDEX_VERSION}.")
    return state


def _index_class(kind: str) -> type[Index]:
    # Optional backends register on import.
    if kind == "faiss_ivf":
        from . import faiss_index  # noqa: F401
    elif kind == "scann":
        from . import scann_index  # noqa: F401
    try:
        return Index._registry[kind]
    except KeyError:
        raise ConfigError(f"unknown index kind {kind!r}; known: {sorted(Index._registry)}") from None


def load_index(directory: str | os.PathLike) -> Index:
    """Load any index saved with ``index.save(directory)``."""
    return Index.load(directory)


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """``np.load`` without pickle; optionally memory-mapped (read-only)."""
    try:
        return np.load(path, allow_pickle=False, mmap_mode="r" if mmap else None)
    except FileNotFoundError:
        raise FileNotFoundError(f"index file {path} is missing") from None
    except ValueError as exc:
        raise DataError(f"{path} is not a plain numpy array file ({exc}); refusing to unpickle it.") from exc


# ---------------------------------------------------------------------------------------
# Approximate indexes: filtering, re-scoring and tuning on top of backend hooks
# ---------------------------------------------------------------------------------------
class ApproximateIndex(Index):
    """Shared search logic for ANN backends.

    Backends implement batch search without filters (``_search_batch``), a
    filtered single-row search that can be made exhaustive
    (``_filtered_search_row``), vector lookup and iteration, and a ladder of
    search settings for :meth:`tune`. On top of that this class provides:

    * exclusions by over-fetching ``k + max excluded ids in the batch`` and
      dropping excluded ids; rows still short of ``min(k, remaining)`` are redone
      with the backend's filtered search, widened until complete;
    * allow-lists scored exactly (the union of allowed ids up to
      ``exact_allow_limit`` is gathered and scored by matmul), larger ones through
      the filtered search;
    * :meth:`tune` (recall-targeted choice of the search setting).

    Returned scores are exact inner products of the returned candidates.
    """

    is_exact = False
    exact_allow_limit: int = 16384

    # -- hooks --------------------------------------------------------------------------
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

    def contains(self, ids: np.ndarray) -> np.ndarray:
        """[n] bool: which ids are live candidates."""
        live = self.candidate_ids()
        if live.shape[0] == 0:
            return np.zeros(ids.shape, dtype=bool)
        pos = np.clip(np.searchsorted(live, ids), 0, live.shape[0] - 1)
        return live[pos] == ids

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
        """Approximate top-k by inner product; see :class:`ApproximateIndex` and the module doc.

        Args:
            queries: [B, d] query embeddings (tensor or array).
            k: results per row (capped at the number of candidates).
            exclude: ids never returned (Exclusions with ``query_keys``, B lists, RowIds).
            allow: B lists (None entries unrestricted) or RowIds; only these are returned.

        Returns:
            (scores [B, k'] float32 tensor, ids [B, k'] int64 ndarray), descending;
            padding (fewer than k' candidates left) is -inf / -1.
        """
        q, k = self._prepare_search(queries, k)
        batch = q.shape[0]
        if batch == 0:
            return torch.empty((0, k)), np.empty((0, k), dtype=np.int64)
        excl = exclusion_rows(exclude, batch, query_keys)
        allowed = allow_rows(allow, batch)
        if allowed is None:                       # the common case: no allow-lists, no copies
            s, i = self._search_excluding(q, k, excl)
            return torch.from_numpy(np.ascontiguousarray(s, dtype=np.float32)), i
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
        return torch.from_numpy(out_s), out_i

    def _search_excluding(self, q: np.ndarray, k: int, excl: RowIds | None) -> tuple[np.ndarray, np.ndarray]:
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
                excluded = row_membership(ids, excl)
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
            ex = excl.row(r) if excl is not None else np.empty(0, np.int64)
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

    def _search_allowed(self, q: np.ndarray, k: int, allowed: RowIds,
                        excl: RowIds | None) -> tuple[np.ndarray, np.ndarray]:
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
                ex = excl.row(r) if excl is not None else np.empty(0, np.int64)
                rs, ri = self._filtered_search_row(q[r], k, allowed.row(r), ex)
                out_s[r, :rs.shape[0]], out_i[r, :ri.shape[0]] = rs, ri
            return out_s, out_i
        vecs = self._vectors_np(union)
        scores = torch.from_numpy(q) @ torch.from_numpy(vecs).T              # [b, U]
        cand = np.broadcast_to(union, (b, union.shape[0]))
        mask = ~row_membership(cand, allowed)
        if excl is not None:
            mask |= row_membership(cand, excl)
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
