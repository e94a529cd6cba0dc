"""The multi-task tutorial oracle (tests/tutorial_models.py): its loss is the weighted sum of both
task losses, computed independently in numpy (the oracle is only as good as this check)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.training.optimizers import Adagrad
from tutorial_models import MultiTaskModel


def make_model(rating_weight: float, retrieval_weight: float) -> MultiTaskModel:
    torch.manual_seed(0)
    return MultiTaskModel(5, 6, torch.tensor([1, 2, 3, 4, 5]), rating_weight, retrieval_weight,
                          embedding_dim=4, rating_layers=(8, 3, 1))


BATCH = {"user_id": torch.tensor([1, 2, 3, 1]), "movie_title": torch.tensor([2, 5, 1, 4]),
         "user_rating": torch.tensor([4.0, 3.0, 5.0, 1.0])}


def numpy_losses(model: MultiTaskModel) -> tuple[float, float]:
    """MSE of the rating head and the summed in-batch softmax CE, in float64 numpy."""
    users = model.user_model.weight.detach().double().numpy()[BATCH["user_id"].numpy()]
    movies = model.movie_model.weight.detach().double().numpy()[BATCH["movie_title"].numpy()]
    h = np.concatenate([users, movies], axis=1)
    layers = list(model.rating_model)
    for i, layer in enumerate(layers):
        h = h @ layer.weight.detach().double().numpy().T + layer.bias.detach().double().numpy()
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    mse = float(np.mean((BATCH["user_rating"].numpy() - h[:, 0]) ** 2))
    scores = users @ movies.T
    peak = scores.max(axis=1, keepdims=True)
    lse = np.log(np.exp(scores - peak).sum(axis=1)) + peak[:, 0]
    retrieval = float(np.sum(lse - np.diag(scores)))
    return mse, retrieval


@pytest.mark.parametrize("weights", [(1.0, 0.0), (0.0, 1.0), (1.0, 1.0), (0.3, 2.5)])
def test_loss_is_the_weighted_sum_of_task_losses(weights: tuple[float, float]) -> None:
    model = make_model(*weights)
    mse, retrieval = numpy_losses(model)
    loss = model.compute_loss(BATCH, training=True)
    assert float(loss.detach()) == pytest.approx(weights[0] * mse + weights[1] * retrieval, rel=1e-5, abs=1e-6)
    rating_loss, retrieval_loss = model.task_losses(BATCH)
    assert float(rating_loss.detach()) == pytest.approx(mse, rel=1e-5)
    assert float(retrieval_loss.detach()) == pytest.approx(retrieval, rel=1e-5)


def test_zero_retrieval_weight_leaves_only_rating_gradients() -> None:
    model = make_model(1.0, 0.0)
    model.compute_loss(BATCH, training=True).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    reference = make_model(1.0, 0.0)
    rating_loss, _ = reference.task_losses(BATCH)
    rating_loss.backward()
    for got, want in zip(grads, [p.grad for p in reference.parameters()]):
        torch.testing.assert_close(got, want)


def test_fit_and_evaluate_report_both_tasks() -> None:
    model = make_model(1.0, 1.0)
    history = model.fit(BATCH, epochs=2, batch_size=2, optimizer=lambda p: Adagrad(p, lr=0.1), verbose=False)
    assert len(history) == 2 and "root_mean_squared_error" in history.history
    metrics = model.evaluate(BATCH)
    assert {"root_mean_squared_error", "factorized_top_k/top_100_categorical_accuracy", "loss"} <= set(metrics)
