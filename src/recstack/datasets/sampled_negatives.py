"""Negatives of the *sampled* next-item protocol (1 positive + N sampled items per row).

A secondary protocol, kept only to compare with papers that report it; the primary protocols
rank the whole catalogue (:mod:`recstack.datasets.sequences`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError
from .sequences import PAD, EvalSequences, _array

def sample_negatives(
    eval_sequences: EvalSequences,
    num_items: int,
    num_negatives: int,
    *,
    weights: Any = None,
    exclude_seen: bool = False,
    seed: int = 0,
    max_cells: int = 1 << 22,
) -> np.ndarray:
    """Negatives for the *sampled* protocol: N distinct items per row, never the target.

    A secondary protocol (1 positive + N negatives, e.g. N = 100 in SASRec's paper) that
    overstates quality compared with full-catalogue ranking; use it only to compare with
    papers that report it.

    Sampling is without replacement with probability proportional to ``weights`` (None:
    uniform over ids 1..V-1; e.g. ``histories.item_counts(V)`` for popularity), by
    Gumbel-top-N: keys ``log w_j + Gumbel noise``, the excluded ids set to -inf, the N
    largest keys taken. Ids with weight 0, the pad id 0, the row's target and (with
    ``exclude_seen``) every item in :meth:`EvalSequences.seen` are never drawn. It costs
    O(E x V) time in row chunks of ``max_cells`` keys; the result depends only on the inputs
    and ``seed``.

    Returns:
        [E, N] int64 item ids, each row ascending.
    """
    V = int(num_items)
    N = int(num_negatives)
    if N < 1:
        raise ConfigError(f"num_negatives must be >= 1; got {num_negatives!r}.")
    target = eval_sequences.target
    if target.size and int(target.max()) >= V:
        raise DataError(f"a target id ({int(target.max())}) is >= num_items ({V}).")
    if weights is None:
        log_w = np.zeros(V)
    else:
        w = _array(weights, "weights", integer=False).astype(np.float64)
        if w.shape[0] != V or (w < 0).any():
            raise DataError(f"weights must be {V} non-negative numbers (one per item id); got shape {w.shape}.")
        with np.errstate(divide="ignore"):
            log_w = np.log(w)
    log_w[PAD] = -np.inf
    seen = eval_sequences.seen() if exclude_seen else None
    rng = np.random.default_rng(seed)
    E = eval_sequences.num_rows
    out = np.empty((E, N), dtype=np.int64)
    chunk = max(1, int(max_cells) // max(V, 1))
    for start in range(0, E, chunk):
        stop = min(start + chunk, E)
        keys = log_w[None, :] + rng.gumbel(size=(stop - start, V))
        keys[np.arange(stop - start), target[start:stop]] = -np.inf
        if seen is not None:
            rows, ids = seen.pairs(np.arange(start, stop))
            keys[rows, ids] = -np.inf
        eligible = np.isfinite(keys).sum(axis=1)
        if (eligible < N).any():
            row = start + int(np.flatnonzero(eligible < N)[0])
            raise DataError(f"row {row} has only {int(eligible[row - start])} items it may draw as negatives but "
                            f"num_negatives={N}; lower num_negatives (or do not exclude seen items).")
        top = np.argpartition(-keys, N - 1, axis=1)[:, :N] if N < V else np.argsort(-keys, axis=1)[:, :N]
        out[start:stop] = np.sort(top, axis=1)
    return out


__all__ = ["sample_negatives"]
