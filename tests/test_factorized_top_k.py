"""FactorizedTopK vs numpy ranks and per-user top-k lists."""

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.core.errors import ShapeError
from recstack.metrics import FactorizedTopK
from recstack.tasks import Retrieval


def numpy_ranks(q, cand, cand_ids, pos_emb, pos_ids=None, excluded=None):
    """rank_i = #{j unmasked : q_i.c_j > q_i.p_i, or = and j before the positive's first position}.

    Masked: id_j == pos_id_i and id_j excluded for i. Without pos_ids every tie favours the positive.
    """
    ranks = []
    for i in range(q.shape[0]):
        pos = q[i] @ pos_emb[i]
        first = None
        if pos_ids is not None:
            where = [j for j in range(cand.shape[0]) if cand_ids[j] == pos_ids[i]]
            first = where[0] if where else cand.shape[0]
        count = 0
        for j in range(cand.shape[0]):
            if pos_ids is not None and cand_ids[j] == pos_ids[i]:
                continue
            if excluded is not None and cand_ids[j] in excluded[i]:
                continue
            score = q[i] @ cand[j]
            count += score > pos or (first is not None and score == pos and j < first)
        ranks.append(count)
    return np.array(ranks)


@pytest.fixture
def integer_setup():
    # Integer embeddings: every score is exact, so ties are real ties.
    rng = np.random.default_rng(0)
    cand = rng.integers(-3, 4, size=(40, 3)).astype(np.float32)
    cand[7] = cand[3]                       # a duplicate embedding (ties)
    ids = np.arange(40)
    ids[39] = 5                             # a duplicated id, like a repeated title
    q = rng.integers(-3, 4, size=(23, 3)).astype(np.float32)
    pos_ids = rng.integers(0, 40, size=23)
    pos_ids[0] = 5
    pos_emb = cand[pos_ids]
    return q, cand, ids, pos_ids, pos_emb


def test_top_k_accuracy_with_ties_weights_and_uneven_batches(integer_setup):
    q, cand, ids, pos_ids, pos_emb = integer_setup
    weights = np.linspace(0.1, 2.0, 23)
    metric = FactorizedTopK(torch.tensor(cand), torch.tensor(ids), ks=(1, 3, 10))
    for start in (0, 10, 20):                # batches of 10, 10 and a final 3
        sl = slice(start, start + 10)
        metric.update_state(torch.tensor(q[sl]), torch.tensor(pos_emb[sl]),
                            true_candidate_ids=torch.tensor(pos_ids[sl]),
                            sample_weight=torch.tensor(weights[sl]))
    ranks = numpy_ranks(q, cand, ids, pos_emb, pos_ids)
    np.testing.assert_array_equal(metric.ranks().numpy(), ranks)
    result = metric.result()
    for k in (1, 3, 10):
        expected = (weights * (ranks < k)).sum() / weights.sum()
        assert result[f"factorized_top_k/top_{k}_categorical_accuracy"] == pytest.approx(expected)


def test_embedding_only_path_counts_strictly_greater(integer_setup):
    """Without ids (TFRS's default path) the positive's own entry ties and does not count."""
    q, cand, ids, pos_ids, pos_emb = integer_setup
    metric = FactorizedTopK(torch.tensor(cand), ks=(5,))
    metric.update_state(torch.tensor(q), torch.tensor(pos_emb))
    np.testing.assert_array_equal(metric.ranks().numpy(), numpy_ranks(q, cand, ids, pos_emb))


def test_chunked_scoring_gives_identical_ranks(integer_setup):
    q, cand, ids, pos_ids, pos_emb = integer_setup
    big = FactorizedTopK(torch.tensor(cand), torch.tensor(ids))
    small = FactorizedTopK(torch.tensor(cand), torch.tensor(ids), max_scores_in_memory=50)
    for m in (big, small):
        m.update_state(torch.tensor(q), torch.tensor(pos_emb), true_candidate_ids=torch.tensor(pos_ids))
    np.testing.assert_array_equal(big.ranks().numpy(), small.ranks().numpy())


def test_exclusions_mask_seen_items_but_never_the_positive(integer_setup):
    q, cand, ids, pos_ids, pos_emb = integer_setup
    rng = np.random.default_rng(1)
    keys = rng.integers(0, 6, size=23)
    seen = {u: set(rng.choice(40, size=8, replace=False).tolist()) for u in range(6)}
    seen[int(keys[0])].add(int(pos_ids[0]))   # the positive itself is "seen": still ranked
    pairs = [(u, i) for u, items in seen.items() for i in items]
    excl = Exclusions.from_pairs(torch.tensor([p[0] for p in pairs]), torch.tensor([p[1] for p in pairs]))
    metric = FactorizedTopK(torch.tensor(cand), torch.tensor(ids), ks=(1, 5), exclude=excl,
                            max_scores_in_memory=64)
    metric.update_state(torch.tensor(q), torch.tensor(pos_emb), true_candidate_ids=torch.tensor(pos_ids),
                        query_keys=torch.tensor(keys))
    ranks = numpy_ranks(q, cand, ids, pos_emb, pos_ids, excluded=[seen[int(u)] for u in keys])
    np.testing.assert_array_equal(metric.ranks().numpy(), ranks)


def test_group_recall_ndcg_mrr_match_per_user_top_k_lists():
    """Per-user metrics from sorted top-k lists, computed directly in numpy."""
    rng = np.random.default_rng(5)
    cand = rng.normal(size=(30, 4))
    users = rng.normal(size=(5, 4))
    rows_user = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, 3, 4])
    rows_item = np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11])
    metric = FactorizedTopK(torch.tensor(cand), ks=(3, 10))
    metric.update_state(torch.tensor(users[rows_user]), torch.tensor(cand[rows_item]),
                        true_candidate_ids=torch.tensor(rows_item), query_keys=torch.tensor(rows_user))
    # The rank of a positive counts the user's other positives too: they are
    # ordinary candidates, so mask only the row's own item.
    result = metric.result()
    for k in (3, 10):
        recalls, ndcgs, rrs = [], [], []
        for u in range(5):
            relevant = set(rows_item[rows_user == u].tolist())
            order = np.argsort(-(cand @ users[u]))
            topk = order[:k].tolist()
            recalls.append(len(relevant & set(topk)) / len(relevant))
            dcg = sum(1 / np.log2(pos + 2) for pos, item in enumerate(topk) if item in relevant)
            idcg = sum(1 / np.log2(pos + 2) for pos in range(min(len(relevant), k)))
            ndcgs.append(dcg / idcg)
            rrs.append(1 / (1 + min(order.tolist().index(i) for i in relevant)))
        assert result[f"factorized_top_k/recall_at_{k}"] == pytest.approx(np.mean(recalls))
        assert result[f"factorized_top_k/ndcg_at_{k}"] == pytest.approx(np.mean(ndcgs))
    assert result["factorized_top_k/mrr"] == pytest.approx(np.mean(rrs))


def test_callable_candidates_are_cached_until_invalidated():
    calls = []

    def candidates():
        calls.append(1)
        return torch.eye(3)

    metric = FactorizedTopK(candidates, ks=(1,))
    for _ in range(3):
        metric.update_state(torch.eye(3), torch.eye(3))
    assert len(calls) == 1
    metric.invalidate()
    metric.update_state(torch.eye(3), torch.eye(3))
    assert len(calls) == 2


def test_metric_through_retrieval_task_slices_extra_negatives():
    metric = FactorizedTopK(torch.eye(4), ks=(1,))
    task = Retrieval(metrics=metric)
    task(torch.eye(4)[:2], torch.eye(4), candidate_ids=torch.arange(4))
    assert metric.result()["factorized_top_k/top_1_categorical_accuracy"] == 1.0


def test_width_mismatch_error():
    metric = FactorizedTopK(torch.zeros(5, 3))
    with pytest.raises(ShapeError, match="width 4 but candidate embeddings 3"):
        metric.update_state(torch.zeros(2, 4), torch.zeros(2, 4))


def test_exclusions_need_query_keys():
    metric = FactorizedTopK(torch.zeros(5, 3), exclude=Exclusions.from_pairs(torch.tensor([0]), torch.tensor([1])))
    with pytest.raises(ValueError, match="query_keys"):
        metric.update_state(torch.zeros(2, 3), torch.zeros(2, 3))


def test_empty_metric_reports_nothing():
    assert FactorizedTopK(torch.zeros(5, 3)).result() == {}


def test_recbole_metrics_match_stable_sorted_top_k_lists_with_ties():
    """hit@k, precision@k, MRR@k (truncated), recall@k and NDCG@k as RecBole defines them, from
    each user's top-k list in numpy; scores tie often (small integers), and ties are listed in
    catalogue order (a stable sort), the one tie rule of every protocol."""
    rng = np.random.default_rng(11)
    cand = rng.integers(0, 3, size=(25, 3)).astype(np.float64)
    users = rng.integers(0, 3, size=(6, 3)).astype(np.float64)
    rows_user = np.array([0, 0, 1, 1, 1, 2, 3, 3, 4, 5, 5, 5, 5])
    rows_item = np.array([3, 9, 0, 4, 21, 7, 2, 24, 13, 1, 5, 8, 19])
    ks = (1, 3, 10)
    metric = FactorizedTopK(torch.tensor(cand), ks=ks)
    metric.update_state(torch.tensor(users[rows_user]), torch.tensor(cand[rows_item]),
                        true_candidate_ids=torch.tensor(rows_item), query_keys=torch.tensor(rows_user))
    result = metric.result()
    for k in ks:
        hits, precisions, rrs, recalls, ndcgs = [], [], [], [], []
        for u in range(6):
            relevant = set(rows_item[rows_user == u].tolist())
            order = np.argsort(-(cand @ users[u]), kind="stable").tolist()
            top = order[:k]
            found = [pos for pos, item in enumerate(top) if item in relevant]
            hits.append(float(bool(found)))
            precisions.append(len(found) / k)
            rrs.append(1 / (1 + found[0]) if found else 0.0)
            recalls.append(len(found) / len(relevant))
            idcg = sum(1 / np.log2(p + 2) for p in range(min(len(relevant), k)))
            ndcgs.append(sum(1 / np.log2(p + 2) for p in found) / idcg)
        name = "factorized_top_k"
        assert result[f"{name}/hit_at_{k}"] == pytest.approx(np.mean(hits))
        assert result[f"{name}/precision_at_{k}"] == pytest.approx(np.mean(precisions))
        assert result[f"{name}/mrr_at_{k}"] == pytest.approx(np.mean(rrs))
        assert result[f"{name}/recall_at_{k}"] == pytest.approx(np.mean(recalls))
        assert result[f"{name}/ndcg_at_{k}"] == pytest.approx(np.mean(ndcgs))
