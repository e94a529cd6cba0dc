"""ScoreEnsemble against a numpy blend of fixed member scores: Σ_m w_m s_m / σ_m, σ_m the sample
standard deviation of member m's scores over the training users × the catalogue."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.columns import Columns
from recstack.core.errors import ConfigError, DataError
from recstack.models.ensemble import ScoreEnsemble
from recstack.training.model import Model


class Fixed(Model):
    """A member with given user and item embeddings; ``fit`` records that it was called."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor):
        super().__init__()
        self.register_buffer("U", users)
        self.register_buffer("V", items)
        self.fits = 0

    def fit(self, train, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        self.fits += 1

    def user_embeddings(self, users: torch.Tensor) -> torch.Tensor:
        return self.U[users]

    def item_embeddings(self, items: torch.Tensor) -> torch.Tensor:
        return self.V[items]


def members(seed: int = 0) -> tuple[Fixed, Fixed]:
    g = torch.Generator().manual_seed(seed)
    a = Fixed(torch.randn(6, 3, generator=g, dtype=torch.float64), torch.randn(5, 3, generator=g, dtype=torch.float64))
    # A member on a 50x larger scale, in float32: σ puts it on the first one's scale.
    b = Fixed(50 * torch.randn(6, 2, generator=g), torch.randn(5, 2, generator=g))
    return a, b


def train_rows() -> Columns:
    return Columns({"user": torch.tensor([1, 2, 2, 3, 5]), "item": torch.tensor([1, 2, 3, 4, 1]),
                    "query_key": torch.tensor([1, 2, 2, 3, 5])})


def kwargs() -> dict:
    return {"candidate_ids": torch.arange(1, 5), "user_column": "user", "item_column": "item",
            "query_key": "query_key", "ks": (1, 2)}


def test_scores_are_the_weighted_blend_of_scaled_member_scores():
    a, b = members()
    ensemble = ScoreEnsemble([a, b], [1.0, 0.7], num_items=5, **kwargs())
    ensemble.fit(train_rows())
    assert a.fits == 1 and b.fits == 1
    users = np.array([1, 2, 3, 5])                       # the distinct training users
    s_a = a.U.numpy()[users] @ a.V.numpy()[1:5].T        # [4 users, 4 catalogue items]
    s_b = b.U.double().numpy()[users] @ b.V.double().numpy()[1:5].T
    sigma = [s_a.std(ddof=1), s_b.std(ddof=1)]
    np.testing.assert_allclose(ensemble.scales.numpy(), sigma, rtol=1e-6)
    query = torch.tensor([0, 4, 2])
    expected = 1.0 * (a.U.numpy()[[0, 4, 2]] @ a.V.numpy()[1:5].T) / sigma[0] + \
        0.7 * (b.U.double().numpy()[[0, 4, 2]] @ b.V.double().numpy()[1:5].T) / sigma[1]
    np.testing.assert_allclose(ensemble.scores(query).numpy(), expected, rtol=1e-5)
    assert ensemble.user_embeddings(query).dtype == torch.float64


def test_a_zero_weight_member_leaves_the_other_members_ranking():
    a, b = members(1)
    ensemble = ScoreEnsemble([a, b], [0.0, 2.0], num_items=5, **kwargs())
    ensemble.fit(train_rows())
    users = torch.arange(6)
    alone = b.user_embeddings(users).double() @ b.item_embeddings(torch.arange(1, 5)).double().T
    assert torch.equal(torch.argsort(ensemble.scores(users), dim=1), torch.argsort(alone, dim=1))


def test_scale_users_takes_the_lowest_user_ids():
    a, b = members(2)
    ensemble = ScoreEnsemble([a, b], [1.0, 1.0], num_items=5, scale_users=2, **kwargs())
    ensemble.fit(train_rows())
    s_a = a.U.numpy()[[1, 2]] @ a.V.numpy()[1:5].T
    assert float(ensemble.scales[0]) == pytest.approx(s_a.std(ddof=1))


def test_an_unfitted_ensemble_refuses_to_score():
    ensemble = ScoreEnsemble(list(members()), [1.0, 1.0], num_items=5, **kwargs())
    with pytest.raises(Exception, match="not fitted"):
        ensemble.scores(torch.tensor([1]))


@pytest.mark.parametrize("weights, message", [([1.0], "one weight per member"), ([-1.0, 1.0], ">= 0"),
                                               ([0.0, 0.0], "not all 0"), ([float("nan"), 1.0], "finite")])
def test_bad_weights_are_refused(weights, message):
    with pytest.raises(ConfigError, match=message):
        ScoreEnsemble(list(members()), weights, num_items=5, **kwargs())


def test_a_diverged_or_constant_member_is_an_error_not_a_blend():
    a, b = members()
    b.U[3, 0] = float("nan")
    with pytest.raises(DataError, match="'member_1' gives non-finite scores"):
        ScoreEnsemble([a, b], [1.0, 1.0], num_items=5, **kwargs()).fit(train_rows())
    a, b = members()
    b.U.zero_()
    with pytest.raises(DataError, match="'flat' gives every user and item the same score"):
        ScoreEnsemble([a, b], [1.0, 1.0], num_items=5, names=["ok", "flat"], **kwargs()).fit(train_rows())
