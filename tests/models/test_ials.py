"""iALS: the user and item solves against numpy.linalg.solve of the normal equations written from
the objective, the objective by hand in numpy (non-increasing over sweeps), fold-in = one more user
solve, chunking, and the kind's parameter checks (the ``ials`` kind end to end:
tests/cli/test_ials_kind.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.core.id_lists import IdLists
from recstack.experiment.config import parse_config
from recstack.models.ials import IALS

# A 5 x 7 user-item matrix: users 1..5 x items 1..7 of the model (id 0 = unknown, never observed).
# User 5 and item 7 have no observations (they solve to zero).
R = np.array([[1, 1, 0, 0, 1, 0, 0],
              [0, 1, 1, 0, 0, 0, 0],
              [1, 0, 0, 1, 1, 1, 0],
              [0, 0, 1, 0, 0, 1, 0],
              [0, 0, 0, 0, 0, 0, 0]], dtype=float)
A0, LAM = 0.3, 0.05


def pairs() -> tuple[torch.Tensor, torch.Tensor]:
    u, i = np.nonzero(R)
    users, items = torch.from_numpy(u + 1), torch.from_numpy(i + 1)
    return torch.cat([users, users[:2]]), torch.cat([items, items[:2]])   # a repeated pair counts once


def tiny(nu: float = 1.0, dim: int = 3, **kwargs) -> IALS:
    users, items = pairs()
    return IALS(6, 8, dim, LAM, A0, nu, init_std=0.5, users=users, items=items,
                generator=torch.Generator().manual_seed(0), dtype=torch.float64, **kwargs)


def normal_equation_solve(R: np.ndarray, fixed: np.ndarray, nu: float) -> np.ndarray:
    """Row r of the result minimises L over row r's factors with ``fixed`` held: the solution of
    (a0 F^T F + sum_{j in r} f_j f_j^T + lam (n_r + a0 |J|)^nu I) x = sum_{j in r} f_j (from dL/dx = 0)."""
    d = fixed.shape[1]
    out = []
    for row in R:
        obs = fixed[row > 0]
        A = A0 * fixed.T @ fixed + obs.T @ obs + LAM * (row.sum() + A0 * R.shape[1]) ** nu * np.eye(d)
        out.append(np.linalg.solve(A, obs.sum(axis=0)))
    return np.array(out)


def numpy_loss(W: np.ndarray, H: np.ndarray, nu: float) -> float:
    """L of the module docstring over the 5 x 7 matrix, by hand."""
    P = W @ H.T
    observed = ((P - 1) ** 2 * R).sum()
    unobserved = A0 * (P ** 2).sum()
    cu = (R.sum(1) + A0 * R.shape[1]) ** nu
    ci = (R.sum(0) + A0 * R.shape[0]) ** nu
    return float(observed + unobserved + LAM * ((cu * (W ** 2).sum(1)).sum() + (ci * (H ** 2).sum(1)).sum()))


def factors(model: IALS) -> tuple[np.ndarray, np.ndarray]:
    return model.user_factors.detach()[1:].numpy().copy(), model.item_factors.detach()[1:].numpy().copy()


@pytest.mark.parametrize("nu", [0.0, 1.0])
def test_one_user_solve_and_one_item_solve_are_the_normal_equations(nu):
    model = tiny(nu)
    W0, H0 = factors(model)
    users = model.solve_users()
    np.testing.assert_allclose(users[1:].numpy(), normal_equation_solve(R, H0, nu), rtol=1e-9, atol=1e-12)
    assert users[0].abs().sum() == 0 and users[5].abs().sum() == 0      # unknown id, no observations
    items = model.solve_items()
    np.testing.assert_allclose(items[1:].numpy(), normal_equation_solve(R.T, W0, nu), rtol=1e-9, atol=1e-12)
    assert items[0].abs().sum() == 0 and items[7].abs().sum() == 0
    # A sweep is the user solve, then the item solve with the new users.
    model.sweep()
    W1, H1 = factors(model)
    np.testing.assert_allclose(W1, normal_equation_solve(R, H0, nu), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(H1, normal_equation_solve(R.T, W1, nu), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("nu", [0.0, 1.0])
def test_the_objective_is_the_formula_and_never_increases_over_sweeps(nu):
    model = tiny(nu)
    losses = [numpy_loss(*factors(model), nu)]
    assert float(model.objective()) == pytest.approx(losses[0], rel=1e-10)
    for _ in range(6):
        model.sweep()
        losses.append(numpy_loss(*factors(model), nu))
        assert float(model.objective()) == pytest.approx(losses[-1], rel=1e-10)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] < losses[0]


def test_fold_in_of_a_training_user_is_one_more_user_solve():
    torch.manual_seed(0)
    users = torch.randint(1, 60, (900,))
    items = torch.randint(1, 40, (900,))
    model = IALS(60, 40, 8, 0.01, 0.1, 1.0, users=users, items=items)     # float32, the kind's dtype
    model.run_sweeps(4)
    solved = model.solve_users()
    train = IdLists.from_pairs(users, items, 60)
    some = torch.tensor([3, 17, 42, 59, 1])
    histories = train.take(some.numpy())
    torch.testing.assert_close(model.fold_in(histories), solved[some], atol=1e-5, rtol=1e-5)
    # Through the kind's history_query; an empty history (or only unknown ids) folds in to zeros.
    from recstack.experiment.ials_kind import ials_history_query

    empty = IdLists.from_lists([[], [0]])
    assert ials_history_query(model, empty).abs().sum() == 0
    torch.testing.assert_close(ials_history_query(model, histories), solved[some], atol=1e-5, rtol=1e-5)


def test_small_chunks_solve_the_same_rows():
    torch.manual_seed(1)
    users, items = torch.randint(1, 50, (600,)), torch.randint(1, 30, (600,))
    whole = IALS(50, 30, 4, 0.02, 0.2, 1.0, users=users, items=items, dtype=torch.float64)
    chunked = IALS(50, 30, 4, 0.02, 0.2, 1.0, users=users, items=items, dtype=torch.float64, chunk_elements=64)
    chunked.load_state_dict(whole.state_dict())
    assert len(chunked._plan("user")) > 5 and len(whole._plan("user")) == 1
    whole.run_sweeps(2)
    chunked.run_sweeps(2)
    torch.testing.assert_close(chunked.user_factors, whole.user_factors)
    torch.testing.assert_close(chunked.item_factors, whole.item_factors)


def test_a_training_step_is_a_sweep_that_leaves_the_factors_without_gradient():
    model = tiny()
    batch = model.training_data()
    assert batch.num_rows == 1
    expected = tiny()
    expected.sweep()
    loss = model.compute_loss(dict(batch), training=True)
    loss.backward()
    assert model.user_factors.grad is None and model.item_factors.grad is None
    assert loss.item() == pytest.approx(float(expected.objective()))
    torch.testing.assert_close(model.item_factors, expected.item_factors)


def test_bad_settings_are_refused_with_their_key():
    with pytest.raises(ConfigError, match="regularization"):
        tiny().__class__(6, 8, 3, regularization=0.0)
    with pytest.raises(ConfigError, match="'sweep' column"):
        tiny().compute_loss({"item": torch.tensor([1])})
    raw = {"data": {"interactions": "x.csv", "columns": {"user": "u", "item": "i"}},
           "model": {"kind": "ials", "embedding_dim": 0, "regularization": -1.0, "unobserved_weight": -0.1,
                     "regularization_exp": 3.0, "init_std": 0.0}}
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "cfg.yaml")
    message = str(info.value)
    for key in ("model.embedding_dim", "model.regularization: must be > 0", "model.unobserved_weight: must be >= 0",
                "model.regularization_exp: must be in [0, 2]", "model.init_std: must be > 0"):
        assert key in message, message
    raw["model"] = {"kind": "ials", "regularization": float("nan")}
    with pytest.raises(ConfigError, match="model.regularization: must be a finite number"):
        parse_config(raw, "cfg.yaml")
    raw["model"] = {"kind": "ials", "iterations": 5}
    with pytest.raises(ConfigError, match="iterations"):
        parse_config(raw, "cfg.yaml")
