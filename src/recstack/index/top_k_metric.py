"""IndexTopK: FactorizedTopK's retrieval metrics, evaluated through any recstack index.

For each query row with positive p (embedding e_p, id p, catalogue position pos_p, score
s_p = q . e_p):

    retrieved = index.search(q, depth, exclude = {p} ∪ excluded ids of the row's key)
    above     = #{r in retrieved : s_r > s_p, or s_r = s_p and position_r < pos_p}
    rank      = above                          when above < depth (and, exact indexes, no r ties)
              = exact count over the catalogue, the same rule (BruteForce.count_higher)
                                               otherwise, exact indexes
              = unknown (>= depth)             otherwise, approximate indexes

``depth = max(ks)``. This is FactorizedTopK's rule (:mod:`recstack.metrics.factorized_top_k`):
equal scores in catalogue order, as a served list shows them (positions from
:meth:`Index.catalogue_positions`: build order for BruteForce, which serves ties in that
order, ascending id for approximate indexes); without ``true_candidate_ids`` ties count in
the positive's favour. A row whose query or positive score is not finite, or whose scores
could overflow (:meth:`BruteForce.overflowing`), is a miss (rank ``MISS_RANK``) and is not
searched. With an exact index every rank below ``depth`` equals FactorizedTopK's (same
masking: the positive's own id and the exclusions) and ranks beyond it come from an exact
count, so every reported number is identical to FactorizedTopK's. With an approximate index
the retrieved list may miss better candidates, so ranks (and the metrics) are what a serving
system using that index would see; a positive beyond ``depth`` is a miss, adding 0 to MRR
(MRR truncated at depth).

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
from ..metrics.factorized_top_k import MISS_RANK, metrics_from_ranks


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
        q = query_embeddings.detach().float().cpu()          # indexes search on the CPU
        pos_emb = true_candidate_embeddings.detach().float().cpu()
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
        unrankable = ~torch.isfinite(positive) | ~torch.isfinite(q).all(dim=1)
        overflowing = getattr(self.index, "overflowing", None)
        if overflowing is not None:
            unrankable |= overflowing(q)
        ranks = torch.full((batch,), MISS_RANK, dtype=torch.long)
        live = torch.nonzero(~unrankable).reshape(-1)
        if live.numel():
            ids = None if true_candidate_ids is None else true_candidate_ids.detach().reshape(-1).cpu()[live]
            masked = self._masked(batch, true_candidate_ids, query_keys).take(live.numpy())
            ranks[live] = self._ranks_of(q[live], positive[live], ids, masked)
        self._ranks.append(ranks)
        weight = torch.ones(batch) if sample_weight is None else sample_weight.detach().reshape(-1).cpu()
        self._weights.append(weight.double())
        if query_keys is not None:
            self._keys.append(query_keys.detach().long().reshape(-1).cpu())

    def _ranks_of(self, q: torch.Tensor, positive: torch.Tensor, ids: torch.Tensor | None,
                  masked: IdLists) -> torch.Tensor:
        """[b] ranks of rankable rows (module docstring): the retrieved list, else an exact count."""
        depth = min(max(self.ks), self.index.num_candidates)
        scores, found = self.index.search(q, k=depth, exclude=masked)
        above = scores > positive[:, None]
        # Padding (score -inf) never ties with a finite positive score.
        tied = (scores == positive[:, None]).any(dim=1) if ids is not None else torch.zeros_like(above[:, 0])
        counter = getattr(self.index, "count_higher", None) if self.index.is_exact else None
        if counter is None and bool(tied.any()):
            # Approximate index: the retrieved ties before the positive in catalogue order.
            rows = torch.nonzero(tied).reshape(-1)
            assert ids is not None
            first = torch.from_numpy(self.index.catalogue_positions(ids[rows]))
            listed = torch.from_numpy(self.index.catalogue_positions(found[rows.numpy()].reshape(-1)))
            earlier = listed.reshape(rows.shape[0], -1) < first[:, None]
            above[rows] |= (scores[rows] == positive[rows, None]) & earlier
        ranks = above.sum(dim=1)
        recount = ranks >= depth
        if counter is not None:
            # Exact index: a tie with the positive is settled by the exact count too, which orders
            # it by catalogue position whatever identifiers the list returns.
            recount |= tied
        if bool(recount.any()):
            rows = torch.nonzero(recount).reshape(-1)
            if counter is not None:
                ranks[rows] = counter(q[rows], positive[rows], exclude=masked.take(rows.numpy()),
                                      positive_ids=None if ids is None else ids[rows])
            else:
                ranks[rows] = -1           # unknown: beyond the search depth
        return ranks

    def _masked(self, batch: int, true_ids: torch.Tensor | None, keys: torch.Tensor | None) -> IdLists:
        """Per row: the positive's own id and the row key's exclusions."""
        masked = IdLists.empty(batch) if true_ids is None else IdLists(np.arange(batch + 1), true_ids.reshape(-1))
        if self.exclude is not None and keys is not None:
            masked = masked.union(self.exclude.take(keys.reshape(-1)))
        return masked

    def ranks(self) -> torch.Tensor:
        """[N] rank of every row (0 = first; -1 = beyond the search depth of an approximate index;
        MISS_RANK = unrankable: a non-finite query or positive score, or scores that could overflow)."""
        return torch.cat(self._ranks) if self._ranks else torch.empty(0, dtype=torch.long)

    def result(self) -> dict[str, float | str]:
        ranks = self.ranks()
        if ranks.numel() == 0:
            return {}
        # An unknown rank (approximate index, positive not retrieved) is a miss: 0 in MRR.
        ranks = torch.where(ranks < 0, MISS_RANK, ranks)
        keys = torch.cat(self._keys) if self._keys else None
        out: dict[str, float | str] = dict(metrics_from_ranks(ranks, torch.cat(self._weights), keys, self.ks,
                                                              self.name))
        if self.report_index:
            out[f"{self.name}/index"] = self.index.kind
        return out
