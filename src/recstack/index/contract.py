"""The index contract shared by exact and approximate top-k search.

Every index maps integer candidate ids to embeddings and answers

    search(queries [B, d], k, exclude=None, allow=None) -> (scores [B, k'], ids [B, k'])

with scores = q . x (inner product), k' = min(k, live candidates), rows sorted
by descending score. ``exclude`` and ``allow`` name candidate ids per query row
and act as a score mask: an excluded (or not allowed) candidate scores -inf and
is never returned. When fewer than k candidates remain for a row the tail holds
score -inf and id -1 (see :mod:`recstack.index.filters` for the accepted specs).

Inputs are checked the same way by every backend (:mod:`recstack.index.arrays`):
``build`` refuses non-finite embeddings and repeated ids, ``search`` refuses
non-finite queries, each error naming the first offending row.

Persistence: ``save(directory)`` writes ``index.json`` (the registered ``kind``,
constructor parameters, metadata, file list) plus backend files;
:func:`recstack.index.load_index` rebuilds any kind from it. Loading reads only
the files ``index.json`` lists (:func:`saved_file`): another file lying in the
folder changes nothing. Nothing is unpickled: arrays are ``.npy`` files read
with ``allow_pickle=False``.
"""

from __future__ import annotations

import abc
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, ShapeError
from ..core.id_lists import IdLists
from ..core.io import atomic_write_json
from .arrays import as_ids, as_numpy_f32
from .filters import exclusion_rows

INDEX_FORMAT = "recstack.index"
INDEX_VERSION = 1


class Index(abc.ABC):
    """Top-k maximum-inner-product search over integer-identified candidates.

    Subclasses: :class:`~recstack.index.BruteForce` (exact), ``FaissIVF``, ``ScaNN``,
    ``PgVector`` and ``PgVectorHNSW`` (optional extras), each registered under its
    ``kind`` with :func:`~recstack.index.register_index`. ``metadata`` is a JSON dict
    saved with the index (backend parameters, measured recall after ``tune``).
    """

    kind: ClassVar[str] = ""            # the registered name, set by register_index
    is_exact: ClassVar[bool] = False

    # -- to implement ----------------------------------------------------------------
    @abc.abstractmethod
    def build(self, ids: Any, embeddings: Any) -> Index:
        """Index ``embeddings`` [C, d] (finite) under unique integer ``ids`` [C] (None: 0..C-1);
        returns self."""

    @abc.abstractmethod
    def search(self, queries: Any, k: int | None = None, exclude: Any = None, allow: Any = None,
               query_keys: Any = None) -> tuple[torch.Tensor, np.ndarray]:
        """Top-k by inner product.

        Args:
            queries: [B, d] query embeddings (tensor or array), all finite.
            k: results per row (capped at the number of live candidates).
            exclude: ids never returned: an IdLists / Exclusions (with ``query_keys``, the lists
                of those keys) or B id lists (see :mod:`recstack.index.filters`).
            allow: B lists (None entries unrestricted) or an IdLists; only these are returned.
            query_keys: [B] integer keys to look ``exclude`` lists up by.

        Returns:
            (scores [B, k'] float32 tensor, ids [B, k'] int64 ndarray), descending;
            padding (fewer than k' candidates left) is -inf / -1.
        """

    @property
    @abc.abstractmethod
    def num_candidates(self) -> int:
        """Live candidates (after removals)."""

    @property
    @abc.abstractmethod
    def dimension(self) -> int:
        """Embedding width d."""

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
        """Restore backend state from the files of ``directory`` that ``state["files"]`` lists."""

    def catalogue_positions(self, ids: Any) -> np.ndarray:
        """[n] ids -> position in the catalogue order equal scores are ranked in (what
        :class:`~recstack.index.IndexTopK` counts ties by); an id not indexed gets
        ``num_candidates`` (it follows every entry). Here: ascending id, as approximate backends
        keep no build order; :class:`~recstack.index.BruteForce` uses its build order, the order
        its search serves ties in."""
        known = self.candidate_ids()
        ids = as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids)))
        if known.shape[0] == 0:
            return np.zeros(ids.shape[0], dtype=np.int64)
        lo = np.searchsorted(known, ids)
        found = (lo < known.shape[0]) & (known[np.minimum(lo, known.shape[0] - 1)] == ids)
        return np.where(found, lo, known.shape[0]).astype(np.int64)

    def remove(self, ids: Any) -> int:
        """Delete candidates by id; returns how many were removed."""
        raise NotImplementedError(f"{type(self).__name__} does not support removal.")

    def add(self, ids: Any, embeddings: Any) -> Index:
        """Add candidates (ids must be new)."""
        raise NotImplementedError(f"{type(self).__name__} does not support adding.")

    # -- shared checks ----------------------------------------------------------------------
    def _require_built(self) -> None:
        if self.num_candidates == 0:
            raise ConfigError(f"This {type(self).__name__} index is empty; call build(ids, embeddings) first.")

    def _prepare_search(self, queries: Any, k: int | None) -> tuple[np.ndarray, int]:
        """Checked search inputs: (queries [B, d] float32, finite; k' = min(k or 10, live candidates))."""
        self._require_built()
        q = as_numpy_f32(queries, "queries")
        if q.shape[1] != self.dimension:
            raise ShapeError(f"queries must be [B, {self.dimension}] to match the indexed candidates; "
                             f"got {tuple(q.shape)}.")
        k = 10 if k is None else int(k)
        if k < 1:
            raise ConfigError(f"k must be >= 1; got {k}.")
        return q, min(k, self.num_candidates)

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
        own = IdLists(np.arange(ids.shape[0] + 1, dtype=np.int64), ids.copy())
        extra = exclusion_rows(exclude, ids.shape[0])
        return self.search(self.vectors(ids), k=k, exclude=own if extra is None else own.union(extra))

    def save(self, directory: str | os.PathLike) -> Path:
        """Write the index to ``directory`` (created if needed): index.json + backend files."""
        if type(self).__dict__.get("kind") is None:
            raise ConfigError(f"{type(self).__name__} is not a registered index backend, so a saved copy could "
                              "not be loaded as it: decorate the class with @recstack.index.register_index(name).")
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
    def load(cls, directory: str | os.PathLike) -> Index:
        """Read an index of this class written by :meth:`save` (any kind: ``recstack.index.load_index``)."""
        directory = Path(directory)
        state = read_index_json(directory)
        if state["kind"] != cls.kind:
            raise ConfigError(f"{directory} holds a {state['kind']!r} index, not {cls.kind or cls.__name__!r}; "
                              "use recstack.index.load_index.")
        return cls.restore(directory, state)

    @classmethod
    def restore(cls, directory: Path, state: dict[str, Any]) -> Index:
        """Rebuild from a read ``index.json`` state (constructor parameters, metadata, then files)."""
        try:
            index = cls(**state.get("params", {}))
        except TypeError as exc:
            raise ConfigError(f"{directory}/index.json (with the parameters passed to load it) has parameters "
                              f"{cls.__name__} does not take: {exc}") from exc
        index.__dict__["_metadata"] = dict(state.get("metadata", {}))
        index._load_files(directory, state)
        return index


def read_index_json(directory: Path) -> dict[str, Any]:
    """The checked ``index.json`` of ``directory`` (format, version <= ours, a kind)."""
    path = directory / "index.json"
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"no index at {directory} (index.json is missing); "
                                "write one with index.save(dir)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(state, dict) or state.get("format") != INDEX_FORMAT or not isinstance(state.get("kind"), str):
        raise ConfigError(f"{path} is not a recstack index file.")
    if int(state.get("version", 0)) > INDEX_VERSION:
        raise ConfigError(f"{path} has index format version {state['version']}; "
                          f"this recstack reads <= {INDEX_VERSION}.")
    return state


def saved_file(directory: Path, state: Mapping[str, Any], name: str, required: bool = True) -> Path | None:
    """``directory / name`` if the index's ``index.json`` (``state``) lists ``name`` among its files.

    Loading goes through this, so a file the saved index does not list is never read,
    whatever else lies in the folder (an optional file is present exactly when the
    index that was saved had it).

    Returns:
        the path, or None for an unlisted optional file.

    Raises:
        DataError: a ``required`` file is not listed.
    """
    files = state.get("files", [])
    if isinstance(files, list) and name in files:
        return directory / name
    if required:
        raise DataError(f"{directory}/index.json does not list {name}, which a {state.get('kind')!r} index "
                        "needs; save the index again.")
    return None
