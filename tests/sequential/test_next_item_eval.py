"""Leave-one-out HR@k / NDCG@k / MRR against a numpy reference written from the definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recstack.core.id_lists import IdLists
from recstack.datasets.sampled_negatives import sample_negatives
from recstack.datasets.sequences import build_histories, leave_one_out
from recstack.models.next_item_eval import (
    evaluate_next_item,
    evaluate_sampled,
    rank_metrics,
    sampled_ranks,
    target_ranks,
)

V = 12


def reference_rank(scores: np.ndarray, target: int, excluded: set[int]) -> float:
    """The target's index in the list a stable descending sort serves over ids 1..V-1 (the
    excluded ids removed, NaN scores last); inf when the target's own score is not finite."""
    if not math.isfinite(scores[target]):
        return math.inf
    keep = np.array([j for j in range(1, len(scores)) if j == target or j not in excluded])
    order = keep[np.argsort(-scores[keep], kind="stable")]
    return float(np.flatnonzero(order == target)[0])


def reference_metrics(rank: float, k: int) -> tuple[float, float, float]:
    hit = rank < k
    return float(hit), (1.0 / math.log2(rank + 2) if hit else 0.0), 1.0 / (rank + 1)


class TableScorer:
    """Scores depend only on the history's last item: a fixed random table [V, V]."""

    def __init__(self, table: np.ndarray):
        self.table = torch.from_numpy(table)

    def score_items(self, histories: torch.Tensor, features=None) -> torch.Tensor:
        return self.table[histories[:, -1]]


def interactions(seed: int = 0, users: int = 25):
    rng = np.random.default_rng(seed)
    n = users * 8
    return np.stack([rng.integers(0, users, n), rng.integers(1, V, n), rng.integers(0, 30, n)], axis=1)


def reference_loo(table: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[tuple[int, int, int]]] = {}
    for row, (u, i, t) in enumerate(table):
        out.setdefault(int(u), []).append((int(t), row, int(i)))
    return {u: [i for _, _, i in sorted(v)] for u, v in sorted(out.items()) if len(v) >= 3}


@pytest.mark.parametrize("exclude_seen", [False, True])
def test_leave_one_out_metrics_match_the_reference(exclude_seen: bool) -> None:
    table = interactions()
    rng = np.random.default_rng(1)
    scores = rng.integers(0, 4, (V, V)).astype(np.float64)    # small integers: many ties
    ref = reference_loo(table)
    (*_, last0, target0), (*_, last1, target1) = list(ref.values())[:2]
    scores[last0, target0] = np.nan                           # a NaN target: a miss
    scores[last1, target1 % (V - 1) + 1] = np.nan             # a NaN candidate: never ahead
    split = leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2]), 4)
    result = evaluate_next_item(TableScorer(scores), split.test, ks=(1, 3, 5), exclude_seen=exclude_seen,
                                batch_size=7)
    assert result.users.tolist() == list(ref)
    expected = {f"{m}_at_{k}": [] for m in ("hr", "ndcg") for k in (1, 3, 5)} | {"mrr": []}
    for row, items in enumerate(ref.values()):
        target, last = items[-1], items[-2]
        excluded = set(items[:-1]) - {target} if exclude_seen else set()
        rank = reference_rank(scores[last], target, excluded)
        assert result.ranks[row] == rank
        for k in (1, 3, 5):
            hr, ndcg, mrr = reference_metrics(rank, k)
            expected[f"hr_at_{k}"].append(hr)
            expected[f"ndcg_at_{k}"].append(ndcg)
        expected["mrr"].append(reference_metrics(rank, 1)[2])
    for name, values in expected.items():
        np.testing.assert_allclose(result.per_row[name], values, rtol=1e-12)
        assert result.metrics[name] == pytest.approx(np.mean(values))
    assert np.isinf(result.ranks[0]) and result.per_row["hr_at_5"][0] == 0.0


def test_nan_scores_are_never_hits_and_ties_go_to_the_lower_id() -> None:
    scores = torch.tensor([
        [0.0, 1.0, 1.0, 1.0, 1.0],            # all tied: target 2 is behind item 1 only
        [0.0, float("nan"), 2.0, 1.0, 0.5],   # NaN target: a miss
        [0.0, 3.0, float("nan"), 1.0, 2.0],   # NaN candidate never ahead: target 4 ranks behind item 1 only
        [9.0, 1.0, 2.0, 3.0, 4.0],            # the pad column never ranks
        [0.0, 2.0, 1.0, 2.0, 2.0],            # target 3 ties with 1 (ahead) and 4 (behind)
        [0.0, 1.0, float("inf"), 0.0, 0.0],   # an infinite target score: a miss too
    ])
    ranks = target_ranks(scores, torch.tensor([2, 1, 4, 4, 3, 2]))
    assert ranks.tolist() == [1.0, math.inf, 1.0, 0.0, 1.0, math.inf]
    metrics = rank_metrics(ranks, ks=(10,))
    assert metrics["hr_at_10"].tolist() == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0]
    assert metrics["ndcg_at_10"][1] == 0.0 and metrics["mrr"][1] == 0.0


def test_mrr_at_k_is_truncated_at_k_as_recbole_defines_it() -> None:
    """MRR@k counts 1/(rank+1) only inside the top k; plain MRR counts every finite rank."""
    ranks = np.array([0.0, 2.0, 9.0, 10.0, 40.0, math.inf])
    metrics = rank_metrics(ranks, ks=(3, 10))
    np.testing.assert_allclose(metrics["mrr_at_3"], [1.0, 1 / 3, 0.0, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(metrics["mrr_at_10"], [1.0, 1 / 3, 1 / 10, 0.0, 0.0, 0.0])
    np.testing.assert_allclose(metrics["mrr"], [1.0, 1 / 3, 1 / 10, 1 / 11, 1 / 41, 0.0])


def test_a_constant_scorer_ranks_each_target_at_its_catalogue_position() -> None:
    """Everything tied (a collapsed model): neither HR 1 (ties for the target) nor HR 0 (ties
    against it), but the list a stable sort serves: item 1, 2, ..., V-1."""
    table = interactions(seed=3)
    split = leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2]), 4)
    result = evaluate_next_item(TableScorer(np.zeros((V, V))), split.test, ks=(1, 3))
    np.testing.assert_array_equal(result.ranks, split.test.target - 1.0)
    assert result.metrics["hr_at_3"] == pytest.approx(np.mean(split.test.target <= 3))
    assert 0.0 < result.metrics["hr_at_3"] < 1.0
    seen = evaluate_next_item(TableScorer(np.zeros((V, V))), split.test, ks=(1,), exclude_seen=True)
    for row in range(split.test.num_rows):          # only unseen lower ids are ahead
        lower = set(range(1, int(split.test.target[row]))) - set(split.test.seen().row(row).tolist())
        assert seen.ranks[row] == len(lower)


def test_exclusions_remove_items_but_never_the_target() -> None:
    scores = torch.tensor([[0.0, 5.0, 4.0, 3.0, 2.0]])
    exclude = IdLists.from_lists([[1, 2, 3]])              # 3 is the target itself: it still counts
    assert target_ranks(scores, torch.tensor([3]), exclude).tolist() == [0.0]
    assert target_ranks(scores, torch.tensor([3])).tolist() == [2.0]


def test_sampled_protocol_ranks_among_the_drawn_negatives_only() -> None:
    table = interactions(seed=4)
    split = leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2]), 4)
    scores = np.random.default_rng(2).integers(0, 3, size=(V, V)).astype(np.float64)     # many ties
    negatives = sample_negatives(split.test, V, 5, seed=0)
    result = evaluate_sampled(TableScorer(scores), split.test, negatives, ks=(1, 3))
    last = split.test.history[:, -1]
    for row in range(split.test.num_rows):
        s, target = scores[last[row]], int(split.test.target[row])
        listed = np.sort(np.r_[negatives[row], target])             # the row's items, id order
        served = listed[np.argsort(-s[listed], kind="stable")]
        assert result.ranks[row] == float(np.flatnonzero(served == target)[0])
    assert result.protocol == "sampled_5"
    ids = torch.tensor([[4, 2, 7]])
    assert sampled_ranks(torch.tensor([[1.0, 1.0, 1.0]]), ids).tolist() == [1.0]    # only id 2 is ahead
    assert sampled_ranks(torch.tensor([[float("nan"), 1.0, 0.0]]), ids).tolist() == [math.inf]
    assert sampled_ranks(torch.tensor([[0.0, float("nan"), 0.0]]), ids).tolist() == [0.0]


def test_a_scorer_in_training_mode_is_evaluated_in_eval_mode_and_restored() -> None:
    from recstack.layers.sequence import GRU4RecEncoder
    from recstack.models.sequential import SequentialRetrieval

    table = interactions(seed=5)
    split = leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2]), 4)
    model = SequentialRetrieval(GRU4RecEncoder(V, 4, dropout=0.5))
    model.train()
    first = evaluate_next_item(model, split.test).ranks
    assert model.training
    np.testing.assert_array_equal(first, evaluate_next_item(model, split.test).ranks)   # no dropout noise
