"""BruteForce: exact top-k by scoring every candidate (torch matmul + top-k, chunked).

Ties are served in catalogue order (the order of ``build`` then ``add``), as a stable
descending sort of all scores would list them: the rule every recstack protocol ranks by
(:mod:`recstack.metrics.factorized_top_k`).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core.errors import ConfigError, DataError, ShapeError
from ..core.id_lists import IdLists
from ..layers.candidates import IdPositions, embed_in_batches, max_row_norm, scores_may_overflow
from .arrays import as_ids, check_finite, check_unique, checked_ids, load_npy
from .contract import Index, saved_file
from .filters import allow_rows, exclusion_rows
from .query_model import load_query_model, save_query_model
from .registry import register_index


@register_index("brute_force", aliases=("exact", "bruteforce"))
class BruteForce(Index):
    """Exact maximum-inner-product search, the counterpart of TFRS's BruteForce layer.

    Scores are ``queries @ candidates.T`` computed in [B, chunk] tiles of at most
    ``max_scores_in_memory`` floats (64 MB by default), so a 1M x 128 catalogue is
    searched in bounded memory; each tile keeps its top-k and the running best
    lists are merged. The matmul uses torch's intra-op threads
    (``torch.set_num_threads``). Equal scores come in catalogue order (build order,
    then added candidates), whatever the tiling.

    Args:
        query_model: optional module mapping raw queries to [B, d] embeddings
            (e.g. ``nn.Sequential(StringLookup(...), Embedding(...))``), so that raw
            user ids go in and candidate identifiers come out; saved with the index
            (see :mod:`recstack.index.query_model` for what can be saved).
        k: default number of results.
        max_scores_in_memory: bound on one query-block x candidate-chunk score tile.

    Example:
        >>> index = BruteForce(user_model).index_from_tower(movie_model, movie_ids, identifiers=titles)
        >>> scores, titles = index(["42"], k=3)                    # raw user id in, titles out
        >>> exact = BruteForce().build(item_ids, item_embeddings)   # the Index interface
    """

    is_exact = True

    def __init__(self, query_model: Callable[[Any], torch.Tensor] | None = None, k: int = 10,
                 max_scores_in_memory: int = 1 << 24):
        self.query_model = query_model
        self.k = k
        self.max_scores_in_memory = int(max_scores_in_memory)
        self._embeddings: torch.Tensor | None = None
        self._identifiers: np.ndarray | None = None
        self._ids: IdPositions | None = None
        self._max_norm = 0.0

    # Building -------------------------------------------------------------
    def build(self, ids: Any, embeddings: Any,
              identifiers: Sequence[Any] | np.ndarray | torch.Tensor | None = None) -> BruteForce:
        """Index ``embeddings`` [C, d] (finite) under unique integer ``ids`` [C].

        Args:
            ids: [C] integer ids, the ids ``exclude`` / ``allow`` name (None: 0..C-1).
            embeddings: [C, d] tensor or array (kept as float32 on the CPU).
            identifiers: what search returns for each candidate (titles, raw ids...);
                default: ``ids``.
        """
        emb = torch.as_tensor(embeddings if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings))
        if emb.dim() != 2:
            raise ShapeError(f"embeddings must be [C, d]; got shape {tuple(emb.shape)}.")
        emb = emb.detach().cpu().float().contiguous()
        ids_np = checked_ids(ids, emb)
        ident = ids_np if identifiers is None else _identifiers(identifiers, emb.shape[0])
        self._embeddings, self._identifiers = emb, ident
        self._ids = IdPositions(torch.from_numpy(ids_np.copy()))
        self._max_norm = max_row_norm(emb)
        return self

    def index_from_tower(self, tower: Callable[[Any], torch.Tensor],
                         inputs: torch.Tensor | Mapping[str, torch.Tensor], *, ids: Any = None,
                         identifiers: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
                         batch_size: int = 8192) -> BruteForce:
        """``build(ids, tower(inputs), identifiers)``, embedding ``inputs`` in eval mode, without grad."""
        return self.build(ids, embed_in_batches(tower, inputs, batch_size), identifiers=identifiers)

    def index(self, candidates: Any, identifiers: Sequence[Any] | np.ndarray | torch.Tensor | None = None,
              candidate_ids: Any = None) -> BruteForce:
        """Deprecated: ``build(candidate_ids, candidates, identifiers=identifiers)``."""
        warnings.warn("BruteForce.index(candidates, identifiers=, candidate_ids=) is deprecated: use "
                      "build(ids, embeddings, identifiers=...) (ids first, like every index's build).",
                      DeprecationWarning, stacklevel=2)
        return self.build(candidate_ids, candidates, identifiers=identifiers)

    @property
    def num_candidates(self) -> int:
        return 0 if self._embeddings is None else self._embeddings.shape[0]

    @property
    def dimension(self) -> int:
        return 0 if self._embeddings is None else self._embeddings.shape[1]

    def candidate_ids(self) -> np.ndarray:
        """Sorted candidate ids."""
        return np.empty(0, np.int64) if self._ids is None else self._ids._sorted.numpy()

    def vectors(self, ids: Any) -> torch.Tensor:
        """[n] candidate ids -> [n, d] embeddings."""
        self._require_built()
        assert self._ids is not None and self._embeddings is not None
        ids_t = torch.as_tensor(as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))))
        lo = torch.searchsorted(self._ids._sorted, ids_t)
        found = (lo < len(self._ids)) & (self._ids._sorted[lo.clamp(max=len(self._ids) - 1)] == ids_t)
        if not bool(found.all()):
            raise DataError(f"unknown candidate id(s) {ids_t[~found][:5].tolist()}.")
        return self._embeddings[self._ids._order[lo]]

    def catalogue_positions(self, ids: Any) -> np.ndarray:
        """[n] ids -> catalogue position (build order, then added candidates), the order ties are
        served in; ``num_candidates`` for an id that is not indexed (it follows every entry)."""
        self._require_built()
        assert self._ids is not None
        ids_t = torch.from_numpy(as_ids(np.atleast_1d(np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids))))
        return self._ids.first_positions(ids_t).numpy()

    def overflowing(self, queries: Any) -> torch.Tensor:
        """[B] True for query rows whose float32 scores could overflow to inf or NaN
        (:func:`~recstack.layers.candidates.scores_may_overflow`); :meth:`search` refuses them."""
        return scores_may_overflow(torch.as_tensor(queries).detach().cpu().float(), self._max_norm, torch.float32)

    # Searching -----------------------------------------------------------------
    def __call__(self, queries: Any, k: int | None = None, exclude: Any = None,
                 query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Top-k for raw queries (through ``query_model``) or for [B, d] query embeddings."""
        if self.query_model is not None and not (isinstance(queries, torch.Tensor) and queries.is_floating_point()):
            with torch.no_grad():
                queries = self.query_model(queries)
        return self.search(queries, k=k, exclude=exclude, query_keys=query_keys)

    def _queries(self, queries: Any) -> torch.Tensor:
        self._require_built()
        q = torch.as_tensor(queries).detach().cpu().float()
        if q.dim() != 2 or q.shape[1] != self.dimension:
            raise ShapeError(
                f"queries must be [B, {self.dimension}] to match the indexed candidates; got {tuple(q.shape)}.")
        check_finite(q, "queries")
        risky = scores_may_overflow(q, self._max_norm, torch.float32)
        if bool(risky.any()):
            row = int(torch.nonzero(risky)[0])
            raise DataError(
                f"queries row {row} has norm {float(q[row].double().norm()):.3g} and the largest candidate "
                f"norm is {self._max_norm:.3g}: their inner products can overflow float32 (to inf, or NaN, "
                f"depending on the summation order), so there is no ranking to return; "
                f"{int(risky.sum())} of {q.shape[0]} rows are affected. Embeddings this large usually mean a "
                "diverged model: check the towers that produced them, or rescale the vectors.")
        return q

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int | None = None, exclude: Any = None,
               allow: Any = None, query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Exact top-k by inner product.

        Args:
            queries: [B, d] query embeddings.
            k: results per query (default ``self.k``); capped at the catalogue size.
            exclude: candidate ids to skip: an IdLists / :class:`Exclusions` (one list
                per row, or looked up by ``query_keys``) or a sequence of B id lists.
            allow: optional sequence of B id lists (a ``None`` entry leaves that row
                unrestricted) or an IdLists; only those candidates are scored.
            query_keys: [B] keys to look ``exclude`` lists up by.

        Returns:
            (scores [B, k'] float32 tensor, identifiers [B, k']) in descending score
            order, equal scores in catalogue order, k' = min(k, C). Masked candidates
            score -inf; if fewer than k remain, the tail holds -inf scores (with integer
            identifiers, id -1; otherwise arbitrary identifiers).

        Raises:
            DataError: a query is not finite, or its scores could overflow float32
                (:meth:`overflowing`), so no ranking of it is defined.
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
            top_scores, top_pos = stable_top_k(scores, min(k, stop - start))
            # Both lists are in (score descending, position ascending) order and every earlier
            # tile's positions come first, so a stable sort of the two keeps that order.
            best_scores = torch.cat([best_scores, top_scores], dim=1)
            best_pos = torch.cat([best_pos, top_pos + start], dim=1)
            if start > 0:
                order = torch.sort(best_scores, dim=1, descending=True, stable=True).indices[:, :k]
                best_scores = best_scores.gather(1, order)
                best_pos = best_pos.gather(1, order)
        out = self._identifiers[best_pos.numpy()]
        if out.dtype.kind in "iu":
            out = out.astype(np.int64, copy=True)
            out[torch.isneginf(best_scores).numpy()] = -1
        return best_scores, out

    @torch.no_grad()
    def count_higher(self, queries: Any, thresholds: torch.Tensor, exclude: Any = None,
                     query_keys: Any = None, positive_ids: Any = None) -> torch.Tensor:
        """[B] number of unmasked candidates ranked above a positive scoring ``threshold``:
        q . x > threshold, or q . x == threshold at a catalogue position before the positive's
        (exact ranks for metrics; the order :meth:`search` serves).

        Args:
            queries: [B, d]; thresholds: [B]; exclude: as in :meth:`search`.
            positive_ids: [B] id of each row's positive (an id not indexed follows every
                candidate); None: equal scores never count (ties in the positive's favour).
        """
        q = self._queries(queries)
        assert self._embeddings is not None
        thresholds = torch.as_tensor(thresholds).reshape(-1).to(q.dtype)
        first = None if positive_ids is None else torch.from_numpy(self.catalogue_positions(positive_ids))
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
            if first is not None:
                earlier = torch.arange(start, stop)[None, :] < first[:, None]
                counts += ((scores == thresholds[:, None]) & earlier).sum(dim=1)
        return counts

    def _positions(self, row_ids: IdLists) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._ids is not None
        return self._ids.positions(torch.from_numpy(row_ids.rows), torch.from_numpy(row_ids.ids))

    def _pairs(self, spec: Any, batch: int, query_keys: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) pairs of an ``exclude`` spec (see :meth:`search`)."""
        rows = exclusion_rows(spec, batch, query_keys)
        if rows is None:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        return self._positions(rows)

    # Mutation ------------------------------------------------------------------------
    def remove(self, ids: Any) -> int:
        """Drop the candidates ``ids`` (unknown ids are ignored); returns how many were removed."""
        self._require_built()
        assert self._ids is not None and self._embeddings is not None and self._identifiers is not None
        drop = torch.from_numpy(np.isin(self._ids.ids.numpy(), as_ids(np.atleast_1d(np.asarray(ids)))))
        keep = ~drop
        self._embeddings = self._embeddings[keep].contiguous()
        self._identifiers = self._identifiers[keep.numpy()]
        self._ids = IdPositions(self._ids.ids[keep])
        self._max_norm = max_row_norm(self._embeddings)
        return int(drop.sum())

    def add(self, ids: Any, embeddings: Any) -> BruteForce:
        """Append candidates under new integer ids (identifiers = ids); DataError for ids already indexed."""
        if self._embeddings is None:
            return self.build(ids, embeddings)
        assert self._ids is not None and self._identifiers is not None
        emb = torch.as_tensor(embeddings if isinstance(embeddings, torch.Tensor) else np.asarray(embeddings))
        if emb.dim() != 2 or emb.shape[1] != self.dimension:
            raise ShapeError(f"embeddings must be [n, {self.dimension}]; got {tuple(emb.shape)}.")
        new = as_ids(ids, emb.shape[0], "candidate ids")
        check_finite(emb, "candidate embeddings", new)
        check_unique(new, "new candidate ids")
        clash = np.isin(new, self._ids.ids.numpy())
        if clash.any():
            raise DataError(f"candidate id(s) {new[clash][:5].tolist()} are already indexed; remove them first.")
        self._embeddings = torch.cat([self._embeddings, emb.detach().cpu().float()]).contiguous()
        self._identifiers = np.concatenate([self._identifiers, new])
        self._ids = IdPositions(torch.cat([self._ids.ids, torch.from_numpy(new.copy())]))
        self._max_norm = max(self._max_norm, max_row_norm(emb.detach().cpu().float()))
        return self

    # Persistence ---------------------------------------------------------------------
    def _params(self) -> dict[str, Any]:
        return {"k": self.k, "max_scores_in_memory": self.max_scores_in_memory}

    def _save_files(self, directory: Path) -> list[str]:
        """embeddings.npy, ids.npy, identifiers.npy (when they differ from ids) and the query
        model (query_model.json + .npz; a ConfigError says so when it cannot be saved)."""
        self._require_built()
        assert self._embeddings is not None and self._ids is not None and self._identifiers is not None
        files = save_query_model(self.query_model, directory) if self.query_model is not None else []
        np.save(directory / "embeddings.npy", self._embeddings.cpu().numpy(), allow_pickle=False)
        np.save(directory / "ids.npy", self._ids.ids.numpy(), allow_pickle=False)
        files += ["embeddings.npy", "ids.npy"]
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
        """The files ``state`` lists: embeddings.npy, ids.npy, and identifiers.npy / the query model
        when the saved index had them (an unlisted file in the folder is not read)."""
        emb = np.array(load_npy(saved_file(directory, state, "embeddings.npy")), dtype=np.float32)
        ids = load_npy(saved_file(directory, state, "ids.npy")).astype(np.int64)
        ident_path = saved_file(directory, state, "identifiers.npy", required=False)
        self.build(ids, emb, identifiers=None if ident_path is None else load_npy(ident_path))
        if saved_file(directory, state, "query_model.json", required=False) is not None:
            saved_file(directory, state, "query_model.npz")        # its weights must be listed too
            self.query_model = load_query_model(directory)


def stable_top_k(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``k`` columns of each row of ``scores`` [B, n] in the order a stable descending
    sort lists them: (values [B, k], column indices [B, k]) by score descending, equal scores by
    column ascending, the lowest columns kept among ties at the cut. No NaN (callers refuse them).

    ``torch.topk`` selects the right set except which of the k-th value's ties it keeps (and in
    what order). A row holds more of that value than the slots left for it exactly when its
    (k+1)-th value equals its k-th, so one top-(k+1) finds those rows, and only they are
    re-selected, by a cumulative count over the row: no sort of n, no extra pass over the tile.
    """
    top = torch.topk(scores, min(k + 1, scores.shape[1]), dim=1)
    values, indices = top.values[:, :k], top.indices[:, :k]
    kth = values[:, -1:]
    slots = (values == kth).sum(dim=1)
    tied = (torch.nonzero(top.values[:, k] == kth[:, 0]).reshape(-1) if top.values.shape[1] > k
            else torch.empty(0, dtype=torch.long))
    if tied.numel():
        sub, cut = scores[tied], kth[tied]
        equal = sub == cut
        keep = (sub > cut) | (equal & (equal.cumsum(dim=1) <= slots[tied, None]))
        indices = indices.clone()
        indices[tied] = torch.nonzero(keep)[:, 1].reshape(-1, k)       # row-major: columns ascending
    indices = indices.sort(dim=1).values
    values = scores.gather(1, indices)
    order = torch.sort(values, dim=1, descending=True, stable=True).indices
    return values.gather(1, order), indices.gather(1, order)


def _identifiers(identifiers: Any, n: int) -> np.ndarray:
    """[n] returned identifiers (any dtype numpy can hold without pickle on save: int or str)."""
    ident = identifiers.detach().cpu().numpy() if isinstance(identifiers, torch.Tensor) else np.asarray(identifiers)
    if ident.ndim != 1 or ident.shape[0] != n:
        raise ShapeError(f"{n} candidate embeddings but identifiers of shape {tuple(ident.shape)}.")
    return ident
