"""AutoRec and its rating-matrix plumbing, checked against plain-numpy computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.models.autorec import AutoRec
from recstack.models.rating_data import RatingIndex, RatingMatrix, row_columns

# 3 users x 4 items, 7 observed ratings; item "d" is rated by nobody in TRAIN below.
RATINGS = pd.DataFrame({
    "user_id": ["u1", "u1", "u2", "u2", "u2", "u3", "u3", "u3"],
    "movie_id": ["a", "c", "a", "b", "c", "b", "c", "d"],
    "user_rating": [5.0, 3.0, 4.0, 2.0, 1.0, 4.0, 5.0, 3.0],
})
TRAIN = RATINGS.iloc[:7]  # without (u3, d)


def dense(df: pd.DataFrame, users: list[str], items: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Reference [num_users, num_items] ratings and mask, filled cell by cell."""
    r = np.zeros((len(users), len(items)), dtype=np.float64)
    m = np.zeros_like(r, dtype=bool)
    for u, i, v in zip(df["user_id"], df["movie_id"], df["user_rating"]):
        r[users.index(u), items.index(i)] = v
        m[users.index(u), items.index(i)] = True
    return r, m


def numpy_forward(model: AutoRec, x: np.ndarray) -> np.ndarray:
    """sigmoid(x W1^T + b1) ... then the linear decoder, from the model's weights."""
    h = x
    for layer in model.encoder:
        if hasattr(layer, "weight"):
            h = 1.0 / (1.0 + np.exp(-(h @ layer.weight.detach().double().numpy().T
                                      + layer.bias.detach().double().numpy())))
    dec = model.decoder
    return h @ dec.weight.detach().double().numpy().T + dec.bias.detach().double().numpy()


@pytest.fixture
def index() -> RatingIndex:
    return RatingIndex.from_frame(RATINGS)


@pytest.fixture
def matrix(index: RatingIndex) -> RatingMatrix:
    return RatingMatrix.from_frame(TRAIN, index)


def make(matrix: RatingMatrix, **kw) -> AutoRec:
    torch.manual_seed(0)
    kw.setdefault("hidden_sizes", (5,))
    kw.setdefault("dropout", 0.0)
    kw.setdefault("init_std", 0.5)  # large weights: outputs far from 0, so the mask matters
    return AutoRec(matrix, **kw)


# --- rating data ---------------------------------------------------------------------------


def test_matrix_matches_cell_by_cell_reference(matrix: RatingMatrix) -> None:
    users, items = ["u1", "u2", "u3"], ["a", "b", "c", "d"]
    ref_r, ref_m = dense(TRAIN, users, items)
    assert list(matrix.index.user_ids) == users and list(matrix.index.item_ids) == items
    np.testing.assert_array_equal(matrix.ratings.numpy(), ref_r)
    np.testing.assert_array_equal(matrix.observed.numpy(), ref_m)
    assert matrix.num_ratings == 7
    assert matrix.global_mean() == pytest.approx(np.mean(TRAIN["user_rating"]))
    assert matrix.rating_range() == (1.0, 5.0)
    item_major, item_mask = matrix.oriented("item")
    np.testing.assert_array_equal(item_major.numpy(), ref_r.T)
    np.testing.assert_array_equal(item_mask.numpy(), ref_m.T)


def test_pairs_encode_in_row_order(index: RatingIndex) -> None:
    pairs = index.pairs(RATINGS)
    assert pairs["user"].tolist() == [0, 0, 1, 1, 1, 2, 2, 2]
    assert pairs["item"].tolist() == [0, 2, 0, 1, 2, 1, 2, 3]
    assert pairs["rating"].dtype == torch.float32
    assert row_columns(4)["row"].tolist() == [0, 1, 2, 3]


def test_duplicate_pair_unknown_id_and_missing_rating_raise(index: RatingIndex) -> None:
    with pytest.raises(DataError, match="more than once"):
        RatingMatrix.from_frame(pd.concat([TRAIN, TRAIN.iloc[:1]]), index)
    unknown = pd.DataFrame({"user_id": ["u9"], "movie_id": ["a"], "user_rating": [3.0]})
    with pytest.raises(DataError, match="unknown user id.*'u9'"):
        RatingMatrix.from_frame(unknown, index)
    missing = TRAIN.assign(user_rating=[5.0, None, 4.0, 2.0, 1.0, 4.0, 5.0])
    with pytest.raises(DataError, match="missing or non-numeric rating at row position 1"):
        RatingMatrix.from_frame(missing, index)
    with pytest.raises(DataError, match="lacks column"):
        RatingIndex.from_frame(TRAIN, user_col="user")


# --- loss ----------------------------------------------------------------------------------


@pytest.mark.parametrize("based", ["item", "user"])
def test_masked_loss_equals_hand_computation(matrix: RatingMatrix, based: str) -> None:
    model = make(matrix, based=based)
    ref_r, ref_m = dense(TRAIN, ["u1", "u2", "u3"], ["a", "b", "c", "d"])
    x, m = (ref_r.T, ref_m.T) if based == "item" else (ref_r, ref_m)
    rows = [2, 0] if based == "item" else [1, 2]  # a batch of two rows, with missing entries
    recon = numpy_forward(model, x[rows])
    expected = ((recon - x[rows]) ** 2)[m[rows]].sum() / m[rows].sum()
    loss = model.compute_loss({"row": torch.tensor(rows)}, training=True)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    # Not d2l's scale: 0.5 * SSE / (batch * width) differs from the observed-entry mean.
    assert expected != pytest.approx(0.5 * ((recon - x[rows]) ** 2)[m[rows]].sum() / m[rows].size)


def test_unobserved_entries_get_no_gradient(matrix: RatingMatrix) -> None:
    model = make(matrix)
    recon_grad = {}

    def keep_grad(module, inputs, output) -> None:
        output.register_hook(lambda g: recon_grad.setdefault("g", g))

    model.decoder.register_forward_hook(keep_grad)
    model.compute_loss({"row": torch.arange(4)}, training=True).backward()
    observed = model.observed  # [items, users]
    assert torch.all(recon_grad["g"][~observed] == 0)
    assert torch.all(recon_grad["g"][observed] != 0)


def test_l2_penalty_is_reported_as_regularization(matrix: RatingMatrix, index: RatingIndex) -> None:
    model = make(matrix, l2=0.01)
    expected = 0.01 * sum(float((l.weight.detach().double() ** 2).sum()) for l in (model.encoder[0], model.decoder))
    out = model.evaluate(index.pairs(TRAIN))
    assert out["regularization_loss"] == pytest.approx(expected, rel=1e-5)


# --- evaluation and dropout ----------------------------------------------------------------


def test_evaluate_is_d2l_evaluator_with_clipping(matrix: RatingMatrix, index: RatingIndex) -> None:
    model = make(matrix, cold_start="model")
    test = RATINGS.iloc[[1, 3, 7]]
    ref_r, _ = dense(TRAIN, ["u1", "u2", "u3"], ["a", "b", "c", "d"])
    recon = np.clip(numpy_forward(model, ref_r.T), 1.0, 5.0)  # [items, users]
    u, i = index.users(test["user_id"]), index.items(test["movie_id"])
    rmse = math.sqrt(np.mean((recon[i, u] - test["user_rating"].to_numpy()) ** 2))
    out = model.evaluate(index.pairs(test), batch_size=2)
    assert out["root_mean_squared_error"] == pytest.approx(rmse, rel=1e-5)
    np.testing.assert_allclose(model.predict(test["user_id"], test["movie_id"]), recon[i, u], rtol=1e-5)
    assert model.reconstruct().shape == (3, 4)
    np.testing.assert_allclose(model.reconstruct().numpy().T, recon, rtol=1e-5)


def test_unclipped_predictions_leave_the_range(matrix: RatingMatrix) -> None:
    model = make(matrix, init_std=2.0, cold_start="model")
    raw = model.reconstruct(clip=False)
    assert raw.min() < 1.0 or raw.max() > 5.0  # large weights overshoot...
    clipped = model.reconstruct()
    assert clipped.min() >= 1.0 and clipped.max() <= 5.0  # ...and clipping bounds them


def test_dropout_is_off_in_evaluation_and_on_in_training(matrix: RatingMatrix, index: RatingIndex) -> None:
    model = make(matrix, dropout=0.5)
    pairs = index.pairs(TRAIN)
    model.train()
    first, second = model.evaluate(pairs), model.evaluate(pairs)
    assert first == second
    assert model.training  # evaluate restores the mode
    assert torch.equal(model.predict_indices([0, 1], [2, 3]), model.predict_indices([0, 1], [2, 3]))
    x = model.inputs
    out_a, out_b = model(x), model(x)  # train mode: fresh dropout masks
    assert not torch.equal(out_a, out_b)
    model.eval()
    assert torch.equal(model(x), model(x))


# --- shapes --------------------------------------------------------------------------------


@pytest.mark.parametrize("based,rows,width", [("item", 4, 3), ("user", 3, 4)])
def test_item_and_user_based_shapes(matrix: RatingMatrix, based: str, rows: int, width: int) -> None:
    model = make(matrix, based=based, hidden_sizes=(6, 2))
    assert (model.num_rows, model.width) == (rows, width)
    assert model.train_columns().num_rows == rows
    assert model(torch.zeros(7, width)).shape == (7, width)
    assert [l.weight.shape for l in model.modules() if hasattr(l, "weight")] == [
        (6, width), (2, 6), (width, 2)]
    assert model.reconstruct().shape == (3, 4)  # always [num_users, num_items]
    assert model.predict(["u1", "u3"], ["d", "a"]).shape == (2,)


def test_fit_reports_per_epoch_validation_rmse(matrix: RatingMatrix, index: RatingIndex) -> None:
    model = make(matrix, init_std=0.01)
    history = model.fit(model.train_columns(), epochs=3, batch_size=2, seed=1, verbose=False,
                        optimizer=lambda p: torch.optim.Adam(p, lr=0.05),
                        validation_data=index.pairs(RATINGS.iloc[[1, 3]]))
    assert len(history.history["val_root_mean_squared_error"]) == 3
    assert len(history.history["root_mean_squared_error"]) == 3  # observed training entries
    assert history.history["loss"][-1] < history.history["loss"][0]


def test_pairs_cannot_be_training_data(matrix: RatingMatrix, index: RatingIndex) -> None:
    model = make(matrix)
    with pytest.raises(ConfigError, match="train_columns"):
        model.fit(index.pairs(TRAIN), epochs=1, optimizer=lambda p: torch.optim.Adam(p), verbose=False)
    with pytest.raises(ConfigError, match="'row' column"):
        model.compute_loss({"x": torch.zeros(1)})


def test_bad_configuration_raises(matrix: RatingMatrix) -> None:
    for kw in ({"based": "movie"}, {"hidden_sizes": ()}, {"dropout": 1.0}, {"cold_start": "zero"},
               {"rating_range": (5.0, 1.0)}):
        with pytest.raises(ConfigError):
            make(matrix, **kw)


# --- ids: unknown raise, cold follow the documented fallback --------------------------------


def test_unknown_ids_raise(matrix: RatingMatrix) -> None:
    model = make(matrix)
    with pytest.raises(DataError, match="unknown user id.*'nobody'"):
        model.predict(["u1", "nobody"], ["a", "b"])
    with pytest.raises(DataError, match="unknown item id.*'zz'"):
        model.predict(["u1"], ["zz"])
    with pytest.raises(DataError, match="item index 4 is out of range"):
        model.predict_indices([0], [4])
    with pytest.raises(DataError, match="unknown user id"):
        model.recommend(["ghost"])


def test_cold_items_fall_back_to_the_global_mean(matrix: RatingMatrix) -> None:
    mean = float(np.mean(TRAIN["user_rating"]))
    model = make(matrix)  # cold_start="global_mean" is the default
    # Item "d" is in the index (it is in RATINGS) but has no training rating.
    np.testing.assert_allclose(model.predict(["u1", "u2", "u3"], ["d", "d", "d"]), [mean] * 3, rtol=1e-6)
    assert not np.allclose(model.predict(["u1"], ["a"]), mean)
    np.testing.assert_allclose(model.reconstruct()[:, 3].numpy(), [mean] * 3, rtol=1e-6)
    raw = make(matrix, cold_start="model").predict(["u1", "u2", "u3"], ["d", "d", "d"])
    assert not np.allclose(raw, mean)  # d2l's behaviour: the reconstruction of an empty column


def test_user_based_cold_user_falls_back(index: RatingIndex) -> None:
    train = TRAIN[TRAIN["user_id"] != "u3"]  # u3 has no training rating
    model = make(RatingMatrix.from_frame(train, index), based="user")
    np.testing.assert_allclose(model.predict(["u3", "u3"], ["a", "b"]),
                               [train["user_rating"].mean()] * 2, rtol=1e-6)


# --- top-N ---------------------------------------------------------------------------------


@pytest.mark.parametrize("based", ["item", "user"])
def test_recommend_ranks_unrated_items(matrix: RatingMatrix, based: str) -> None:
    model = make(matrix, based=based, cold_start="model")
    scores = model.reconstruct(clip=False).numpy()
    ids, top = model.recommend(["u2", "u1"], k=2)
    # u2 rated a, b, c: only d is left, the second slot is empty (-inf).
    assert ids[0, 0] == "d" and top[0, 0] == pytest.approx(scores[1, 3], rel=1e-5)
    assert top[0, 1] == -np.inf
    # u1 rated a and c: b and d, best first.
    order = [1, 3] if scores[0, 1] >= scores[0, 3] else [3, 1]
    assert list(ids[1]) == [["a", "b", "c", "d"][j] for j in order]
    np.testing.assert_allclose(top[1], scores[0, order], rtol=1e-5)
    all_ids, _ = model.recommend(["u1"], k=4, exclude_rated=False)
    assert sorted(all_ids[0]) == ["a", "b", "c", "d"]
    assert model.recommend(["u1"], k=50)[0].shape == (1, 4)  # k is capped at num_items
    with pytest.raises(ConfigError):
        model.recommend(["u1"], k=0)


def test_weights_round_trip(matrix: RatingMatrix, tmp_path: Path) -> None:
    model = make(matrix)
    model.save_weights(tmp_path / "w.pt")
    other = make(matrix, init_std=0.01)
    other.load_weights(tmp_path / "w.pt")
    torch.testing.assert_close(other.reconstruct(), model.reconstruct())


# --- real data -----------------------------------------------------------------------------


@pytest.mark.real_data
def test_real_data_two_epochs_reach_rmse_below_1_1(real_movielens, one_thread) -> None:
    from recstack.datasets.rating_splits import random_holdout

    ratings = real_movielens.ratings
    index = RatingIndex.from_frame(ratings)
    train, test = random_holdout(ratings, 0.1, seed=0)
    torch.manual_seed(0)
    model = AutoRec(RatingMatrix.from_frame(train, index))
    history = model.fit(model.train_columns(), epochs=2, batch_size=32, seed=0, verbose=False,
                        optimizer=lambda p: torch.optim.Adam(p, lr=0.002, weight_decay=1e-5),
                        validation_data=index.pairs(test), validation_batch_size=20000)
    assert history.history["val_root_mean_squared_error"][-1] < 1.1
