"""One ranking rule for every protocol: ties in catalogue order, NaN never a hit.

The reference is the list a stable sort of the scores serves (``np.argsort(-s, kind="stable")``
over the unmasked catalogue): a positive's rank is its index in that list.
"""

import math

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.metrics import FactorizedTopK, TopKCategoricalAccuracy
from recstack.metrics.factorized_top_k import MISS_RANK

NAN = float("nan")


def served_rank(scores, positive, masked):
    """Index of ``positive`` in the stable descending order of the unmasked catalogue."""
    keep = [j for j in range(len(scores)) if j == positive or j not in masked]
    order = [keep[i] for i in np.argsort(-np.asarray(scores)[keep], kind="stable")]
    return order.index(positive)


def tied_setup():
    # Integer embeddings with many exact ties; candidate position = id.
    rng = np.random.default_rng(3)
    cand = rng.integers(-1, 2, size=(12, 2)).astype(np.float32)
    users = rng.integers(-1, 2, size=(4, 2)).astype(np.float32)
    rows_user = np.array([0, 0, 1, 1, 1, 2, 3, 3])
    rows_item = np.array([4, 9, 0, 5, 11, 7, 2, 6])
    return cand, users, rows_user, rows_item


@pytest.mark.parametrize("protocol", ["all-items", "exclude-seen"])
def test_ties_follow_catalogue_order_in_every_protocol(protocol):
    cand, users, rows_user, rows_item = tied_setup()
    seen = {0: {1, 3}, 1: {2, 8}, 2: {0}, 3: {5, 10, 11}} if protocol == "exclude-seen" else {}
    pairs = [(u, i) for u, items in seen.items() for i in items]
    exclude = (Exclusions.from_pairs(torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]))
               if pairs else None)
    metric = FactorizedTopK(torch.tensor(cand), ks=(1, 3), exclude=exclude)
    metric.update_state(torch.tensor(users[rows_user]), torch.tensor(cand[rows_item]),
                        true_candidate_ids=torch.tensor(rows_item), query_keys=torch.tensor(rows_user))
    expected = [served_rank(cand @ users[u], p, seen.get(u, set())) for u, p in zip(rows_user, rows_item)]
    assert metric.ranks().tolist() == expected
    assert sum((cand @ users[u] == cand[p] @ users[u]).sum() > 1 for u, p in zip(rows_user, rows_item)) >= 4


def test_a_constant_scorer_gets_the_metrics_of_one_fixed_list_not_perfect_ones():
    # All scores 0 (e.g. a collapsed tower): TFRS's rule would call every positive rank 0.
    cand = torch.zeros(10, 4)
    metric = FactorizedTopK(cand, ks=(1, 5))
    positives = torch.tensor([0, 3, 7, 9])
    metric.update_state(torch.zeros(4, 4), cand[positives], true_candidate_ids=positives,
                        query_keys=torch.tensor([0, 1, 2, 2]))
    assert metric.ranks().tolist() == [0, 3, 7, 9]      # 9 counts user 2's other positive (7) before it
    result = metric.result()
    assert result["factorized_top_k/top_1_categorical_accuracy"] == 0.25
    assert result["factorized_top_k/recall_at_1"] == pytest.approx((1 + 0 + 0) / 3)
    # Tied positives of one user take distinct ranks (7 and 9), so NDCG never needs capping.
    assert result["factorized_top_k/ndcg_at_5"] == pytest.approx((1 + 1 / math.log2(3 + 2) + 0) / 3)


def test_without_ids_ties_count_for_the_positive_as_in_tfrs():
    cand = torch.zeros(10, 4)
    metric = FactorizedTopK(cand, ks=(1,))
    metric.update_state(torch.zeros(3, 4), cand[:3])
    assert metric.ranks().tolist() == [0, 0, 0]


@pytest.mark.parametrize("protocol", ["all-items", "exclude-seen"])
def test_a_nan_positive_is_a_miss_at_every_k(protocol):
    cand = torch.randn(6, 3, generator=torch.Generator().manual_seed(0))
    q = torch.randn(3, 3, generator=torch.Generator().manual_seed(1))
    q[1] = NAN
    positives = torch.tensor([2, 4, 5])
    keys = torch.tensor([0, 1, 2])
    exclude = Exclusions.from_pairs(torch.tensor([0, 1]), torch.tensor([1, 3])) if protocol == "exclude-seen" else None
    metric = FactorizedTopK(cand, ks=(1, 6, 100), exclude=exclude)
    metric.update_state(q, cand[positives], true_candidate_ids=positives, query_keys=keys)
    ranks = metric.ranks()
    assert int(ranks[1]) == MISS_RANK and int(ranks[0]) < 6 and int(ranks[2]) < 6
    result = metric.result()
    assert result["factorized_top_k/top_100_categorical_accuracy"] == pytest.approx(2 / 3)
    assert result["factorized_top_k/recall_at_100"] == pytest.approx(2 / 3)
    expected_mrr = (1 / (1 + int(ranks[0])) + 0.0 + 1 / (1 + int(ranks[2]))) / 3
    assert result["factorized_top_k/mrr"] == pytest.approx(expected_mrr)


def test_a_diverged_model_scores_zero_not_one():
    """Every score NaN (the lr=inf run of issue 12 scored top-1 = recall@10 = MRR = 1.0)."""
    cand = torch.full((15, 4), NAN)
    metric = FactorizedTopK(cand, ks=(1, 10))
    metric.update_state(torch.full((5, 4), NAN), cand[:5], true_candidate_ids=torch.arange(5),
                        query_keys=torch.arange(5))
    result = metric.result()
    assert all(value == 0.0 for value in result.values()), result


def test_nan_candidates_rank_last():
    cand = torch.tensor([[NAN], [3.0], [NAN], [1.0], [-2.0], [NAN]])
    metric = FactorizedTopK(cand, ks=(1,))
    positives = torch.tensor([4, 3])                    # the two lowest finite scores
    metric.update_state(torch.ones(2, 1), cand[positives], true_candidate_ids=positives)
    assert metric.ranks().tolist() == [2, 1]


def test_chunked_scoring_keeps_the_tie_rule():
    cand, users, rows_user, rows_item = tied_setup()
    ranks = []
    for budget in (1 << 24, 5):
        metric = FactorizedTopK(torch.tensor(cand), max_scores_in_memory=budget)
        metric.update_state(torch.tensor(users[rows_user]), torch.tensor(cand[rows_item]),
                            true_candidate_ids=torch.tensor(rows_item))
        ranks.append(metric.ranks().tolist())
    assert ranks[0] == ranks[1]


def test_top_k_categorical_accuracy_never_counts_nan_as_a_hit():
    metric = TopKCategoricalAccuracy(k=1)
    labels = torch.eye(3)
    scores = torch.tensor([[NAN, 0.0, 0.0],      # labelled score NaN: a miss (TFRS counted a hit)
                           [NAN, 1.0, NAN],      # NaN columns never outrank the label: a hit
                           [0.0, 5.0, 1.0]])     # an ordinary miss
    metric.update_state(labels, scores)
    assert metric.result()["top_1_categorical_accuracy"] == pytest.approx(1 / 3)
    assert not math.isnan(metric.result()["top_1_categorical_accuracy"])


def test_a_query_whose_scores_could_overflow_is_a_miss_and_one_just_below_ranks():
    # [2, 2, 2, 2, -2, -2, -2, -2] . 3e38 overflows float32: NaN in one matmul layout, inf in
    # another (torch.sign(NaN) is 0, so a NaN used to count as a tie before the positive).
    d = 8
    spike = torch.cat([torch.full((1, 4), 2.0), torch.full((1, 4), -2.0)], 1)
    cand = torch.cat([spike, torch.eye(d)[:5]])                       # max norm: sqrt(32)
    limit = torch.finfo(torch.float32).max / 2
    below = limit / math.sqrt(32) / math.sqrt(d) * 0.99              # ||q|| * max||c|| just under the limit
    q = torch.stack([torch.full((d,), 3e38), torch.full((d,), below)])
    metric = FactorizedTopK(cand, ks=(1, 5))
    positives = torch.tensor([2, 2])
    metric.update_state(q, cand[positives], true_candidate_ids=positives)
    # Row 1: the spike scores exactly 0, eye rows tie at `below`; the positive (position 2) follows position 1.
    assert metric.ranks().tolist() == [MISS_RANK, 1]
