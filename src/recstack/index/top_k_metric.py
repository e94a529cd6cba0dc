"""IndexTopK: FactorizedTopK's retrieval metrics, evaluated through any recstack index.

For each query row with positive p (embedding e_p, id p):

    retrieved = index.search(q, depth, exclude = {p} ∪ excluded ids of the row's key)
    rank      = #{r in retrieved : score_r > q . e_p}          when that count < depth
              = exact count over the catalogue (BruteForce.count_higher)  otherwise, exact indexes
              = unknown (>= depth)                              otherwise, approximate indexes

``depth = max(ks)``. With an exact index every rank below ``depth`` equals
FactorizedTopK's (same masking: the positive's own id and the exclusions; same
strict ``>``), and ranks beyond it come from an exact count, so every reported
number is identical to FactorizedTopK's. With an approximate index the
retrieved list may miss better candidates, so ranks (and the metrics) are what
a serving system using that index would see; MRR counts a positive beyond
``depth`` as 0 (MRR truncated at depth).

Result keys are FactorizedTopK's (``{name}/top_{k}_categorical_accuracy``,
``{name}/recall_at_{k}``, ``{name}/ndcg_at_{k}``, ``{name}/mrr``) plus
``{name}/index``: the index kind ("brute_force", "faiss_ivf", "scann"), which
is a string. Pass ``report_index=False`` where every value must be a float (the
training loop's History casts values to float).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from ..core.errors import ConfigError, ShapeError
from ..core.exclusions import Exclusions
from ..core.id_lists import IdLists
from .contract import Index
from ..metrics.base import Metric
from ..metrics.factorized_top_k import _group_metrics


class IndexTopK(Metric):
    """Top-k retrieval metrics computed by searching an index.

    Args:
        index: a built :class:`~recstack.index.Index` over the candidate embeddings,
            keyed by the same integer candidate ids as ``true_candidate_ids``.
        ks: cut-offs (the search depth is ``max(ks)``).
        exclude: optional per-query-key exclusions (needs ``query_keys``).
        name: result-key prefix (default FactorizedTopK's, so reports line up).
        report_index: add the ``{name}/index`` string entry.
    """

    gathered_state = (("_ranks", torch.long), ("_weights", torch.float64), ("_keys", torch.long))

    def __init__(self, index: Index, ks: Sequence[int] = (1, 5, 10, 50, 100), exclude: Exclusions | None = None,
                 name: str = "factorized_top_k", report_index: bool = True):
        super().__init__(name)
        if not ks or any(int(k) <= 0 for k in ks):
            raise ValueError(f"ks must be positive integers; got {list(ks)}.")
        if not isinstance(index, Index):
            raise ConfigError(f"IndexTopK needs a recstack index; got {type(index).__name__}.")
        self.index = index
        self.ks = tuple(sorted({int(k) for k in ks}))
        self.exclude = exclude
        self.report_index = report_index
        self.reset_state()

    @property
    def index_kind(self) -> str:
        return self.index.kind

    def invalidate(self) -> None:
        """No cache to drop: rebuild the index when the candidate tower changes."""

    def reset_state(self) -> None:
        self._ranks: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []
        self._keys: list[torch.Tensor] = []
        self._has_keys: bool | None = None

    @torch.no_grad()
    def update_state(self, query_embeddings: torch.Tensor, true_candidate_embeddings: torch.Tensor,
                     true_candidate_ids: torch.Tensor | None = None, sample_weight: torch.Tensor | None = None,
                     query_keys: torch.Tensor | None = None) -> None:
        """Same arguments as :meth:`FactorizedTopK.update_state`."""
        q = query_embeddings.detach().float()
        pos_emb = true_candidate_embeddings.detach().float()
        if q.dim() != 2 or pos_emb.shape != q.shape:
            raise ShapeError(f"query embeddings {tuple(q.shape)} and true candidate embeddings "
                             f"{tuple(pos_emb.shape)} must both be [B, d] with the same shape.")
        if self.exclude is not None and query_keys is None:
            raise ValueError("This IndexTopK has exclusions; pass query_keys= to update_state.")
        if self._has_keys is None:
            self._has_keys = query_keys is not None
        elif self._has_keys != (query_keys is not None):
            raise ValueError("Pass query_keys on every update_state call or on none.")
        batch = q.shape[0]
        positive = (q * pos_emb).sum(dim=1)
        masked = self._masked(batch, true_candidate_ids, query_keys)
        depth = min(max(self.ks), self.index.num_candidates)
        scores, _ = self.index.search(q, k=depth, exclude=masked)
        count = (scores > positive[:, None]).sum(dim=1)
        ranks = count.clone()
        beyond = count >= depth
        if bool(beyond.any()):
            counter = getattr(self.index, "count_higher", None)
            if self.index.is_exact and counter is not None:
                rows = torch.nonzero(beyond).reshape(-1).numpy()
                ranks[beyond] = counter(q[beyond], positive[beyond], exclude=masked.take(rows))
            else:
                ranks[beyond] = -1           # unknown: beyond the search depth
        self._ranks.append(ranks)
        weight = torch.ones(batch) if sample_weight is None else sample_weight.detach().reshape(-1)
        self._weights.append(weight.double())
        if query_keys is not None:
            self._keys.append(query_keys.detach().long().reshape(-1))

    def _masked(self, batch: int, true_ids: torch.Tensor | None, keys: torch.Tensor | None) -> IdLists:
        """Per row: the positive's own id and the row key's exclusions."""
        masked = IdLists.empty(batch) if true_ids is None else IdLists(np.arange(batch + 1), true_ids.reshape(-1))
        if self.exclude is not None and keys is not None:
            masked = masked.union(self.exclude.take(keys.reshape(-1)))
        return masked

    def ranks(self) -> torch.Tensor:
        """[N] rank of every row (0 = first; -1 = beyond the search depth of an approximate index)."""
        return torch.cat(self._ranks) if self._ranks else torch.empty(0, dtype=torch.long)

    def result(self) -> dict[str, float | str]:
        ranks = self.ranks()
        out: dict[str, float | str] = {}
        if ranks.numel() == 0:
            return out
        # Unknown ranks (approximate index, positive not retrieved) count as misses everywhere
        # and as 0 in MRR (1 / (1 + inf)).
        ranks_f = torch.where(ranks < 0, torch.tensor(torch.iinfo(torch.long).max // 4), ranks)
        weights = torch.cat(self._weights)
        total = float(weights.sum())
        for k in self.ks:
            hits = (ranks_f < k).double()
            out[f"{self.name}/top_{k}_categorical_accuracy"] = float((hits * weights).sum()) / total if total else 0.0
        keys = torch.cat(self._keys) if self._keys else None
        group = _group_metrics(ranks_f, keys, self.ks, self.name)
        if (ranks < 0).any():
            # 1/(1 + huge) is ~0 already; make it exactly the truncated MRR.
            group[f"{self.name}/mrr"] = _truncated_mrr(ranks, keys)
        out.update(group)
        if self.report_index:
            out[f"{self.name}/index"] = self.index.kind
        return out


def _truncated_mrr(ranks: torch.Tensor, keys: torch.Tensor | None) -> float:
    """Mean over groups of 1 / (1 + best rank), 0 for groups whose positives were all unretrieved."""
    if keys is None:
        return float(torch.where(ranks < 0, 0.0, 1.0 / (ranks.double() + 1.0)).mean())
    _, group = torch.unique(keys, return_inverse=True)
    n = int(group.max()) + 1
    recip = torch.where(ranks < 0, torch.zeros((), dtype=torch.float64), 1.0 / (ranks.double() + 1.0))
    best = torch.zeros(n, dtype=torch.float64).scatter_reduce_(0, group, recip, reduce="amax")
    return float(best.mean())
