"""Per-user top-k metrics as RecBole defines them (recbole/evaluator/metrics.py), against numpy.

The reference ranks each user's unmasked catalogue with a stable descending sort (ties in item-id
order, the tie rule of docs/architecture.md) and applies the definitions to the top-k list:
recall = |top-k ∩ P| / |P|, precision = |top-k ∩ P| / k, hit = [|top-k ∩ P| > 0],
MRR@k = 1 / (1 + first position of a positive) if it is < k else 0,
NDCG@k = sum_{positions i < k holding a positive} 1/log2(i + 2) / sum_{i < min(|P|, k)} 1/log2(i + 2).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.metrics import FactorizedTopK

# 5 users x 8 items, integer scores with many ties.
SCORES = np.array([
    [3, 1, 3, 0, 2, 2, 1, 0],
    [0, 0, 0, 0, 0, 0, 0, 0],     # a constant scorer: the list is item-id order
    [1, 2, 2, 2, 1, 0, 3, 3],
    [5, 4, 3, 2, 1, 0, -1, -2],
    [2, 2, 1, 1, 0, 0, 2, 1],
], dtype=np.float64)
POSITIVES = {0: [2, 5, 7], 1: [6], 2: [0, 3], 3: [7, 6, 5, 4], 4: [1]}
SEEN = {0: [0], 1: [0, 1, 2], 2: [6], 3: [], 4: [0, 6]}


def reference(k: int) -> dict[str, float]:
    per_user = {m: [] for m in ("recall", "precision", "hit", "mrr", "ndcg")}
    for u, positives in POSITIVES.items():
        keep = np.array([i for i in range(SCORES.shape[1]) if i not in SEEN[u]])
        order = keep[np.argsort(-SCORES[u, keep], kind="stable")]
        top = order[:k]
        rel = np.isin(top, positives)
        found = rel.sum()
        per_user["recall"].append(found / len(positives))
        per_user["precision"].append(found / k)
        per_user["hit"].append(float(found > 0))
        per_user["mrr"].append(1.0 / (np.flatnonzero(rel)[0] + 1) if found else 0.0)
        dcg = (rel / np.log2(np.arange(len(top)) + 2)).sum()
        idcg = (1.0 / np.log2(np.arange(min(len(positives), k)) + 2)).sum()
        per_user["ndcg"].append(dcg / idcg)
    return {m: float(np.mean(v)) for m, v in per_user.items()}


def metric_result(ks: tuple[int, ...]) -> dict[str, float]:
    num_items = SCORES.shape[1]
    # One-hot candidates make every inner product exactly the score: q_u . e_i = SCORES[u, i].
    candidates = torch.eye(num_items, dtype=torch.float64)
    pairs = [(u, i) for u, items in SEEN.items() for i in items]
    exclude = Exclusions.from_pairs(torch.tensor([u for u, _ in pairs]), torch.tensor([i for _, i in pairs]),
                                    num_keys=len(SCORES))
    users = torch.tensor([u for u, items in POSITIVES.items() for _ in items])
    items = torch.tensor([i for items in POSITIVES.values() for i in items])
    metric = FactorizedTopK(candidates, ks=ks, exclude=exclude)
    queries = torch.tensor(SCORES)[users]
    metric.update_state(queries, candidates[items], true_candidate_ids=items, query_keys=users)
    return metric.result()


@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_per_user_metrics_match_the_definitions(k: int) -> None:
    result = metric_result((1, 2, 3, 5))
    expected = reference(k)
    name = "factorized_top_k"
    assert result[f"{name}/recall_at_{k}"] == pytest.approx(expected["recall"], abs=1e-12)
    assert result[f"{name}/precision_at_{k}"] == pytest.approx(expected["precision"], abs=1e-12)
    assert result[f"{name}/hit_at_{k}"] == pytest.approx(expected["hit"], abs=1e-12)
    assert result[f"{name}/mrr_at_{k}"] == pytest.approx(expected["mrr"], abs=1e-12)
    assert result[f"{name}/ndcg_at_{k}"] == pytest.approx(expected["ndcg"], abs=1e-12)


def test_untruncated_mrr_key_is_kept() -> None:
    result = metric_result((1,))
    # The untruncated MRR equals MRR@k for k at least the catalogue size.
    assert result["factorized_top_k/mrr"] == pytest.approx(reference(SCORES.shape[1])["mrr"], abs=1e-12)
    assert result["factorized_top_k/mrr"] > result["factorized_top_k/mrr_at_1"]
