"""BruteForce: exact top-k by scoring every candidate (torch matmul + top-k, chunked)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..layers.candidates import IdPositions, embed_in_batches
from ..core.errors import ConfigError, DataError, ShapeError
from .base import Index, RowIds, allow_rows, as_ids, exclusion_rows, load_npy


class BruteForce(Index):
    """Exact maximum-inner-product search, the counterpart of TFRS's BruteForce layer.

    Scores are ``queries @ candidates.T`` computed in [B, chunk] tiles of at most
    ``max_scores_in_memory`` floats (64 MB by default), so a 1M x 128 catalogue is
    searched in bounded memory; each tile keeps its top-k and the running best
    lists are merged. The matmul uses torch's intra-op threads
    (``torch.set_num_threads``). Candidate ids may repeat (masking an id masks
    every position holding it).

    Args:
        query_model: optional callable mapping raw queries to [B, d] embeddings
            (e.g. ``nn.Sequential(StringLookup(...), Embedding(...))``), so that raw
            user ids go in and candidate identifiers come out.
        k: default number of results.
        max_scores_in_memory: bound on one query-block x candidate-chunk score tile.

    Example:
        >>> index = BruteForce(user_model).index(movie_embeddings, identifiers=titles)
        >>> scores, titles = index(["42"], k=3)
        >>> exact = BruteForce().build(item_ids, item_embeddings)   # the Index interface
    """

    kind = "brute_force"
    is_exact = True

    def __init__(self, query_model: Callable[[Any], torch.Tensor] | None = None, k: int = 10,
                 max_scores_in_memory: int = 1 << 24):
        self.query_model = query_model
        self.k = k
        self.max_scores_in_memory = int(max_scores_in_memory)
        self._embeddings: torch.Tensor | None = None
        self._identifiers: np.ndarray | None = None
        self._ids: IdPositions | None = None

    # Building -------------------------------------------------------------
    def index(self, candidates: torch.Tensor, identifiers: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
              candidate_ids: torch.Tensor | None = None) -> "BruteForce":
        """Index [C, d] candidate embeddings.

        Args:
            candidates: [C, d] embeddings.
            identifiers: what search returns for each candidate (titles, raw ids...);
                default: positions 0..C-1.
            candidate_ids: [C] integer ids used by ``exclude``/``allow`` (default:
                positions). Exclusion lists name these ids.
        """
        candidates = torch.as_tensor(candidates)
        if candidates.dim() != 2:
            raise ShapeError(f"candidates must be [C, d]; got shape {tuple(candidates.shape)}.")
        num = candidates.shape[0]
        if identifiers is None:
            identifiers = np.arange(num)
        ident = identifiers.cpu().numpy() if isinstance(identifiers, torch.Tensor) else np.asarray(identifiers)
        if ident.shape[0] != num:
            raise ShapeError(f"{num} candidate embeddings but {ident.shape[0]} identifiers.")
        ids = torch.arange(num) if candidate_ids is None else torch.as_tensor(candidate_ids).long()
        if ids.shape[0] != num:
            raise ShapeError(f"{num} candidate embeddings but {ids.shape[0]} candidate_ids.")
        self._embeddings = candidates.detach().float().contiguous()
        self._identifiers = ident
        self._ids = IdPositions(ids)
        return self

    def build(self, ids: Any, embeddings: Any) -> "BruteForce":
        """The :class:`~recstack.index.Index` interface: ids [C] (None: 0..C-1) are both the
        returned identifiers and the ids that ``exclude``/``allow`` name."""
        emb = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
        if emb.dim() != 2:
            raise ShapeError(f"embeddings must be [C, d]; got shape {tuple(emb.shape)}.")
        ids_np = np.arange(emb.shape[0], dtype=np.int64) if ids is None else as_ids(ids, emb.shape[0])
        return self.index(emb, identifiers=ids_np, candidate_ids=torch.from_numpy(ids_np.copy()))

    def index_from_tower(self, tower: Callable[[Any], torch.Tensor],
                         inputs: torch.Tensor | Mapping[str, torch.Tensor],
                         identifiers: Sequence[Any] | np.ndarray | None = None,
                         candidate_ids: torch.Tensor | None = None,
                         batch_size: int = 8192) -> "BruteForce":
        """Embed ``inputs`` with the candidate ``tower`` (eval mode, no grad) and index them."""
        return self.index(embed_in_batches(tower, inputs, batch_size), identifiers, candidate_ids)

    @property
    def num_candidates(self) -> int:
        return 0 if self._embeddings is None else self._embeddings.shape[0]

    @property
    def dimension(self) -> int:
        return 0 if self._embeddings is None else self._embeddings.shape[1]

    def candidate_ids(self) -> np.ndarray:
        """Sorted distinct candidate ids."""
        return np.empty(0, np.int64) if self._ids is None else torch.unique(self._ids.ids).numpy()

    def vectors(self, ids: Any) -> torch.Tensor:
        """[n] candidate ids -> [n, d] embeddings (first position of a repeated id)."""
        self._require_index()
        assert self._ids is not None and self._embeddings is not None
        ids_t = torch.as_tensor(as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))))
        lo = torch.searchsorted(self._ids._sorted, ids_t)
        found = (lo < len(self._ids)) & (self._ids._sorted[lo.clamp(max=len(self._ids) - 1)] == ids_t)
        if not bool(found.all()):
            raise DataError(f"unknown candidate id(s) {ids_t[~found][:5].tolist()}.")
        return self._embeddings[self._ids._order[lo]]

    # Searching -----------------------------------------------------------------
    def __call__(self, queries: Any, k: int | None = None, exclude: Any = None,
                 query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Top-k for raw queries (through ``query_model``) or for [B, d] query embeddings."""
        if self.query_model is not None and not (isinstance(queries, torch.Tensor) and queries.is_floating_point()):
            with torch.no_grad():
                queries = self.query_model(queries)
        return self.search(queries, k=k, exclude=exclude, query_keys=query_keys)

    def _require_index(self) -> None:
        if self._embeddings is None or self._ids is None or self._identifiers is None:
            raise ConfigError("This index is empty; call index() or index_from_tower() first.")

    def _queries(self, queries: Any) -> torch.Tensor:
        self._require_index()
        q = torch.as_tensor(queries).detach().float()
        if q.dim() != 2 or q.shape[1] != self.dimension:
            raise ShapeError(
                f"queries must be [B, {self.dimension}] to match the indexed candidates; got {tuple(q.shape)}.")
        return q

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int | None = None, exclude: Any = None,
               allow: Any = None, query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Exact top-k by inner product.

        Args:
            queries: [B, d] query embeddings.
            k: results per query (default ``self.k``); capped at the catalogue size.
            exclude: candidate ids to skip, either an :class:`Exclusions` (looked up
                by ``query_keys``), a sequence of B id lists, or a :class:`RowIds`.
            allow: optional sequence of B id lists (a ``None`` entry leaves that row
                unrestricted) or RowIds; only those candidates are scored.
            query_keys: [B] keys for an :class:`Exclusions`.

        Returns:
            (scores [B, k'] float32 tensor, identifiers [B, k']) in descending score
            order, k' = min(k, C). Masked candidates score -inf; if fewer than k
            remain, the tail holds -inf scores (with integer identifiers, id -1;
            otherwise arbitrary identifiers).
        """
        q = self._queries(queries)
        assert self._embeddings is not None and self._identifiers is not None
        k = min(self.k if k is None else int(k), self.num_candidates)
        if k < 1:
            raise ConfigError(f"k must be >= 1; got {k}.")
        batch = q.shape[0]
        exclude_rows, exclude_pos = self._pairs(exclude, batch, query_keys)
        allowed = allow_rows(allow, batch)
        if allowed is not None:
            allow_rows_t, allow_pos = self._positions(allowed[0])
            unrestricted = torch.from_numpy(~allowed[1])
        chunk = max(k, self.max_scores_in_memory // max(batch, 1))
        best_scores = torch.full((batch, 0), float("-inf"))
        best_pos = torch.zeros((batch, 0), dtype=torch.long)
        for start in range(0, self.num_candidates, chunk):
            stop = min(start + chunk, self.num_candidates)
            scores = q @ self._embeddings[start:stop].T                  # [B, chunk]
            if allowed is not None:
                ok = torch.zeros_like(scores, dtype=torch.bool)
                ok[unrestricted] = True
                inside = (allow_pos >= start) & (allow_pos < stop)
                ok[allow_rows_t[inside], allow_pos[inside] - start] = True
                scores.masked_fill_(~ok, float("-inf"))
            if exclude_rows.numel():
                inside = (exclude_pos >= start) & (exclude_pos < stop)
                scores[exclude_rows[inside], exclude_pos[inside] - start] = float("-inf")
            top = torch.topk(scores, min(k, stop - start), dim=1)
            best_scores = torch.cat([best_scores, top.values], dim=1)
            best_pos = torch.cat([best_pos, top.indices + start], dim=1)
            if best_scores.shape[1] > k:
                keep = torch.topk(best_scores, k, dim=1)
                best_scores = keep.values
                best_pos = best_pos.gather(1, keep.indices)
        # topk within the merged set can reorder ties; sort for a stable descending result.
        order = torch.sort(best_scores, dim=1, descending=True, stable=True).indices
        best_scores = best_scores.gather(1, order)
        best_pos = best_pos.gather(1, order)
        out = self._identifiers[best_pos.numpy()]
        if out.dtype.kind in "iu":
            out = out.astype(np.int64, copy=True)
            out[torch.isneginf(best_scores).numpy()] = -1
        return best_scores, out

    @torch.no_grad()
    def count_higher(self, queries: Any, thresholds: torch.Tensor, exclude: Any = None,
                     query_keys: Any = None) -> torch.Tensor:
        """[B] number of unmasked candidates with q . x > threshold (exact ranks for metrics).

        Args:
            queries: [B, d]; thresholds: [B]; exclude: as in :meth:`search`.
        """
        q = self._queries(queries)
        assert self._embeddings is not None
        thresholds = torch.as_tensor(thresholds).reshape(-1).to(q.dtype)
        rows, pos = self._pairs(exclude, q.shape[0], query_keys)
        counts = torch.zeros(q.shape[0], dtype=torch.long)
        chunk = max(1, self.max_scores_in_memory // max(q.shape[0], 1))
        for start in range(0, self.num_candidates, chunk):
            stop = min(start + chunk, self.num_candidates)
            scores = q @ self._embeddings[start:stop].T
            if rows.numel():
                inside = (pos >= start) & (pos < stop)
                scores[rows[inside], pos[inside] - start] = float("-inf")
            counts += (scores > thresholds[:, None]).sum(dim=1)
        return counts

    def _positions(self, row_ids: RowIds) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._ids is not None
        return self._ids.positions(torch.from_numpy(row_ids.rows), torch.from_numpy(row_ids.ids))

    def _pairs(self, spec: Any, batch: int, query_keys: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) pairs for an Exclusions object, B lists of candidate ids, or RowIds."""
        rows = exclusion_rows(spec, batch, query_keys)
        if rows is None:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        return self._positions(rows)

    # Mutation ------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Drop every position holding one of ``ids``; returns the number of positions removed."""
        self._require_index()
        assert self._ids is not None and self._embeddings is not None and self._identifiers is not None
        drop = torch.from_numpy(np.isin(self._ids.ids.numpy(), as_ids(np.atleast_1d(np.asarray(ids)))))
        keep = ~drop
        self._embeddings = self._embeddings[keep].contiguous()
        self._identifiers = self._identifiers[keep.numpy()]
        self._ids = IdPositions(self._ids.ids[keep])
        return int(drop.sum())

    def add(self, ids: Any, embeddings: Any) -> "BruteForce":
        """Append candidates (integer ids; identifiers = ids)."""
        emb = torch.as_tensor(np.asarray(embeddings) if not isinstance(embeddings, torch.Tensor) else embeddings)
        if self._embeddings is None:
            return self.build(ids, emb)
        assert self._ids is not None and self._identifiers is not None
        if emb.dim() != 2 or emb.shape[1] != self.dimension:
            raise ShapeError(f"embeddings must be [n, {self.dimension}]; got {tuple(emb.shape)}.")
        new = as_ids(ids, emb.shape[0])
        self._embeddings = torch.cat([self._embeddings, emb.detach().float()]).contiguous()
        self._identifiers = np.concatenate([self._identifiers, new])
        self._ids = IdPositions(torch.cat([self._ids.ids, torch.from_numpy(new.copy())]))
        return self

    # Persistence ---------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "max_scores_in_memory": self.max_scores_in_memory}

    def _save_files(self, directory: Path) -> list[str]:
        """embeddings.npy, ids.npy and (when they differ from ids) identifiers.npy. The
        ``query_model`` is not saved (a callable); bundles store query towers instead."""
        self._require_index()
        assert self._embeddings is not None and self._ids is not None and self._identifiers is not None
        np.save(directory / "embeddings.npy", self._embeddings.numpy(), allow_pickle=False)
        np.save(directory / "ids.npy", self._ids.ids.numpy(), allow_pickle=False)
        files = ["embeddings.npy", "ids.npy"]
        ident = self._identifiers
        if not (ident.dtype.kind in "iu" and np.array_equal(ident, self._ids.ids.numpy())):
            if ident.dtype == object:
                if not all(isinstance(v, str) for v in ident):
                    raise DataError("BruteForce.save stores integer or string identifiers only.")
                ident = ident.astype(str)
            np.save(directory / "identifiers.npy", ident, allow_pickle=False)
            files.append("identifiers.npy")
        return files

    def _load_files(self, directory: Path, state: dict[str, Any]) -> None:
        emb = torch.from_numpy(np.array(load_npy(directory / "embeddings.npy"), dtype=np.float32))
        ids = load_npy(directory / "ids.npy").astype(np.int64)
        ident_path = directory / "identifiers.npy"
        ident = load_npy(ident_path) if ident_path.exists() else ids
        self.index(emb, identifiers=ident, candidate_ids=torch.from_numpy(ids.copy()))
