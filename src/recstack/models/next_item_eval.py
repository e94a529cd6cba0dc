"""Next-item evaluation: rank each held-out target, then HR@k, NDCG@k and MRR per row.

For an evaluation row with scores s over item ids 0..V-1 (0 = pad, never ranked) and
target t, over the catalogue 1..V-1 (in id order):

    rank = #{ j in 1..V-1, j != t, j not excluded : s_j > s_t, or s_j = s_t and j < t }
    HR@k = [rank < k],  NDCG@k = [rank < k] / log2(rank + 2),  MRR = 1 / (rank + 1)

(0 = ranked first; one relevant item, so NDCG's ideal DCG is 1 and HR@k is recall@k). Rules,
the same as :class:`~recstack.metrics.FactorizedTopK`'s and the indexes' (every protocol
breaks ties one way):

* Ties in catalogue order: an item scoring exactly s_t ranks ahead of the target when its
  id is lower, as a stable descending sort of the scores (a served list) shows them. A
  model that scores everything equal ranks each target at its own id - 1: the metrics of
  one fixed list, neither a perfect score nor the worst. (recstack's baselines break ties
  inside their scores, by lower id, so the rule never decides for them.)
* Non-finite scores: a NaN candidate is never ahead of the target (NaN candidates rank
  last); a target whose own score is NaN or ±inf is a miss at every k (rank = inf:
  HR = NDCG = MRR = 0), so a diverged model scores 0, never 1.
* ``exclude_seen`` removes the user's earlier items
  (:meth:`~recstack.datasets.sequences.EvalSequences.seen`) from the ranking, except the
  target itself, which is compared, not ranked.
* Sampled protocol (:func:`evaluate_sampled`): the same rule among the target and its row
  of negatives (ties by item id).

:class:`~recstack.metrics.FactorizedTopK` itself is not used here: it needs a dot-product
model (the transition baseline is sparse counts). Rows are scored ``batch_size`` at a time
([b, V] in memory).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from torch import nn

from ..core.errors import ConfigError, ShapeError
from ..core.id_lists import IdLists
from ..datasets.sequences import EvalSequences
from ..training.loop import model_device


class NextItemScorer(Protocol):
    """What the evaluator calls: ``[b, L]`` histories (+ features) -> ``[b, V]`` scores."""

    def score_items(self, histories: torch.Tensor,
                    features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor: ...


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    if not ks or any(isinstance(k, bool) or int(k) != k or k < 1 for k in ks):
        raise ConfigError(f"ks must be positive integers; got {list(ks)}.")
    return tuple(sorted({int(k) for k in ks}))


def target_ranks(scores: torch.Tensor, targets: torch.Tensor, exclude: IdLists | None = None) -> torch.Tensor:
    """[B] float64 rank of each row's target among ids 1..V-1 (module docstring's rule).

    Args:
        scores: [B, V] scores of every item id (column 0, the pad id, is ignored).
        targets: [B] target ids in [1, V).
        exclude: optional [B] rows of ids removed from row b's ranking (never its target).
    """
    if scores.dim() != 2 or targets.shape != (scores.shape[0],):
        raise ShapeError(f"scores must be [B, V] and targets [B]; got {tuple(scores.shape)} and "
                         f"{tuple(targets.shape)}.")
    B, V = scores.shape
    t = targets.long().to(scores.device)
    if B and (int(t.min()) < 1 or int(t.max()) >= V):
        raise ShapeError(f"target ids must lie in [1, {V}) (the scored ids); got [{int(t.min())}, {int(t.max())}].")
    rows = torch.arange(B, device=scores.device)
    own = scores[rows, t]
    ids = torch.arange(V, device=scores.device)
    # NaN compares False both ways: a NaN candidate is never ahead.
    ahead = (scores > own[:, None]) | ((scores == own[:, None]) & (ids[None, :] < t[:, None]))
    ahead[:, 0] = False
    ahead[rows, t] = False
    if exclude is not None:
        if exclude.num_rows != B:
            raise ShapeError(f"exclude has {exclude.num_rows} rows for {B} score rows.")
        r, ids = exclude.pairs()
        inside = (ids >= 0) & (ids < V)
        ahead[torch.from_numpy(r[inside]).to(scores.device), torch.from_numpy(ids[inside]).to(scores.device)] = False
    ranks = ahead.sum(dim=1).double()
    return torch.where(torch.isfinite(own), ranks, torch.full_like(ranks, float("inf")))


def sampled_ranks(scores: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
    """[B] float64 rank of column 0 (the target) among the columns of ``scores`` [B, 1 + N]
    (the negatives), with the same tie and NaN rules as :func:`target_ranks`.

    Args:
        scores: [B, 1 + N] scores of the target (column 0) and its negatives.
        item_ids: [B, 1 + N] the item id of every column (ties go to the lower id).
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ShapeError(f"scores must be [B, 1 + N] with N >= 1 negatives; got {tuple(scores.shape)}.")
    if item_ids.shape != scores.shape:
        raise ShapeError(f"item_ids {tuple(item_ids.shape)} must have the shape of scores {tuple(scores.shape)}.")
    own = scores[:, :1]
    ids = item_ids.to(scores.device).long()
    ahead = (scores[:, 1:] > own) | ((scores[:, 1:] == own) & (ids[:, 1:] < ids[:, :1]))
    ranks = ahead.sum(dim=1).double()
    return torch.where(torch.isfinite(own[:, 0]), ranks, torch.full_like(ranks, float("inf")))


def rank_metrics(ranks: np.ndarray | torch.Tensor, ks: Sequence[int] = (10,)) -> dict[str, np.ndarray]:
    """Per-row ``hr_at_{k}``, ``ndcg_at_{k}``, ``mrr_at_{k}`` (each k) and ``mrr`` [E] from ranks [E] (0 = first).

    With r the 0-based rank: HR@k = [r < k], NDCG@k = [r < k] / log2(r + 2) (one relevant item:
    IDCG = 1), MRR@k = [r < k] / (r + 1) (RecBole's MRR@k, truncated at k), MRR = 1 / (r + 1).
    """
    r = ranks.detach().cpu().numpy() if isinstance(ranks, torch.Tensor) else np.asarray(ranks, dtype=np.float64)
    r = r.astype(np.float64, copy=False)
    out: dict[str, np.ndarray] = {}
    for k in _check_ks(ks):
        hit = r < k
        out[f"hr_at_{k}"] = hit.astype(np.float64)
        with np.errstate(divide="ignore"):
            out[f"ndcg_at_{k}"] = np.where(hit, 1.0 / np.log2(np.where(hit, r, 0.0) + 2.0), 0.0)
            out[f"mrr_at_{k}"] = np.where(hit, 1.0 / (np.where(hit, r, 0.0) + 1.0), 0.0)
    out["mrr"] = 1.0 / (r + 1.0)
    return out


@dataclass(frozen=True, eq=False)
class NextItemResult:
    """Per-row ranks and metrics of one evaluation.

    ``users`` [E], ``ranks`` [E] float64 (inf = a miss on a non-finite score),
    ``per_row`` {metric: [E]}, ``protocol`` e.g. "full" or "sampled_100".
    """

    protocol: str
    users: np.ndarray
    ranks: np.ndarray
    per_row: dict[str, np.ndarray]

    @property
    def metrics(self) -> dict[str, float]:
        """Means over rows (one row per user under leave-one-out)."""
        return {name: float(values.mean()) if values.size else float("nan") for name, values in self.per_row.items()}


def _batches(scorer: NextItemScorer, data: EvalSequences, features: Sequence[str], batch_size: int):
    """(slice, scores [b, V]) over the rows, scorer in eval mode and without gradients."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}.")
    missing = [f for f in features if f not in data.features]
    if missing:
        raise ConfigError(f"features {missing} are not in the evaluation sequences (they have "
                          f"{sorted(data.features)}).")
    module = scorer if isinstance(scorer, nn.Module) else None
    device = model_device(module) if module is not None else torch.device("cpu")
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.no_grad():
            for start in range(0, data.num_rows, batch_size):
                part = slice(start, min(start + batch_size, data.num_rows))
                history = torch.from_numpy(data.history[part]).to(device)
                feats = {f: torch.from_numpy(data.features[f][part]).to(device) for f in features} or None
                scores = scorer.score_items(history, feats)
                if scores.dim() != 2 or scores.shape[0] != history.shape[0]:
                    raise ShapeError(f"score_items returned {tuple(scores.shape)} for {history.shape[0]} histories; "
                                     "it must return [batch, num_items].")
                yield part, scores
    finally:
        if was_training:
            module.train()  # type: ignore[union-attr]


def evaluate_next_item(scorer: NextItemScorer, data: EvalSequences, *, ks: Sequence[int] = (1, 5, 10, 20),
                       exclude_seen: bool = False, features: Sequence[str] = (),
                       batch_size: int = 1024) -> NextItemResult:
    """Full-catalogue ranking of every row's target (the primary protocol).

    Args:
        scorer: a model with ``score_items`` (sequential models, :class:`MostPopular`,
            :class:`ItemTransitions`).
        data: ``split.validation`` or ``split.test``.
        ks: cut-offs of HR and NDCG.
        exclude_seen: drop the user's earlier items from the ranking (both choices are
            published; say which one a number used).
        features: per-position feature columns of ``data`` to pass to the scorer.
    """
    ks = _check_ks(ks)
    seen = data.seen() if exclude_seen else None
    ranks = np.empty(data.num_rows, dtype=np.float64)
    for part, scores in _batches(scorer, data, features, batch_size):
        rows = None if seen is None else seen.take(np.arange(part.start, part.stop))
        ranks[part] = target_ranks(scores, torch.from_numpy(data.target[part]), rows).cpu().numpy()
    return NextItemResult("full_exclude_seen" if exclude_seen else "full", data.users, ranks, rank_metrics(ranks, ks))


def evaluate_sampled(scorer: NextItemScorer, data: EvalSequences, negatives: np.ndarray, *,
                     ks: Sequence[int] = (1, 5, 10, 20), features: Sequence[str] = (),
                     batch_size: int = 1024) -> NextItemResult:
    """The *sampled* protocol: rank each target among its row of ``negatives`` [E, N] only
    (from :func:`~recstack.datasets.sequences.sample_negatives`). Secondary: for comparison
    with papers that report it; it overstates quality against :func:`evaluate_next_item`."""
    ks = _check_ks(ks)
    negatives = np.asarray(negatives)
    if negatives.ndim != 2 or negatives.shape[0] != data.num_rows:
        raise ShapeError(f"negatives must be [{data.num_rows}, N]; got shape {negatives.shape}.")
    ranks = np.empty(data.num_rows, dtype=np.float64)
    for part, scores in _batches(scorer, data, features, batch_size):
        columns = torch.from_numpy(np.concatenate([data.target[part, None], negatives[part]], axis=1))
        ranks[part] = sampled_ranks(scores.gather(1, columns.to(scores.device)), columns).cpu().numpy()
    return NextItemResult(f"sampled_{negatives.shape[1]}", data.users, ranks, rank_metrics(ranks, ks))


__all__ = ["NextItemResult", "NextItemScorer", "evaluate_next_item", "evaluate_sampled", "rank_metrics",
           "sampled_ranks", "target_ranks"]
