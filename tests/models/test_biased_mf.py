"""BiasedMF: the formula, the regularised loss and the id checks, against numpy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.models.biased_mf import BiasedMF
from recstack.models.rating_data import RatingIndex, RatingMatrix

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny matmuls


RATINGS = pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u2", "u3", "u3"],
    "movie_id": ["a", "b", "a", "c", "b", "c"],
    "user_rating": [5.0, 1.0, 4.0, 2.0, 3.0, 5.0],
})


def weights(model: BiasedMF) -> tuple[np.ndarray, ...]:
    return tuple(e.weight.detach().double().numpy() for e in
                 (model.user_factors, model.item_factors, model.user_bias, model.item_bias))


def make(**kw) -> BiasedMF:
    torch.manual_seed(0)
    model = BiasedMF(3, 4, embedding_dim=2, global_mean=3.0, init_std=1.0, **kw)
    with torch.no_grad():  # non-zero biases so every term of the formula is exercised
        model.user_bias.weight.copy_(torch.tensor([[0.5], [-0.25], [1.0]]))
        model.item_bias.weight.copy_(torch.tensor([[-1.0], [0.125], [0.75], [0.0]]))
    return model


def test_prediction_is_mu_plus_biases_plus_dot() -> None:
    model = make()
    p, q, bu, bi = weights(model)
    users, items = np.array([0, 2, 1, 2]), np.array([3, 0, 1, 1])
    expected = 3.0 + bu[users, 0] + bi[items, 0] + (p[users] * q[items]).sum(1)
    np.testing.assert_allclose(model.predict_indices(users, items, clip=False).numpy(), expected, rtol=1e-6)
    # rating_range=None: nothing is clipped even where the prediction leaves [1, 5].
    np.testing.assert_allclose(model.predict_indices(users, items).numpy(), expected, rtol=1e-6)


def test_training_loss_adds_per_rating_l2_and_evaluation_clips() -> None:
    model = make(l2=0.1, bias_l2=0.01, rating_range=(1.0, 5.0))
    p, q, bu, bi = weights(model)
    u, i, r = np.array([0, 1, 2]), np.array([0, 2, 1]), np.array([5.0, 2.0, 3.0])
    pred = 3.0 + bu[u, 0] + bi[i, 0] + (p[u] * q[i]).sum(1)
    penalty = 0.1 * ((p[u] ** 2).sum(1) + (q[i] ** 2).sum(1)) + 0.01 * (bu[u, 0] ** 2 + bi[i, 0] ** 2)
    batch = {"user": torch.tensor(u), "item": torch.tensor(i), "rating": torch.tensor(r, dtype=torch.float32)}
    train_loss = model.compute_loss(batch, training=True)
    assert float(train_loss.detach()) == pytest.approx(np.mean((pred - r) ** 2 + penalty), rel=1e-5)
    out = model.evaluate(batch)
    clipped = np.clip(pred, 1.0, 5.0)
    assert out["loss"] == pytest.approx(np.mean((clipped - r) ** 2), rel=1e-5)
    assert out["root_mean_squared_error"] == pytest.approx(math.sqrt(np.mean((clipped - r) ** 2)), rel=1e-5)


def test_from_matrix_and_raw_id_prediction() -> None:
    index = RatingIndex.from_frame(RATINGS)
    model = BiasedMF.from_matrix(RatingMatrix.from_frame(RATINGS, index), embedding_dim=3)
    assert model.global_mean == pytest.approx(RATINGS["user_rating"].mean())
    assert model.rating_range == (1.0, 5.0)
    np.testing.assert_allclose(model.predict(["u2", "u1"], ["c", "a"]),
                               model.predict_indices([1, 0], [2, 0]).numpy())
    with pytest.raises(DataError, match="unknown item id.*'zz'"):
        model.predict(["u1"], ["zz"])
    with pytest.raises(DataError, match="user index 3 is out of range"):
        model.predict_indices([3], [0])
    with pytest.raises(ConfigError, match="RatingIndex"):
        make().predict(["u1"], ["a"])


def test_fit_beats_the_global_mean_on_low_rank_data() -> None:
    gen = np.random.default_rng(0)
    p, q = gen.normal(size=(40, 2)), gen.normal(size=(30, 2))
    users, items = np.divmod(np.arange(40 * 30), 30)
    ratings = 3.0 + (p[users] * q[items]).sum(1)
    perm = gen.permutation(len(users))
    tr, te = perm[:900], perm[900:]
    cols = lambda idx: {"user": torch.tensor(users[idx]), "item": torch.tensor(items[idx]),
                        "rating": torch.tensor(ratings[idx], dtype=torch.float32)}
    torch.manual_seed(0)
    model = BiasedMF(40, 30, embedding_dim=4, global_mean=float(ratings[tr].mean()), l2=1e-4, bias_l2=0.0,
                     init_std=0.1)
    history = model.fit(cols(tr), epochs=30, batch_size=300, seed=0, verbose=False,
                        optimizer=lambda ps: torch.optim.Adam(ps, lr=0.1), validation_data=cols(te))
    baseline = math.sqrt(np.mean((ratings[te] - ratings[tr].mean()) ** 2))
    # Noise-free rank-2 data: a rank-4 model recovers it almost exactly.
    assert history.history["val_root_mean_squared_error"][-1] < 0.1 * baseline


def test_bad_inputs_raise() -> None:
    with pytest.raises(ConfigError):
        BiasedMF(0, 3)
    with pytest.raises(ConfigError):
        BiasedMF(2, 3, l2=-1.0)
    with pytest.raises(ConfigError, match="'rating'"):
        make().compute_loss({"user": torch.tensor([0]), "item": torch.tensor([0])})


@pytest.mark.real_data
def test_real_data_two_epochs_reach_rmse_below_1_1(real_movielens) -> None:
    from recstack.datasets.rating_splits import random_holdout

    ratings = real_movielens.ratings
    index = RatingIndex.from_frame(ratings)
    train, test = random_holdout(ratings, 0.1, seed=0)
    torch.manual_seed(0)
    model = BiasedMF.from_matrix(RatingMatrix.from_frame(train, index))
    history = model.fit(index.pairs(train), epochs=2, batch_size=1024, seed=0, verbose=False,
                        optimizer=lambda ps: torch.optim.Adam(ps, lr=0.003),
                        validation_data=index.pairs(test))
    assert history.history["val_root_mean_squared_error"][-1] < 1.1
