"""Mixed negative sampling: in-batch negatives plus popularity-sampled ones, with the mixture's logQ."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.models.feature_tower import FeatureTower, FeatureTwoTower


def model(sampled: int, remove_hits: bool) -> FeatureTwoTower:
    torch.manual_seed(0)
    m = FeatureTwoTower(FeatureTower(6, 4), FeatureTower(9, 4), torch.arange(1, 9), logq_correction=True,
                        sampled_negatives=sampled, remove_accidental_hits=remove_hits)
    train_items = torch.tensor([1, 1, 1, 2, 2, 3, 4, 5, 5, 8])
    m.set_item_probability(train_items)
    m.set_negative_distribution(train_items, alpha=0.5)
    return m


def reference_loss(m: FeatureTwoTower, batch: dict, extra: torch.Tensor, remove_hits: bool) -> float:
    """TFRS's loss on the expanded candidate list [batch items; sampled items], in float64 numpy."""
    with torch.no_grad():
        q = m.query_tower(batch["user"]).double().numpy()
        ids = torch.cat([batch["item"], extra])
        c = m.candidate_tower(ids).double().numpy()
        counts = np.bincount(np.array([1, 1, 1, 2, 2, 3, 4, 5, 5, 8]), minlength=9).astype(float)
        p_train = counts / counts.sum()
        p_neg = np.where(counts > 0, counts ** 0.5, 0.0)
        p_neg /= p_neg.sum()
    b, k = len(batch["item"]), len(extra)
    logq = np.log(np.clip((b * p_train + k * p_neg) / (b + k), 1e-6, 1.0))[ids.numpy()]
    logits = q @ c.T - logq[None, :]
    ids_np = ids.numpy()
    total = 0.0
    for i in range(b):
        row = logits[i].copy()
        if remove_hits:
            hits = ids_np == ids_np[i]
            hits[i] = False
            row[hits] = -np.inf
        total += np.log(np.exp(row - row.max()).sum()) + row.max() - row[i]
    return total


@pytest.mark.parametrize("remove_hits", [False, True])
def test_sampled_negatives_loss_matches_the_expanded_reference(remove_hits):
    m = model(sampled=5, remove_hits=remove_hits)
    batch = {"user": torch.tensor([1, 2, 3, 4, 5, 1]), "item": torch.tensor([1, 2, 1, 3, 5, 8]),
             "query_key": torch.tensor([1, 2, 3, 4, 5, 1])}
    torch.manual_seed(11)
    loss = float(m.compute_loss(batch, training=True).detach())
    torch.manual_seed(11)
    extra = torch.multinomial(m.negative_probability, 5, replacement=True)   # the draws compute_loss made
    assert loss == pytest.approx(reference_loss(m, batch, extra, remove_hits), rel=1e-5)


def test_negative_distribution_never_samples_unknown_or_unseen_items():
    m = model(sampled=3, remove_hits=False)
    p = m.negative_probability
    assert float(p[0]) == 0 and float(p[6]) == 0 and float(p[7]) == 0
    assert float(p.sum()) == pytest.approx(1.0)
    assert float(p[1]) / float(p[3]) == pytest.approx(3 ** 0.5)     # count^alpha, alpha = 0.5


def test_recstack_train_with_sampled_negatives(workdir, write_config):
    import json

    from recstack.cli.main import main

    path = write_config({"tasks": {"retrieval": {"sampled_negatives": 16, "sampled_negatives_alpha": 0.75,
                                                 "logq_correction": True}}})
    assert main(["train", str(path), "--run-dir", str(workdir / "run"), "--progress", "quiet"]) == 0
    metrics = json.loads((workdir / "run" / "metrics.json").read_text())
    assert 0 <= metrics["protocols"]["all-items"]["factorized_top_k/top_10_categorical_accuracy"] <= 1
    state = torch.load(workdir / "run" / "model.pt", weights_only=True)
    assert float(state["negative_probability"].sum()) == pytest.approx(1.0)
