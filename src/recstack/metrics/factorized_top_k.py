"""FactorizedTopK: exact full-catalogue retrieval metrics for two-tower models.

For each query row with positive candidate p (score s_p = q . e_p, first catalogue
position pos_p of its id), the metric computes its rank among the unmasked candidates,

    rank = #{c : s_c > s_p} + #{c : s_c = s_p, position_c < pos_p}

streaming over query batches and candidate chunks, so memory is bounded by
``max_scores_in_memory`` whatever the catalogue size.

**Ties** (one rule for every protocol: all items, exclude seen, per-user groups): equal
scores are ordered by catalogue position, as a stable sort of the scores would list them
(what ``recstack recommend`` and the serving index return: "ties keep item-id order").
So a constant scorer gets the metrics of one fixed list, never a perfect score, and a
user's positives that tie with each other take distinct ranks (recall@k <= k / |P|).
Without ``true_candidate_ids`` the positive's own catalogue entry cannot be told from the
others, so every tie then counts in the positive's favour, as Keras ``in_top_k`` and
TFRS's FactorizedTopK do. A positive whose id is not in the catalogue is placed after
every catalogue entry it ties with.

**Two ways to the same ranks.** When a batch's rows of one query key share one embedding
(an id-only query tower; the caller says so with ``query_rows`` or the embeddings show it),
each distinct query's masked scores are sorted once, stably, and a positive's rank is its index
in that list: the same rule, at Q x C log C instead of B x C x d for Q distinct queries in B
rows. Otherwise (and for the cases the sort cannot take: an id listed twice, a positive outside
the catalogue or in its own exclusion list, non-finite values) every row counts the candidates
above its positive. The sort reads the positive's score from the same score matrix as the
others; the count computes it as q · e_p, which can differ in the last bit.

**Non-finite scores**: a candidate scored NaN never ranks above the positive (NaN
candidates rank last); a positive whose score is not finite (NaN, or an overflow to
±inf), or whose query embedding is not, is a miss at every k and adds 0 to MRR (its
rank is :data:`MISS_RANK`), so a diverged model scores 0, never 1. So is a query whose
scores could overflow (``||q|| * max ||c||`` at least half the dtype's largest value,
:func:`~recstack.layers.candidates.scores_may_overflow`): an overflowing inner product of
finite vectors comes out inf or NaN depending on the summation order, so such a row has no
ranking (:class:`~recstack.index.BruteForce` refuses such queries; :class:`~recstack.index.IndexTopK`
counts them as misses too).

From the ranks:

* ``top_{k}_categorical_accuracy`` = weighted mean of [rank < k] (TFRS's metric).
* ``recall_at_{k}``, ``ndcg_at_{k}``, ``mrr``, ``mrr_at_{k}``, ``hit_at_{k}``,
  ``precision_at_{k}``: computed per query group (RecBole's definitions). With
  ``query_keys`` (e.g. the encoded user id of each row) the rows of one key form
  one query whose relevant items are those rows' positives:
  recall = |top-k ∩ P| / |P|, NDCG = DCG / IDCG with DCG = sum over p in P with
  rank_p < k of 1 / log2(rank_p + 2) and IDCG = sum_{i < min(|P|, k)} 1 / log2(i + 2),
  MRR = 1 / (1 + min_p rank_p) (untruncated), MRR@k = the same when min_p rank_p < k else 0,
  hit@k = [|top-k ∩ P| > 0], precision@k = |top-k ∩ P| / k. Without keys
  each row is its own query (so recall@k equals top-k accuracy). Group metrics
  are unweighted means over groups; they are exact when a key's query embedding
  is the same on all its rows (id-only query towers), and otherwise use each
  row's own embedding.

Masked candidates (scored -inf): every position holding the row's own positive
id (when ``true_candidate_ids`` are given; so a positive never counts against
itself, even when the catalogue lists it twice), and, with ``exclude``, the ids
excluded for the row's query key (the "exclude seen" protocol). A positive is
never masked by an exclusion list, because its score is compared, not ranked.

Candidate embeddings come from a tensor or a callable; a callable is evaluated
once and cached until :meth:`invalidate` or :meth:`reset_state` (the training
loop invalidates after every optimizer step, evaluation computes them once).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from ..layers.candidates import (CandidateEmbeddings, IdPositions, max_row_norm, resolve_embeddings,
                                 scores_may_overflow)
from ..core.errors import ShapeError
from ..core.exclusions import Exclusions
from .base import Metric

#: The rank of a positive that cannot be ranked (a non-finite score or query, a query whose scores
#: could overflow; an approximate index's positive beyond its search depth): past every cut-off,
#: exactly 0 in MRR.
MISS_RANK = torch.iinfo(torch.long).max // 4


class FactorizedTopK(Metric):
    """Exact top-k retrieval metrics over the full candidate set.

    Args:
        candidates: [C, d] candidate embeddings, or a zero-argument callable returning
            them (e.g. :class:`recstack.layers.candidates.TowerCandidates`).
        candidate_ids: [C] integer ids of the candidates (default ``arange(C)``);
            used to mask each row's own positive and excluded items.
        ks: cut-offs reported for every metric.
        exclude: optional per-query-key exclusion lists (needs ``query_keys`` in
            :meth:`update_state`).
        name: prefix of the result keys (TFRS: ``factorized_top_k``).
        max_scores_in_memory: bound on the query x candidate score block.
    """

    gathered_state = (("_ranks", torch.long), ("_weights", torch.float64), ("_keys", torch.long))

    def __init__(
        self,
        candidates: CandidateEmbeddings,
        candidate_ids: torch.Tensor | None = None,
        ks: Sequence[int] = (1, 5, 10, 50, 100),
        exclude: Exclusions | None = None,
        name: str = "factorized_top_k",
        max_scores_in_memory: int = 1 << 24,
    ):
        super().__init__(name)
        if not ks or any(int(k) <= 0 for k in ks):
            raise ValueError(f"ks must be positive integers; got {list(ks)}.")
        self.candidates = candidates
        self.candidate_ids = None if candidate_ids is None else torch.as_tensor(candidate_ids).long()
        self.ks = tuple(sorted({int(k) for k in ks}))
        self.exclude = exclude
        self.max_scores_in_memory = int(max_scores_in_memory)
        self._embeddings: torch.Tensor | None = None
        self._nonfinite_rows = torch.empty(0, dtype=torch.long)
        self._max_norm = 0.0
        self._positions: IdPositions | None = None
        self.reset_state()

    # Candidate cache ---------------------------------------------------------
    def invalidate(self) -> None:
        """Drop cached candidate embeddings (call after the candidate tower changed)."""
        self._embeddings = None

    def candidate_embeddings(self) -> torch.Tensor:
        """[C, d] candidate embeddings, computed once until invalidated."""
        if self._embeddings is None:
            emb = resolve_embeddings(self.candidates)
            if self.candidate_ids is not None and self.candidate_ids.shape[0] != emb.shape[0]:
                raise ShapeError(
                    f"{emb.shape[0]} candidate embeddings but {self.candidate_ids.shape[0]} candidate ids."
                )
            if self._positions is None:
                ids = self.candidate_ids if self.candidate_ids is not None else torch.arange(emb.shape[0])
                self._positions = IdPositions(ids)
            self._embeddings = emb
            # Rows whose scores may be NaN: ranked last (their NaN scores become -inf when scored).
            self._nonfinite_rows = torch.nonzero(~torch.isfinite(emb).all(dim=1)).reshape(-1)
            self._max_norm = max_row_norm(emb)
        return self._embeddings

    # Metric protocol ---------------------------------------------------------
    def reset_state(self) -> None:
        self._ranks: list[torch.Tensor] = []
        self._weights: list[torch.Tensor] = []
        self._keys: list[torch.Tensor] = []
        self._has_keys: bool | None = None
        self.invalidate()

    @torch.no_grad()
    def update_state(
        self,
        query_embeddings: torch.Tensor,
        true_candidate_embeddings: torch.Tensor,
        true_candidate_ids: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
        query_keys: torch.Tensor | None = None,
        query_rows: torch.Tensor | None = None,
    ) -> None:
        """Rank each row's positive among all candidates.

        Args:
            query_embeddings: [B, d]; or, with ``query_rows``, [Q, d], one row per distinct query.
            true_candidate_embeddings: [B, d] embeddings of the positives.
            true_candidate_ids: [B] ids of the positives (masks the positive's own
                catalogue entries; recommended, it makes ranks exact under rounding).
            sample_weight: [B] weights for top-k accuracy.
            query_keys: [B] integer query keys (exclusions and per-group metrics).
            query_rows: [B] the query of each row, ``query_embeddings[query_rows]`` its embedding
                (needs ``query_keys``, one key per query): a caller whose query tower reads only the
                key (EASE, item-KNN: a [V] row per user) embeds each user once, not once per row.
        """
        distinct = None
        q = query_embeddings.detach()
        pos_emb = true_candidate_embeddings.detach()
        if query_rows is not None:
            distinct = self._given_distinct(q, query_rows, query_keys)
        rows_shape = (q.shape[0] if distinct is None else distinct.inverse.shape[0], q.shape[-1])
        if q.dim() != 2 or pos_emb.shape != rows_shape:
            raise ShapeError(
                f"query embeddings {tuple(q.shape)} and true candidate embeddings "
                f"{tuple(pos_emb.shape)} must both be [B, d] with the same shape"
                + (" (the queries [Q, d] with query_rows [B])." if distinct is not None else ".")
            )
        if self.exclude is not None and query_keys is None:
            raise ValueError("This FactorizedTopK has exclusions; pass query_keys= to update_state.")
        if self._has_keys is None:
            self._has_keys = query_keys is not None
        elif self._has_keys != (query_keys is not None):
            raise ValueError("Pass query_keys on every update_state call or on none.")
        cand = self.candidate_embeddings()
        if cand.shape[1] != q.shape[1]:
            raise ShapeError(
                f"query embeddings have width {q.shape[1]} but candidate embeddings {cand.shape[1]}; "
                "both towers must output the same dimension."
            )
        cand = cand.to(q.dtype)
        distinct = distinct or distinct_queries(q, query_keys)
        ranks = None
        if distinct is not None and true_candidate_ids is not None:
            ranks = self._ranks_by_sorting(distinct, cand, true_candidate_ids)
        if ranks is None:
            if query_rows is not None:
                q = distinct.queries[distinct.inverse]      # the row-by-row count needs [B, d]
            positive_scores = (q * pos_emb).sum(dim=1)
            rows, positions = self._masked_pairs(q.shape[0], true_candidate_ids, query_keys)
            first = None if true_candidate_ids is None else self._first_positions(true_candidate_ids, cand.shape[0])
            ranks = self._count_higher(q, cand, positive_scores, rows, positions, first, distinct)
            unrankable = (~torch.isfinite(positive_scores) | ~torch.isfinite(q).all(dim=1)
                          | scores_may_overflow(q, self._max_norm))
            ranks = torch.where(unrankable, MISS_RANK, ranks)
        self._ranks.append(ranks.cpu())
        weight = torch.ones(ranks.shape[0]) if sample_weight is None else sample_weight.detach().reshape(-1).double()
        self._weights.append(weight.double().cpu())
        if query_keys is not None:
            self._keys.append(query_keys.detach().long().reshape(-1).cpu())

    def _first_positions(self, true_ids: torch.Tensor, num_candidates: int) -> torch.Tensor:
        """[B] first catalogue position of each row's positive id (``num_candidates`` if absent)."""
        assert self._positions is not None and len(self._positions) == num_candidates
        return self._positions.first_positions(true_ids.detach().cpu()).to(true_ids.device)

    def _masked_pairs(
        self, batch: int, true_ids: torch.Tensor | None, keys: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, candidate position) pairs to score -inf: own positives and exclusions."""
        assert self._positions is not None
        row_parts, id_parts = [], []
        if true_ids is not None:
            row_parts.append(torch.arange(batch))
            id_parts.append(true_ids.detach().long().reshape(-1))
        if self.exclude is not None and keys is not None:
            r, i = self.exclude.pairs(keys.detach().long().reshape(-1))    # numpy (IdLists)
            row_parts.append(torch.from_numpy(r))
            id_parts.append(torch.from_numpy(i))
        if not row_parts:
            empty = torch.empty(0, dtype=torch.long)
            return empty, empty
        return self._positions.positions(torch.cat(row_parts), torch.cat(id_parts))

    @staticmethod
    def _given_distinct(queries: torch.Tensor, query_rows: torch.Tensor,
                        query_keys: torch.Tensor | None) -> DistinctQueries:
        """Check a caller's (queries [Q, d], query_rows [B], query_keys [B]): rows in range, one key per query."""
        if query_keys is None:
            raise ValueError("query_rows= needs query_keys= (the key of each row).")
        inverse = query_rows.detach().long().reshape(-1)
        keys = query_keys.detach().long().reshape(-1).to(inverse.device)
        if queries.dim() != 2 or inverse.shape != keys.shape:
            raise ShapeError(f"query_rows {tuple(inverse.shape)} and query_keys {tuple(keys.shape)} must both be [B] "
                             f"and the queries [Q, d]; got queries {tuple(queries.shape)}.")
        if inverse.numel() and (int(inverse.min()) < 0 or int(inverse.max()) >= queries.shape[0]):
            raise ValueError(f"query_rows must lie in [0, {queries.shape[0]}) (the rows of the queries).")
        query_keys_of = torch.full((queries.shape[0],), -1, dtype=torch.long, device=keys.device)
        query_keys_of[inverse] = keys
        if not torch.equal(query_keys_of[inverse], keys):
            raise ValueError("query_rows maps rows with different query_keys to one query; give each key its own.")
        if torch.bincount(inverse, minlength=queries.shape[0]).min() == 0 if queries.shape[0] else False:
            raise ValueError("query_rows leaves some queries without a row; pass only the queries the rows use.")
        return DistinctQueries(queries, inverse, query_keys_of)

    def _ranks_by_sorting(self, distinct: DistinctQueries, cand: torch.Tensor,
                          true_ids: torch.Tensor) -> torch.Tensor | None:
        """[B] ranks from one stable descending sort of each distinct query's masked scores, or None
        when a case needs the row-by-row count (:meth:`_count_higher`).

        In a stable sort of the scores the entries before the positive's are exactly those that
        score higher or tie with it from an earlier catalogue position, so its index in the sorted
        list is the rank of the tie rule; excluded items are -inf and sort after it. This costs
        Q x C log C for Q distinct queries, against B x C (x d) for the count, and gives the same
        ranks whenever it applies: every catalogue id once, every positive in the catalogue and not
        in its own exclusion list, every query and candidate finite, no score that could overflow,
        and the Q x C scores within ``max_scores_in_memory``.
        """
        assert self._positions is not None
        queries, inverse, keys = distinct
        num_queries, num_candidates = queries.shape[0], cand.shape[0]
        if (num_queries * num_candidates > self.max_scores_in_memory or not self._positions.unique
                or self._nonfinite_rows.numel() or not bool(torch.isfinite(queries).all())
                or bool(scores_may_overflow(queries, self._max_norm).any())):
            return None
        positive_positions = self._positions.first_positions(true_ids.detach().cpu()).to(queries.device)
        if bool((positive_positions == num_candidates).any()):
            return None
        scores = queries @ cand.t()                                                  # [Q, C]
        if self.exclude is not None:
            rows, ids = self.exclude.pairs(keys.cpu())
            rows, positions = self._positions.positions(torch.from_numpy(rows), torch.from_numpy(ids))
            rows, positions = rows.to(queries.device), positions.to(queries.device)
            if bool(torch.isin(inverse * num_candidates + positive_positions,
                               rows * num_candidates + positions).any()):
                return None                   # a positive in its own exclusion list is compared, not masked
            scores[rows, positions] = float("-inf")
        order = torch.sort(scores, dim=1, descending=True, stable=True).indices   # ties: catalogue order
        place = torch.empty_like(order)
        place.scatter_(1, order, torch.arange(num_candidates, device=order.device).expand(num_queries, -1))
        return place[inverse, positive_positions]

    def _count_higher(self, q: torch.Tensor, cand: torch.Tensor, positive_scores: torch.Tensor,
                      rows: torch.Tensor, positions: torch.Tensor,
                      first_positions: torch.Tensor | None,
                      distinct: DistinctQueries | None = None) -> torch.Tensor:
        """Per row, the unmasked candidates ranked above the positive: scoring strictly higher, or
        tying with it from an earlier catalogue position (``first_positions``; None: ties never count).

        ``distinct``: :func:`distinct_queries` of ``q``: the catalogue is scored once per distinct query and the scores
        copied to the rows, which matters when d is large (EASE, item-KNN: d = V) and users repeat.
        """
        batch, num_candidates = q.shape[0], cand.shape[0]
        chunk = max(1, self.max_scores_in_memory // max(batch, 1))
        counts = torch.zeros(batch, dtype=torch.long, device=q.device)
        q_t = q.t().contiguous() if distinct is None else None
        for start in range(0, num_candidates, chunk):
            stop = min(start + chunk, num_candidates)
            if distinct is None:
                # [chunk, B]: candidates on rows is the fast matmul layout for small d.
                scores = cand[start:stop] @ q_t
            else:
                # [Q, chunk] once per distinct query, its rows copied to the B rows (a contiguous
                # row gather), viewed as [chunk, B] like the other branch.
                queries, inverse, _ = distinct
                scores = (queries @ cand[start:stop].t())[inverse].t()
            if self._nonfinite_rows.numel():
                bad = self._nonfinite_rows[(self._nonfinite_rows >= start) & (self._nonfinite_rows < stop)] - start
                scores[bad] = scores[bad].nan_to_num(nan=float("-inf"), posinf=float("inf"), neginf=float("-inf"))
            if positions.numel():
                inside = (positions >= start) & (positions < stop)
                scores[positions[inside] - start, rows[inside]] = float("-inf")
            # In place, one pass each: sign(s_c - s_p) is 1 above, 0 tied, -1 below (no NaN is left:
            # NaN candidate scores are -inf now, unrankable rows are set apart by the caller); over a
            # column, sum(sign) = above - below and sum(|sign|) = above + below, so above = their
            # mean. Float sums of +-1 are exact below 2**24 and several times faster than
            # comparisons summed as bools.
            sign = scores.sub_(positive_scores).sign_()
            plus_minus = sign.sum(dim=0, dtype=torch.float32)
            decided = sign.abs_().sum(dim=0, dtype=torch.float32)
            counts += ((plus_minus + decided) * 0.5).long()
            if first_positions is not None:
                # Ties leave a column short of stop - start decided entries: rare, so the tied
                # candidates listed before the positive are counted for those columns only.
                short = torch.nonzero(decided < stop - start).reshape(-1)
                if short.numel():
                    earlier = (torch.arange(start, stop, device=q.device)[:, None]
                               < first_positions[short][None, :])
                    counts[short] += (sign[:, short] == 0).logical_and_(earlier).sum(dim=0)
        return counts

    def ranks(self) -> torch.Tensor:
        """[N] rank of every row seen since the last reset (0 = ranked first; MISS_RANK = unrankable,
        i.e. a NaN positive score)."""
        return torch.cat(self._ranks) if self._ranks else torch.empty(0, dtype=torch.long)

    def result(self) -> dict[str, float]:
        ranks = self.ranks()
        if ranks.numel() == 0:
            return {}  # nothing seen (e.g. metrics off during training)
        keys = torch.cat(self._keys) if self._keys else None
        return metrics_from_ranks(ranks, torch.cat(self._weights), keys, self.ks, self.name)


class DistinctQueries(NamedTuple):
    """The distinct queries of a batch: ``queries[inverse]`` is the batch's [B, d] query embeddings."""

    queries: torch.Tensor   # [Q, d]
    inverse: torch.Tensor   # [B] row -> query
    keys: torch.Tensor      # [Q] the query key of each query


def distinct_queries(q: torch.Tensor, keys: torch.Tensor | None) -> DistinctQueries | None:
    """The distinct queries of ``q`` [B, d] by key when the B rows hold at most B / 2 distinct
    ``keys`` [B] and every row's embedding equals its key's first row's; else None.

    The keys only propose the grouping; the embeddings decide it, so a query tower that reads
    per-row context (a timestamp) is scored row by row as before. Exact equality is checked, so
    the scores are the same numbers either way.
    """
    if keys is None or q.shape[0] < 2:
        return None
    keys = keys.detach().long().reshape(-1).to(q.device)
    unique, inverse = torch.unique(keys, return_inverse=True)
    if 2 * unique.numel() > keys.numel():
        return None
    rows = torch.arange(keys.numel(), device=q.device)
    first = torch.full((unique.numel(),), keys.numel(), dtype=torch.long, device=q.device)
    first.scatter_reduce_(0, inverse, rows, reduce="amin")
    queries = q[first]
    if not torch.equal(queries[inverse], q):
        return None
    return DistinctQueries(queries, inverse, unique)


def metrics_from_ranks(ranks: torch.Tensor, weights: torch.Tensor, keys: torch.Tensor | None, ks: Sequence[int],
                 name: str) -> dict[str, float]:
    """The result dict from ranks [N] (MISS_RANK: a miss), weights [N] and optional query keys [N]:
    weighted top-k accuracy, then per-group recall@k, NDCG@k and MRR (module docstring)."""
    out: dict[str, float] = {}
    total_weight = float(weights.sum())
    for k in ks:
        hits = (ranks < k).double()
        out[f"{name}/top_{k}_categorical_accuracy"] = (
            float((hits * weights.double()).sum()) / total_weight if total_weight else 0.0
        )
    out.update(_group_metrics(ranks, keys, ks, name))
    return out


def _group_metrics(ranks: torch.Tensor, keys: torch.Tensor | None, ks: Sequence[int],
                   name: str) -> dict[str, float]:
    """Recall@k, NDCG@k and MRR per query group, averaged over groups."""
    if keys is None:
        group = torch.arange(ranks.shape[0])
        num_groups = ranks.shape[0]
    else:
        _, group = torch.unique(keys, return_inverse=True)
        num_groups = int(group.max()) + 1
    sizes = torch.bincount(group, minlength=num_groups).double()
    ranks_d = ranks.double()
    discount = 1.0 / torch.log2(ranks_d + 2.0)
    out: dict[str, float] = {}
    max_k = max(ks)
    # ideal_dcg[n] = sum_{i < n} 1 / log2(i + 2)
    ideal = torch.zeros(max_k + 1, dtype=torch.float64)
    ideal[1:] = torch.cumsum(1.0 / torch.log2(torch.arange(max_k, dtype=torch.float64) + 2.0), 0)
    for k in ks:
        hit = (ranks < k).double()
        recall = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, hit) / sizes
        dcg = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group, hit * discount)
        idcg = ideal[torch.clamp(sizes.long(), max=k)]
        # Rows of one key with different query embeddings (contextual towers) rank in different
        # lists, where two positives can share a rank and push DCG past IDCG; cap at 1.
        ndcg = torch.clamp(dcg / idcg, max=1.0)
        out[f"{name}/recall_at_{k}"] = float(recall.mean())
        out[f"{name}/ndcg_at_{k}"] = float(ndcg.mean())
        found = recall * sizes                           # |top-k ∩ P| per group
        out[f"{name}/hit_at_{k}"] = float((found > 0).double().mean())
        out[f"{name}/precision_at_{k}"] = float((found / k).mean())
    best = torch.full((num_groups,), math.inf, dtype=torch.float64).scatter_reduce_(
        0, group, ranks_d, reduce="amin")
    # A miss (MISS_RANK: a NaN positive, or beyond an approximate index's depth) adds exactly 0.
    out[f"{name}/mrr"] = float(torch.where(best >= MISS_RANK, 0.0, 1.0 / (best + 1.0)).mean())
    for k in ks:
        # RecBole's MRR@k: the reciprocal rank of the first positive if it is in the top k, else 0.
        out[f"{name}/mrr_at_{k}"] = float(torch.where(best < k, 1.0 / (best + 1.0), 0.0).mean())
    return out
