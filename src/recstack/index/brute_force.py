"""BruteForce: exact top-k by scoring every candidate (torch matmul + top-k, chunked)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..candidates import IdPositions, embed_in_batches
from ..errors import ConfigError, ShapeError
from ..exclusions import Exclusions


class BruteForce:
    """Exact maximum-inner-product search, the counterpart of TFRS's BruteForce layer.

    Args:
        query_model: optional callable mapping raw queries to [B, d] embeddings
            (e.g. ``nn.Sequential(StringLookup(...), Embedding(...))``), so that raw
            user ids go in and candidate identifiers come out.
        k: default number of results.
        max_scores_in_memory: bound on one query-block x candidate-chunk score tile.

    Example:
        >>> index = BruteForce(user_model).index(movie_embeddings, identifiers=titles)
        >>> scores, titles = index(["42"], k=3)
    """

    def __init__(self, query_model: Callable[[Any], torch.Tensor] | None = None, k: int = 10,
                 max_scores_in_memory: int = 1 << 24):
        self.query_model = query_model
        self.k = k
        self.max_scores_in_memory = int(max_scores_in_memory)
        self._embeddings: torch.Tensor | None = None
        self._identifiers: np.ndarray | None = None
        self._ids: IdPositions | None = None

    is_exact = True

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

    # Searching -----------------------------------------------------------------
    def __call__(self, queries: Any, k: int | None = None, exclude: Any = None,
                 query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Top-k for raw queries (through ``query_model``) or for [B, d] query embeddings."""
        if self.query_model is not None and not (isinstance(queries, torch.Tensor) and queries.is_floating_point()):
            with torch.no_grad():
                queries = self.query_model(queries)
        return self.search(queries, k=k, exclude=exclude, query_keys=query_keys)

    @torch.no_grad()
    def search(self, queries: torch.Tensor, k: int | None = None, exclude: Any = None,
               allow: Any = None, query_keys: torch.Tensor | None = None) -> tuple[torch.Tensor, np.ndarray]:
        """Exact top-k by inner product.

        Args:
            queries: [B, d] query embeddings.
            k: results per query (default ``self.k``); capped at the catalogue size.
            exclude: candidate ids to skip, either an :class:`Exclusions` (looked up
                by ``query_keys``) or a sequence of B id lists.
            allow: optional sequence of B id lists; only those candidates are scored.
            query_keys: [B] keys for an :class:`Exclusions`.

        Returns:
            (scores [B, k'], identifiers [B, k']) in descending score order,
            k' = min(k, C). Masked candidates score -inf; if fewer than k remain,
            the tail holds -inf scores (their identifiers are arbitrary).
        """
        if self._embeddings is None or self._ids is None or self._identifiers is None:
            raise ConfigError("This index is empty; call index() or index_from_tower() first.")
        q = torch.as_tensor(queries).detach().float()
        if q.dim() != 2 or q.shape[1] != self.dimension:
            raise ShapeError(
                f"queries must be [B, {self.dimension}] to match the indexed candidates; got {tuple(q.shape)}.")
        k = min(self.k if k is None else int(k), self.num_candidates)
        if k < 1:
            raise ConfigError(f"k must be >= 1; got {k}.")
        batch = q.shape[0]
        exclude_rows, exclude_pos = self._pairs(exclude, batch, query_keys)
        allow_rows, allow_pos = self._pairs(allow, batch, None) if allow is not None else (None, None)
        chunk = max(k, self.max_scores_in_memory // max(batch, 1))
        best_scores = torch.full((batch, 0), float("-inf"))
        best_pos = torch.zeros((batch, 0), dtype=torch.long)
        for start in range(0, self.num_candidates, chunk):
            stop = min(start + chunk, self.num_candidates)
            scores = q @ self._embeddings[start:stop].T                  # [B, chunk]
            if allow_rows is not None:
                allowed = torch.zeros_like(scores, dtype=torch.bool)
                inside = (allow_pos >= start) & (allow_pos < stop)
                allowed[allow_rows[inside], allow_pos[inside] - start] = True
                scores.masked_fill_(~allowed, float("-inf"))
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
        return best_scores, self._identifiers[best_pos.numpy()]

    def _pairs(self, spec: Any, batch: int, query_keys: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position) pairs for an Exclusions object or B lists of candidate ids."""
        assert self._ids is not None
        if spec is None:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        if isinstance(spec, Exclusions):
            if query_keys is None:
                raise ConfigError("Exclusions need query_keys= (one key per query row).")
            rows, ids = spec.pairs(torch.as_tensor(query_keys))
        else:
            if len(spec) != batch:
                raise ShapeError(f"Expected {batch} id lists (one per query); got {len(spec)}.")
            lengths = torch.tensor([len(ids) for ids in spec], dtype=torch.long)
            rows = torch.repeat_interleave(torch.arange(batch), lengths)
            flat = [int(i) for ids in spec for i in ids]
            ids = torch.tensor(flat, dtype=torch.long)
        return self._ids.positions(rows, ids)
