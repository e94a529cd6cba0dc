"""ScaNN: Google's tree + anisotropic-quantisation MIPS index (the TFRS ``ScaNN`` layer).

Built with the standard recipe

    scann.scann_ops_pybind.builder(x, k, "dot_product")
        .tree(num_leaves, num_leaves_to_search, training_sample_size)
        .score_ah(2, anisotropic_quantization_threshold=0.2)
        .reorder(reorder)

and searched with ``leaves_to_search`` and ``pre_reorder_num_neighbors``
(``reorder``) as the tunable setting. ScaNN has no id filter, so filtering is
the shared over-fetch + exact fallback of :class:`ApproximateIndex`; the
index keeps the float32 embeddings (needed for exact allow-lists, the
fallback and re-scoring; ScaNN's own re-ordering already stores the same
data). Ids are wrapped here (ScaNN's own docids wrapper pickles them and
mutates the caller's list). Builds are not bit-reproducible (ScaNN's k-means
is multi-threaded), which is why FAISS is the default.

Optional dependency, Linux x86_64/aarch64 only: ``pip install scann``
(extra ``recstack[scann]``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, ShapeError
from .approximate import ApproximateIndex
from .arrays import as_ids, as_numpy_f32, build_inputs, load_npy
from .contract import saved_file
from .registry import register_index


def _scann() -> Any:
    try:
        import scann
    except ImportError:
        raise ImportError("The ScaNN index needs the scann package (Linux only): pip install 'recstack[scann]' "
                          "(or pip install scann).") from None
    return scann


@register_index("scann")
class ScaNN(ApproximateIndex):
    """ScaNN tree + AH + exact re-ordering behind the recstack index interface.

    Args:
        num_leaves: tree partitions (default ≈ 2 sqrt(N): 632 at 100k, 2000 at 1M).
        leaves_to_search: partitions searched per query (default 10% of the leaves).
        reorder: candidates re-scored exactly (``pre_reorder_num_neighbors``; default 1000).
        training_sample_size: points used to train the tree and quantiser (<= N).
        exact_allow_limit: allow-lists with up to this many distinct ids are scored exactly.
        num_threads: ScaNN search threads for batched calls (None: its default).
    """

    def __init__(self, num_leaves: int | None = None, leaves_to_search: int | None = None,
                 reorder: int | None = None, training_sample_size: int = 250_000,
                 exact_allow_limit: int = 16384, num_threads: int | None = None):
        self.num_leaves = None if num_leaves is None else int(num_leaves)
        self.leaves_to_search = None if leaves_to_search is None else int(leaves_to_search)
        self.reorder = None if reorder is None else int(reorder)
        self.training_sample_size = int(training_sample_size)
        self.exact_allow_limit = int(exact_allow_limit)
        self.num_threads = num_threads
        self._searcher: Any = None
        self._x: np.ndarray = np.empty((0, 0), np.float32)   # position -> vector
        self._pos_ids: np.ndarray = np.empty(0, np.int64)     # position -> id
        self._pos_of_sorted: np.ndarray = np.empty(0, np.int64)
        self._lock = threading.Lock()
        self._set_ids(np.empty(0, np.int64))

    # -- building ---------------------------------------------------------------------------
    def build(self, ids: Any, embeddings: Any) -> "ScaNN":
        scann = _scann()
        ids, x = build_inputs(ids, embeddings)
        n = x.shape[0]
        leaves = min(n, self.num_leaves or max(1, int(round(2 * math.sqrt(n)))))
        self.num_leaves = leaves
        if self.leaves_to_search is None:
            self.leaves_to_search = max(1, int(math.ceil(0.1 * leaves)))
        self.leaves_to_search = min(self.leaves_to_search, leaves)
        if self.reorder is None:
            self.reorder = 1000
        builder = scann.scann_ops_pybind.builder(x, 10, "dot_product")
        builder = builder.tree(num_leaves=leaves, num_leaves_to_search=self.leaves_to_search,
                               training_sample_size=min(n, self.training_sample_size))
        builder = builder.score_ah(2, anisotropic_quantization_threshold=0.2).reorder(self.reorder)
        self._searcher = builder.build()
        if self.num_threads is not None:
            self._searcher.set_num_threads(int(self.num_threads))
        self._x = x
        self._set_positions(ids.copy())
        self.metadata.update({"num_leaves": leaves, "training_sample_size": min(n, self.training_sample_size)})
        self.metadata.pop("tuning", None)
        self.metadata.pop("recall", None)
        return self

    def _set_positions(self, pos_ids: np.ndarray) -> None:
        self._pos_ids = pos_ids
        order = np.argsort(pos_ids, kind="stable")
        self._pos_of_sorted = order
        self._set_ids(pos_ids[order])

    def _positions(self, ids: np.ndarray) -> np.ndarray:
        return self._pos_of_sorted[np.searchsorted(self.candidate_ids(), ids)]

    @property
    def num_candidates(self) -> int:
        return int(self._pos_ids.shape[0]) if self._searcher is not None else 0

    @property
    def dimension(self) -> int:
        return int(self._x.shape[1]) if self._searcher is not None else 0

    # -- search hooks ---------------------------------------------------------------------------
    def search_params(self) -> dict[str, Any]:
        return {"leaves_to_search": self.leaves_to_search, "reorder": self.reorder}

    def set_search_params(self, leaves_to_search: int | None = None, reorder: int | None = None,
                          **unknown: Any) -> None:
        if unknown:
            raise ConfigError(f"ScaNN search settings are leaves_to_search and reorder; got {sorted(unknown)}.")
        if leaves_to_search is not None:
            self.leaves_to_search = max(1, min(int(leaves_to_search), self.num_leaves or int(leaves_to_search)))
        if reorder is not None:
            self.reorder = max(1, int(reorder))

    def _tuning_ladder(self, k: int) -> list[dict[str, Any]]:
        leaves = self.num_leaves or 1
        steps = sorted({max(1, min(leaves, int(round(leaves * f))))
                        for f in (0.01, 0.02, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.5, 0.75, 1.0)})
        # Per leaf count, widen the exact re-ordering before searching more leaves.
        return [{"leaves_to_search": s, "reorder": r} for s in steps for r in (10 * k, 20 * k, 40 * k)]

    def _search_batch(self, q: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        pos, dist = self._searcher.search_batched(q, final_num_neighbors=int(fetch),
                                                  pre_reorder_num_neighbors=max(int(fetch), self.reorder),
                                                  leaves_to_search=self.leaves_to_search)
        pos = np.asarray(pos, dtype=np.int64).reshape(q.shape[0], -1)[:, :fetch]
        pad = ~np.isfinite(np.asarray(dist).reshape(q.shape[0], -1)[:, :fetch])  # short lists: NaN
        width = pos.shape[1]
        ids = np.full((q.shape[0], fetch), -1, dtype=np.int64)
        scores = np.full((q.shape[0], fetch), -np.inf, dtype=np.float32)
        if width:
            pos = np.where(pad, 0, pos)
            # Exact re-scoring from the stored vectors (ScaNN's re-ordered distances agree
            # up to rounding; this keeps scores identical across backends).
            s = np.einsum("bd,bwd->bw", q, self._x[pos]).astype(np.float32)
            s[pad] = -np.inf
            scores[:, :width] = s
            ids[:, :width] = np.where(pad, -1, self._pos_ids[pos])
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)

    def _filtered_search_row(self, q: np.ndarray, k: int, allow: np.ndarray | None,
                             exclude: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact: score the pool (allow-list or everything) minus ``exclude``."""
        if allow is None:
            pos = np.arange(self.num_candidates)
        else:
            allow = np.unique(allow)
            pos = self._positions(allow[self.contains(allow)])
        scores = torch.from_numpy(self._x[pos] if allow is not None else self._x) @ torch.from_numpy(q)
        exclude = np.unique(exclude)
        exclude = exclude[self.contains(exclude)]
        if exclude.shape[0]:
            hit = np.isin(pos, self._positions(exclude))
            scores[torch.from_numpy(hit)] = float("-inf")
        kk = min(k, pos.shape[0])
        top = torch.topk(scores, kk)
        ok = ~torch.isneginf(top.values)
        return top.values[ok].numpy(), self._pos_ids[pos[top.indices[ok].numpy()]]

    def _vectors_np(self, ids: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(self._x[self._positions(ids)])

    def _iter_vectors(self, chunk: int = 65536) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, self.num_candidates, chunk):
            yield self._pos_ids[start:start + chunk], self._x[start:start + chunk]

    # -- mutation -----------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Delete by id. ScaNN deletes by position and moves the last point into the hole;
        the id and vector tables mirror that, one deletion at a time."""
        self._require_built()
        ids = np.unique(as_ids(np.atleast_1d(np.asarray(ids))))
        ids = ids[self.contains(ids)]
        with self._lock:
            pos_ids = self._pos_ids.copy()
            x = np.array(self._x)   # private copy: the caller's array is not mutated
            where = {int(v): i for i, v in enumerate(pos_ids)} if ids.shape[0] else {}
            last = pos_ids.shape[0] - 1
            for value in ids.tolist():
                p = where.pop(value)
                self._searcher.searcher.delete([p])
                if p != last:
                    moved = int(pos_ids[last])
                    pos_ids[p], x[p] = moved, x[last]
                    where[moved] = p
                last -= 1
            self._x = x[:last + 1]
            self._set_positions(pos_ids[:last + 1])
        return int(ids.shape[0])

    def add(self, ids: Any, embeddings: Any) -> "ScaNN":
        """Add candidates by rebuilding (ScaNN's upsert needs its docid wrapper)."""
        if self._searcher is None:
            return self.build(ids, embeddings)
        x = as_numpy_f32(embeddings, "candidate embeddings")
        if x.shape[1] != self.dimension:
            raise ShapeError(f"embeddings must be [n, {self.dimension}]; got {tuple(x.shape)}.")
        new = as_ids(ids, x.shape[0])
        clash = self.contains(new)
        if clash.any():
            raise DataError(f"candidate id(s) {new[clash][:5].tolist()} are already indexed; remove them first.")
        return self.build(np.concatenate([self._pos_ids, new]), np.concatenate([self._x, x]))

    # -- persistence --------------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"num_leaves": self.num_leaves, "leaves_to_search": self.leaves_to_search, "reorder": self.reorder,
                "training_sample_size": self.training_sample_size, "exact_allow_limit": self.exact_allow_limit}

    def _save_files(self, directory: Path) -> list[str]:
        self._require_built()
        assets = directory / "scann"
        assets.mkdir(exist_ok=True)
        self._searcher.serialize(str(assets), relative_path=True)   # movable; no docids -> no pickle
        np.save(directory / "ids.npy", self._pos_ids, allow_pickle=False)
        files = ["ids.npy"]
        # ScaNN's re-ordering keeps the float vectors (scann/dataset.npy, position order);
        # store our own copy only if this configuration did not write them.
        if not (assets / "dataset.npy").exists():
            np.save(directory / "embeddings.npy", self._x, allow_pickle=False)
            files.append("embeddings.npy")
        return files + [f"scann/{p.name}" for p in sorted(assets.iterdir())]

    def _load_files(self, directory: Path, state: dict[str, Any]) -> None:
        scann = _scann()
        assets = directory / "scann"
        if (assets / "scann_docids.pkl").exists():
            raise DataError(f"{assets} contains scann_docids.pkl; recstack never writes it and will not unpickle it.")
        if not (assets / "scann_assets.pbtxt").exists():
            raise FileNotFoundError(f"ScaNN assets missing in {assets}")
        saved_file(directory, state, "scann/scann_assets.pbtxt")      # the assets the saved index wrote
        self._searcher = scann.scann_ops_pybind.load_searcher(str(assets), assets_backcompat_shim=False)
        if self.num_threads is not None:
            self._searcher.set_num_threads(int(self.num_threads))
        # The vectors: our own copy when the saved index wrote one, else ScaNN's re-ordering data.
        vectors = saved_file(directory, state, "embeddings.npy", required=False) \
            or saved_file(directory, state, "scann/dataset.npy")
        self._x = np.array(load_npy(vectors), dtype=np.float32)
        self._set_positions(load_npy(saved_file(directory, state, "ids.npy")).astype(np.int64))
        if self._x.shape[0] != self._pos_ids.shape[0]:
            raise DataError(f"{directory}: {self._pos_ids.shape[0]} ids but {self._x.shape[0]} stored vectors.")
        if self._searcher.size() != self._pos_ids.shape[0]:
            raise DataError(f"{directory}: {self._pos_ids.shape[0]} ids but ScaNN holds "
                            f"{self._searcher.size()} points.")
