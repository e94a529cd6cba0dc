"""TimestampFeatures against the Keras formulas computed by hand in numpy."""

import numpy as np
import pytest
import torch

from recstack.core.errors import NotFittedError
from recstack.layers.time_context import TimestampFeatures


def test_buckets_and_normalisation_match_numpy():
    rng = np.random.default_rng(0)
    t = rng.integers(874_724_710, 893_286_638, size=500).astype(np.float64)   # MovieLens-like Unix times
    layer = TimestampFeatures(num_boundaries=10, embedding_dim=4).fit(torch.from_numpy(t))
    boundaries = np.linspace(t.min(), t.max(), 10)
    queries = np.concatenate([t[:50], boundaries, [t.min() - 1, t.max() + 1]])
    out = layer(torch.from_numpy(queries))
    expected_bucket = np.array([(boundaries <= x).sum() for x in queries])    # Keras Discretization
    torch.testing.assert_close(out[:, :4], layer.embedding.weight[torch.from_numpy(expected_bucket)])
    expected_norm = (queries - t.mean()) / t.std()                             # population std
    np.testing.assert_allclose(out[:, 4].detach().numpy(), expected_norm, rtol=1e-5, atol=1e-6)


def test_without_timestamps_the_latest_fitted_time_stands_for_now():
    layer = TimestampFeatures(5, 3).fit(torch.tensor([10.0, 20.0, 30.0]))
    now = layer(None, batch_size=2)
    torch.testing.assert_close(now, layer(torch.tensor([30.0, 30.0])))


def test_state_dict_carries_the_fit_and_unfitted_use_is_an_error():
    layer = TimestampFeatures(5, 3).fit(torch.tensor([1e9, 1e9 + 100, 1e9 + 500]))
    copy = TimestampFeatures(5, 3)
    with pytest.raises(NotFittedError):
        copy(torch.tensor([1e9]))
    copy.load_state_dict(layer.state_dict())
    x = torch.tensor([1e9 + 42.0], dtype=torch.float64)
    torch.testing.assert_close(copy(x), layer(x))
