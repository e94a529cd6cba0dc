"""Item-KNN: similarities, pruning and scores vs. numpy written from RecBole's formula; the kind's params."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError, NotFittedError
from recstack.core.id_lists import IdLists
from recstack.experiment.config import parse_config
from recstack.experiment.itemknn_kind import itemknn_history_query
from recstack.models.itemknn import EPSILON, ItemKNN, cosine_similarity, itemknn_neighbours, keep_top_k

# 6 users x 7 items; item 0 is unused (the OOV id), items 1 and 2 have identical columns (ties),
# item 6 is seen once.
PAIRS = [(0, 1), (0, 2), (0, 3), (1, 1), (1, 2), (1, 4), (2, 3), (2, 4), (2, 5), (3, 1), (3, 2), (3, 5),
         (4, 3), (4, 4), (4, 6), (5, 5), (5, 3), (5, 3)]   # (5, 3) twice: counts once
USERS = torch.tensor([u for u, _ in PAIRS])
ITEMS = torch.tensor([i for _, i in PAIRS])
V, U = 7, 6


def binary_matrix() -> np.ndarray:
    X = np.zeros((U, V))
    for u, i in PAIRS:
        X[u, i] = 1.0
    return X


def numpy_weights(X: np.ndarray, k: int, shrink: float) -> np.ndarray:
    """RecBole's W [V, V]: column j keeps j's k most similar items i (ties: lower i first), W_jj = 0."""
    n = X.shape[1]
    W = np.zeros((n, n))
    for j in range(n):
        sims = []
        for i in range(n):
            if i == j:
                continue
            dot = float(X[:, i] @ X[:, j])
            sims.append((dot / (np.linalg.norm(X[:, i]) * np.linalg.norm(X[:, j]) + shrink + EPSILON), i))
        for value, i in sorted(sims, key=lambda t: (-t[0], t[1]))[:k]:
            W[i, j] = value
    return W


@pytest.mark.parametrize("k,shrink", [(100, 0.0), (2, 0.0), (2, 1.5), (1, 0.5), (3, 10.0)])
def test_scores_equal_numpy_from_the_formula(k: int, shrink: float) -> None:
    model = ItemKNN(V, U, k=k, shrink=shrink)
    model.fit({"user_id": USERS, "title_id": ITEMS})
    X = binary_matrix()
    W = numpy_weights(X, k, shrink)
    np.testing.assert_allclose(model.N.numpy(), W.T, atol=1e-12)           # N = Wᵀ: row j = j's neighbours
    np.testing.assert_allclose(model.scores(torch.arange(U)).numpy(), X @ W, atol=1e-12)
    np.testing.assert_array_equal(model.X.numpy(), X)


def test_similarity_is_the_shrunk_cosine_with_a_zero_diagonal() -> None:
    X = binary_matrix()
    S = cosine_similarity(torch.from_numpy(X), shrink=2.0).numpy()
    norms = np.linalg.norm(X, axis=0)
    expected = (X.T @ X) / (np.outer(norms, norms) + 2.0 + EPSILON)
    np.fill_diagonal(expected, 0.0)
    np.testing.assert_allclose(S, expected, atol=1e-12)
    assert np.all(S[0] == 0) and np.all(S[:, 0] == 0)                     # an item without interactions


def test_top_k_keeps_k_per_row_without_the_diagonal_and_ties_keep_lower_ids() -> None:
    S = cosine_similarity(torch.from_numpy(binary_matrix())).numpy()
    assert S[3, 4] == S[3, 5] == S[3].max() > 0                            # item 3: two nearest, tied
    assert S[5, 1] == S[5, 2] == S[5, 4] < S[5, 3]                         # item 5: three tied second-nearest
    N = keep_top_k(torch.from_numpy(S), 1).numpy()
    assert np.all(np.diag(N) == 0)
    assert N[3, 4] == S[3, 4] and N[3, 5] == 0                              # the tie goes to the lower id
    assert N[1, 2] == S[1, 2] == pytest.approx(1.0, abs=1e-6)              # item 1's nearest: its twin
    two = keep_top_k(torch.from_numpy(S), 2).numpy()
    assert set(np.flatnonzero(two[5])) == {3, 1}                            # 3, then the lowest of 1, 2, 4
    assert np.all((N != 0).sum(axis=1)[1:] == 1)
    # A constant row: every off-diagonal entry ties; the k lowest ids survive.
    flat = keep_top_k(torch.ones(5, 5, dtype=torch.float64), 2)
    np.testing.assert_array_equal((flat != 0).numpy(), [[0, 1, 1, 0, 0], [1, 0, 1, 0, 0], [1, 1, 0, 0, 0],
                                                         [1, 1, 0, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(itemknn_neighbours(torch.from_numpy(binary_matrix()), k=100).numpy(), S)


def test_history_query_of_a_users_own_row_scores_like_the_user() -> None:
    model = ItemKNN(V, U, k=2, shrink=0.5)
    model.fit({"user_id": USERS, "title_id": ITEMS})
    seen = [sorted({i for u, i in PAIRS if u == user}) for user in range(U)]
    histories = IdLists.from_lists(seen)
    query = itemknn_history_query(model, histories)
    torch.testing.assert_close(query @ model.item_embeddings(torch.arange(V)).T, model.scores(torch.arange(U)))


def test_unknown_users_score_zero_and_an_unfitted_model_says_fit() -> None:
    with pytest.raises(NotFittedError, match="fit"):
        ItemKNN(V, U).catalogue_embeddings()
    model = ItemKNN(V, U)
    model.fit({"user_id": USERS, "title_id": ITEMS})
    assert torch.all(model.scores(torch.tensor([U, -1])) == 0)


def model_errors(model: dict) -> str:
    raw = {"name": "t", "data": {"interactions": "ratings.csv", "columns": {"user": "u", "item": "i"}},
           "model": model}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="cfg.yaml")
    return str(info.value)


def test_param_validation_names_the_key() -> None:
    message = model_errors({"kind": "itemknn", "k": 0, "shrink": -1.0})
    assert "model.k: must be >= 1" in message and "model.shrink: must be >= 0" in message
    assert "model.k: expected an integer" in model_errors({"kind": "itemknn", "k": 2.5})
    assert "model.neighbours: unknown key" in model_errors({"kind": "itemknn", "neighbours": 5})
    with pytest.raises(ConfigError, match="k >= 1"):
        ItemKNN(V, U, k=0)
    with pytest.raises(ConfigError, match="shrink >= 0"):
        ItemKNN(V, U, shrink=-0.1)
