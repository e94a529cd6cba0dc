"""Candidate sets: embeddings, their integer ids, and id -> position masking.

Shared by :class:`~recstack.metrics.FactorizedTopK` and the indexes. Candidate
ids may repeat (the TFRS tutorials index the 1682 MovieLens movies by title,
and some titles occur twice); masking an id masks every position holding it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Union

import torch
from torch import nn

from ..core.errors import ShapeError

CandidateEmbeddings = Union[torch.Tensor, Callable[[], torch.Tensor]]


@torch.no_grad()
def embed_in_batches(
    tower: Callable[[Any], torch.Tensor],
    inputs: torch.Tensor | Mapping[str, torch.Tensor],
    batch_size: int = 8192,
) -> torch.Tensor:
    """Run ``tower`` over ``inputs`` in batches, in eval mode and without gradients.

    Args:
        tower: a module (or callable) mapping a batch of inputs to [b, d] embeddings.
        inputs: a tensor [n, ...] or a mapping of equal-length tensors.
        batch_size: rows per forward pass.

    Returns:
        [n, d] embeddings. The tower's training mode is restored afterwards.
    """
    was_training = isinstance(tower, nn.Module) and tower.training
    if isinstance(tower, nn.Module):
        tower.eval()
    try:
        n = inputs.shape[0] if isinstance(inputs, torch.Tensor) else next(iter(inputs.values())).shape[0]
        parts = []
        for start in range(0, n, batch_size):
            if isinstance(inputs, torch.Tensor):
                chunk: Any = inputs[start:start + batch_size]
            else:
                chunk = {k: v[start:start + batch_size] for k, v in inputs.items()}
            parts.append(tower(chunk))
        return torch.cat(parts) if parts else torch.empty(0)
    finally:
        if was_training:
            tower.train()


class TowerCandidates:
    """Candidate embeddings computed by a tower from fixed inputs, on demand.

    ``TowerCandidates(movie_model, all_title_ids)()`` returns [C, d]. Pass it as
    ``candidates=`` to FactorizedTopK so embeddings follow the trained tower.
    """

    def __init__(self, tower: Callable[[Any], torch.Tensor],
                 inputs: torch.Tensor | Mapping[str, torch.Tensor], batch_size: int = 8192):
        self.tower = tower
        self.inputs = inputs
        self.batch_size = batch_size

    def __call__(self) -> torch.Tensor:
        return embed_in_batches(self.tower, self.inputs, self.batch_size)


class IdPositions:
    """Maps candidate ids to every position that holds them.

    Args:
        ids: [C] integer ids of the candidate set (duplicates allowed).
    """

    def __init__(self, ids: torch.Tensor):
        if ids.dim() != 1:
            raise ShapeError(f"candidate ids must be 1-D; got shape {tuple(ids.shape)}.")
        self.ids = ids.long()
        self._sorted, self._order = torch.sort(self.ids, stable=True)
        #: True when no id appears twice (then every id has at most one position).
        self.unique = bool((self._sorted[1:] != self._sorted[:-1]).all())

    def __len__(self) -> int:
        return self.ids.shape[0]

    def positions(self, rows: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Expand (row, id) pairs into (row, position) pairs, one per matching position.

        Ids absent from the candidate set produce no pair.

        Args:
            rows: [m] row indices (e.g. query rows of a batch).
            ids: [m] candidate ids to locate.

        Returns:
            (rows [p], positions [p]) with ``self.ids[positions] == ids of that row``.
        """
        ids = ids.long()
        lo = torch.searchsorted(self._sorted, ids, right=False)
        hi = torch.searchsorted(self._sorted, ids, right=True)
        counts = hi - lo
        total = int(counts.sum())
        if total == 0:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        rows_out = torch.repeat_interleave(rows.long(), counts)
        starts = torch.repeat_interleave(lo, counts)
        # Offset of each output within its run: 0, 1, ..., count-1.
        run_begin = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        offsets = torch.arange(total) - run_begin
        return rows_out, self._order[starts + offsets]

    def first_positions(self, ids: torch.Tensor) -> torch.Tensor:
        """[n] first position holding each of ``ids`` [n]; ``len(self)`` for an id that is absent
        (so it follows every catalogue entry when ties are broken by position)."""
        ids = ids.long().reshape(-1)
        if len(self) == 0:
            return torch.zeros_like(ids)
        lo = torch.searchsorted(self._sorted, ids)
        safe = lo.clamp(max=len(self) - 1)
        found = (lo < len(self)) & (self._sorted[safe] == ids)
        # The sort is stable, so the first of an id's run is its first position.
        return torch.where(found, self._order[safe], len(self))


def max_row_norm(x: torch.Tensor) -> float:
    """Largest Euclidean norm among the finite rows of ``x`` [n, d] (computed in float64; 0 if none)."""
    x = x.detach()
    finite = torch.isfinite(x).all(dim=1)
    if not bool(finite.any()):
        return 0.0
    return float(x[finite].double().norm(dim=1).max())


def scores_may_overflow(queries: torch.Tensor, max_candidate_norm: float,
                        dtype: torch.dtype | None = None) -> torch.Tensor:
    """[B] True where query ``q``'s inner products with candidates could overflow ``dtype``.

    Overflow is possible only when ``||q|| * max_c ||c|| >= finfo(dtype).max / 2``: below that,
    Cauchy-Schwarz bounds every product, every partial sum (in whatever order a matmul adds
    them) and the difference of any two scores of the row by finite values. Above it a score may
    come out inf or NaN, and which one depends on the summation order (layout, chunking,
    device), so the row has no well-defined ranking. (A query that is not finite itself may be
    flagged or not: callers set those rows apart anyway.)

    Args:
        queries: [B, d] query embeddings.
        max_candidate_norm: :func:`max_row_norm` of the candidate embeddings.
        dtype: the dtype scores are computed in (default ``queries.dtype``).
    """
    limit = torch.finfo(dtype or queries.dtype).max / 2
    norms = queries.detach().double().norm(dim=1)
    return norms * max_candidate_norm >= limit


def resolve_embeddings(candidates: CandidateEmbeddings) -> torch.Tensor:
    """Return [C, d] embeddings from a tensor or a zero-argument callable, detached."""
    emb = candidates() if callable(candidates) else candidates
    if not isinstance(emb, torch.Tensor) or emb.dim() != 2:
        shape = tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__
        raise ShapeError(f"candidate embeddings must be a 2-D tensor [C, d]; got {shape}.")
    return emb.detach()
