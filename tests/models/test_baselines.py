"""Popularity and EASE: closed forms vs. numpy, ranks vs. hand counts, real-data smoke test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

import recstack
from recstack.core.errors import ConfigError, NotFittedError
from recstack.models.baselines import EASE, Popularity, ease_weights, evaluate_retrieval

# Tiny interactions: 4 users, 5 items (item 0 unused, like an OOV id).
TRAIN = {"user_id": torch.tensor([0, 0, 1, 1, 1, 2, 3, 3, 2]),
         "title_id": torch.tensor([1, 2, 1, 3, 4, 1, 2, 4, 3])}
TEST = {"user_id": torch.tensor([0, 0, 1, 2, 3]), "title_id": torch.tensor([3, 4, 2, 4, 1])}
CATALOGUE = torch.tensor([1, 2, 3, 4, 4])  # item 4 listed twice


def numpy_ranks(scores: np.ndarray, users: np.ndarray, positives: np.ndarray, catalogue: np.ndarray,
                excluded: dict[int, set[int]] | None = None) -> np.ndarray:
    """#catalogue rows scoring strictly above the positive, masking the positive's id (and exclusions)."""
    ranks = []
    for u, p in zip(users, positives):
        row = scores[u][catalogue]
        mask = catalogue == p
        if excluded:
            mask |= np.isin(catalogue, list(excluded.get(u, set()) - {p}))
        first = int(np.argmax(catalogue == p)) if (catalogue == p).any() else len(catalogue)
        above = (row > scores[u][p]) | ((row == scores[u][p]) & (np.arange(len(catalogue)) < first))
        ranks.append(int(above[~mask].sum()))
    return np.array(ranks)


def test_ease_weights_equal_a_direct_numpy_solve() -> None:
    rng = np.random.default_rng(0)
    X = (rng.random((7, 5)) < 0.4).astype(float)
    lam = 2.5
    P = np.linalg.inv(X.T @ X + lam * np.eye(5))
    expected = np.eye(5) - P / np.diag(P)[None, :]
    B = ease_weights(torch.from_numpy(X), lam).numpy()
    np.testing.assert_allclose(B, expected, atol=1e-12)
    np.testing.assert_allclose(np.diag(B), 0.0, atol=1e-12)
    # Also the constrained least-squares optimum: column j solves the ridge regression of
    # X[:, j] on the other columns, min ||X_j - X_{-j} b||^2 + lam ||b||^2.
    for j in range(5):
        others = [k for k in range(5) if k != j]
        A = X[:, others]
        b = np.linalg.solve(A.T @ A + lam * np.eye(4), A.T @ X[:, j])
        np.testing.assert_allclose(B[others, j], b, atol=1e-10)


def test_ease_scores_and_ranks_match_numpy() -> None:
    model = EASE(5, 4, l2=1.0, candidate_ids=CATALOGUE)
    model.fit(TRAIN)
    X = np.zeros((4, 5))
    X[TRAIN["user_id"].numpy(), TRAIN["title_id"].numpy()] = 1.0
    P = np.linalg.inv(X.T @ X + np.eye(5))
    B = np.eye(5) - P / np.diag(P)[None, :]
    S = X @ B
    np.testing.assert_allclose(model.scores(torch.arange(4)).numpy(), S[:, CATALOGUE.numpy()], atol=1e-12)
    ranks = numpy_ranks(S, TEST["user_id"].numpy(), TEST["title_id"].numpy(), CATALOGUE.numpy())
    result = model.evaluate(TEST)
    for k in (1, 5):
        assert result[f"factorized_top_k/top_{k}_categorical_accuracy"] == pytest.approx(np.mean(ranks < k))


def test_popularity_scores_and_exclude_seen() -> None:
    model = Popularity(5, candidate_ids=CATALOGUE, tie_break=False)
    model.fit(TRAIN)
    counts = np.bincount(TRAIN["title_id"].numpy(), minlength=5).astype(float)  # [0, 3, 2, 2, 2]
    np.testing.assert_array_equal(model.scores(torch.tensor([0, 3]))[0].numpy(), counts[CATALOGUE.numpy()])
    seen: dict[int, set[int]] = {}
    for u, i in zip(TRAIN["user_id"].tolist(), TRAIN["title_id"].tolist()):
        seen.setdefault(u, set()).add(i)
    S = np.tile(counts, (4, 1))
    users, positives = TEST["user_id"].numpy(), TEST["title_id"].numpy()
    plain = numpy_ranks(S, users, positives, CATALOGUE.numpy())
    masked = numpy_ranks(S, users, positives, CATALOGUE.numpy(), seen)
    exclude = recstack.Exclusions.from_pairs(TRAIN["user_id"], TRAIN["title_id"], num_keys=4)
    got_plain = evaluate_retrieval(model, TEST, model.catalogue_embeddings(), CATALOGUE, ks=(1, 2))
    got_masked = evaluate_retrieval(model, TEST, model.catalogue_embeddings(), CATALOGUE, ks=(1, 2),
                                    exclude=exclude)
    for k in (1, 2):
        key = f"factorized_top_k/top_{k}_categorical_accuracy"
        assert got_plain[key] == pytest.approx(np.mean(plain < k))
        assert got_masked[key] == pytest.approx(np.mean(masked < k))
    assert not np.array_equal(plain, masked)  # the protocol matters on this data


def test_popularity_tie_break_orders_equal_counts_by_id() -> None:
    model = Popularity(5, candidate_ids=CATALOGUE)
    model.fit(TRAIN)
    scores = model.item_scores().numpy()
    assert list(np.argsort(-scores)) == [1, 2, 3, 4, 0]  # 3 > 2 = 2 = 2 (ids ascending) > 0
    assert np.all(np.floor(scores) == np.bincount(TRAIN["title_id"].numpy(), minlength=5))


def test_baseline_errors() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        Popularity(5).evaluate(TEST)
    with pytest.raises(ConfigError, match="l2 > 0"):
        ease_weights(torch.eye(3), 0.0)
    with pytest.raises(ConfigError, match="query_key"):
        Popularity(5, exclude=recstack.Exclusions.from_pairs(torch.tensor([0]), torch.tensor([1])), query_key=None)


REAL = os.environ.get("RECSTACK_DATA_DIR")


@pytest.mark.real_data
def test_real_movielens_smoke(tmp_path, one_thread) -> None:
    """``recstack train popularity`` on the real MovieLens 100K (basic-retrieval's data and random
    80/20 split): all-items top-100 accuracy near the tutorial protocol's popularity reference, ~0.29."""
    if not REAL or not (Path(REAL) / "u.data").is_file():
        pytest.skip("set RECSTACK_DATA_DIR to an ml-100k directory to run real-data tests")
    from recstack.cli.main import main

    run = tmp_path / "run"
    assert main(["train", "popularity", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "output.plots=false"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test_rows"] == 20_000
    top100 = metrics["protocols"]["all-items"]["factorized_top_k/top_100_categorical_accuracy"]
    assert 0.27 < top100 < 0.32
