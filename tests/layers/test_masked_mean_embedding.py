"""QueryTower / CandidateTower shapes, masked text mean, and the MovieLens feature module."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, ShapeError
from recstack.models.movielens_features import fit_movielens_features
from recstack.models.towers import CandidateTower, MaskedMeanEmbedding, QueryTower


def query_batch(b: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"user_id": torch.randint(0, 10, (b,), generator=g),
            "timestamp_bucket": torch.randint(0, 21, (b,), generator=g),
            "timestamp_norm": torch.randn(b, generator=g)}


def candidate_batch(b: int = 5, length: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 30, (b, length), generator=g)
    tokens[0, 2:] = 0  # a shorter title, right-padded
    return {"title_id": torch.randint(0, 12, (b,), generator=g), "title_tokens": tokens}


@pytest.mark.parametrize("layer_sizes", [[32], [64, 32], [128, 64, 32]])
def test_tower_output_shapes(layer_sizes: list[int]) -> None:
    q = QueryTower(10, layer_sizes, embedding_dim=8, num_timestamp_buckets=21)
    c = CandidateTower(12, layer_sizes, embedding_dim=8, num_tokens=30)
    assert q(query_batch()).shape == (5, layer_sizes[-1])
    assert c(candidate_batch()).shape == (5, layer_sizes[-1])
    # ReLU on all hidden layers, none on the last (the tutorial's structure).
    dense = list(q.dense_layers)
    assert all(isinstance(layer.act, torch.nn.ReLU) for layer in dense[:-1])
    assert isinstance(dense[-1].act, torch.nn.Identity)
    assert dense[0].in_features == 8 + 8 + 1 and list(c.dense_layers)[0].in_features == 16


def test_towers_without_layers_or_side_features() -> None:
    q = QueryTower(10, [], embedding_dim=8, num_timestamp_buckets=21)
    assert q(query_batch()).shape == (5, 17)
    q_ids = QueryTower(10, None, embedding_dim=8, use_timestamp=False)
    assert q_ids({"user_id": torch.tensor([1, 2])}).shape == (2, 8)
    c_ids = CandidateTower(12, [4], embedding_dim=8, use_text=False)
    assert c_ids({"title_id": torch.tensor([3])}).shape == (1, 4)


def test_query_features_are_the_concatenation() -> None:
    q = QueryTower(10, [4], embedding_dim=3, num_timestamp_buckets=21)
    batch = query_batch()
    expected = torch.cat([q.user_embedding.weight[batch["user_id"]],
                          q.timestamp_embedding.weight[batch["timestamp_bucket"]],
                          batch["timestamp_norm"][:, None]], dim=1)
    torch.testing.assert_close(q.features(batch), expected)


def test_masked_mean_matches_numpy_and_ignores_padding() -> None:
    torch.manual_seed(0)
    layer = MaskedMeanEmbedding(30, 6)
    tokens = candidate_batch()["title_tokens"]
    table = layer.embedding.weight.detach().numpy()
    expected = np.stack([table[[t for t in row if t != 0]].mean(axis=0) for row in tokens.tolist()])
    out = layer(tokens)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-7)
    padded = torch.cat([tokens, torch.zeros(tokens.shape[0], 7, dtype=torch.long)], dim=1)
    torch.testing.assert_close(layer(padded), out)
    # Changing the padding row's embedding changes nothing either.
    with torch.no_grad():
        layer.embedding.weight[0] = 100.0
    torch.testing.assert_close(layer(padded), out)


def test_masked_mean_all_padding_row_is_zero_and_padding_gets_no_gradient() -> None:
    layer = MaskedMeanEmbedding(5, 3)
    out = layer(torch.tensor([[0, 0], [2, 0]]))
    assert torch.equal(out[0], torch.zeros(3))
    out.sum().backward()
    assert torch.equal(layer.embedding.weight.grad[0], torch.zeros(3))


def test_tower_errors() -> None:
    with pytest.raises(ConfigError, match="num_timestamp_buckets"):
        QueryTower(10, [4])
    with pytest.raises(ConfigError, match="num_tokens"):
        CandidateTower(10, [4])
    with pytest.raises(ShapeError, match="timestamp_bucket"):
        QueryTower(10, [4], num_timestamp_buckets=3)({"user_id": torch.tensor([1])})
    with pytest.raises(ShapeError, match="batch, length"):
        MaskedMeanEmbedding(5, 2)(torch.tensor([1, 2]))


def test_movielens_features_on_a_tiny_table() -> None:
    ratings = pd.DataFrame({
        "user_id": ["3", "1", "2", "1"], "movie_title": ["B (1990)", "A (1995)", "A (1995)", "C, The (1990)"],
        "timestamp": np.array([100, 300, 200, 400], dtype=np.int64),
        "user_rating": np.array([4.0, 3.0, 5.0, 1.0], dtype=np.float32)})
    movies = pd.DataFrame({"movie_title": ["A (1995)", "B (1990)", "C, The (1990)", "A (1995)"]})
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ascending boundaries: no "not sorted" warning
        f = fit_movielens_features(ratings, movies, num_timestamp_boundaries=4)
    assert f.tower_sizes() == {"num_users": 4, "num_timestamp_buckets": 5, "num_titles": 4,
                               "num_tokens": 2 + 6}  # padding, OOV + {a, b, c, the, 1990, 1995}
    cols = f.encode_ratings(ratings)
    assert cols["user_id"].tolist() == [3, 1, 2, 1]
    # Boundaries linspace(100, 400, 4) = 100, 200, 300, 400; searchsorted right.
    assert cols["timestamp_bucket"].tolist() == [1, 3, 2, 4]
    ts = ratings["timestamp"].to_numpy(float)
    np.testing.assert_allclose(cols["timestamp_norm"].numpy(), (ts - ts.mean()) / ts.std(), rtol=1e-6)
    assert cols["user_rating"].dtype == torch.float32
    catalogue = f.encode_movies(movies)
    ids = catalogue["title_id"].tolist()
    assert ids[0] == ids[3] and len(set(ids)) == 3  # duplicated titles share an id
    assert catalogue["title_tokens"].shape[0] == 4


def test_presets_build_train_and_logq_column() -> None:
    from recstack.models.presets import (add_sampling_probability, best_retrieval_config, build_and_train,
                                         split_config, tutorial_retrieval_config)

    ratings = pd.DataFrame({
        "user_id": ["1", "2", "3", "1", "2", "3"], "timestamp": np.arange(6, dtype=np.int64) * 10,
        "movie_title": ["A (1990)", "A (1990)", "B (1991)", "C (1992)", "B (1991)", "A (1990)"],
        "user_rating": np.ones(6, dtype=np.float32)})
    movies = pd.DataFrame({"movie_title": ["A (1990)", "B (1991)", "C (1992)"]})
    f = fit_movielens_features(ratings, movies, num_timestamp_boundaries=5)
    train, catalogue = f.encode_ratings(ratings), f.encode_movies(movies)
    probs = add_sampling_probability(train, f.num_titles)["title_sampling_probability"]
    counts = ratings["movie_title"].map(ratings["movie_title"].value_counts()).to_numpy()
    np.testing.assert_allclose(probs.numpy(), counts / 6)
    for config in (tutorial_retrieval_config([8, 4]), best_retrieval_config()):
        model, history = build_and_train({**config, "epochs": 2, "batch_size": 4}, f, train, catalogue,
                                          validation_data=train)
        assert len(history) == 2 and np.isfinite(history.history["loss"]).all()
        assert "val_factorized_top_k/top_1_categorical_accuracy" in history.history
    with pytest.raises(ConfigError, match="unknown retrieval config keys"):
        split_config({"layer_size": [3]})
