"""Normalization: float64 statistics, Keras formula, zero variance."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features import Normalization


def test_matches_float64_numpy_on_unix_timestamps() -> None:
    rng = np.random.default_rng(0)
    # MovieLens-100K-like timestamps: ~8.8e8..8.9e8 seconds.
    t = rng.integers(874_724_710, 893_286_638, 50_000).astype(np.int64)
    layer = Normalization().fit(t)
    x = t.astype(np.float64)
    mean, var = x.mean(), x.var()
    assert layer.mean == pytest.approx(mean, rel=0, abs=1e-6)
    assert layer.variance == pytest.approx(var, rel=1e-12)
    out = layer(t)
    assert out.dtype == torch.float32 and out.shape == (50_000,)
    reference = ((x - mean) / np.sqrt(var)).astype(np.float32)
    np.testing.assert_allclose(out.numpy(), reference, rtol=0, atol=1e-6)
    # What Keras-style float32 arithmetic would do: the spread is visibly lost.
    float32_naive = (x.astype(np.float32) - np.float32(mean)) / np.float32(np.sqrt(var))
    assert np.abs(float32_naive - reference).max() > 1e-5


def test_formula_by_hand() -> None:
    layer = Normalization().fit([1.0, 2.0, 3.0, 4.0])  # mean 2.5, population variance 1.25
    assert layer.mean == 2.5 and layer.variance == 1.25
    s = np.sqrt(1.25)
    np.testing.assert_allclose(layer([2.5, 5.0]).numpy(), [0.0, 2.5 / s], rtol=1e-6)


def test_zero_variance_uses_epsilon() -> None:
    layer = Normalization().fit([7.0, 7.0, 7.0])
    assert layer.variance == 0.0
    out = layer([7.0, 7.0 + 1e-7])
    assert torch.isfinite(out).all()
    assert out.tolist() == pytest.approx([0.0, 1.0], abs=1e-6)  # divided by epsilon = 1e-7
    assert Normalization(mean=0.0, variance=0.0, epsilon=0.5)([1.0]).tolist() == [2.0]


def test_explicit_statistics_and_inputs() -> None:
    layer = Normalization(mean=10.0, variance=4.0)
    expected = [-1.0, 0.0, 1.0]
    assert layer([8, 10, 12]).tolist() == expected
    assert layer(np.array([8.0, 10.0, 12.0])).tolist() == expected
    assert layer(torch.tensor([8.0, 10.0, 12.0])).tolist() == expected
    assert layer(pd.Series([8, 10, 12])).tolist() == expected


def test_errors() -> None:
    with pytest.raises(ConfigError, match="both"):
        Normalization(mean=1.0)
    with pytest.raises(ConfigError, match="variance"):
        Normalization(mean=1.0, variance=-1.0)
    with pytest.raises(DataError, match="no values"):
        Normalization().fit([])
    with pytest.raises(DataError, match="missing"):
        Normalization().fit([1.0, float("nan")])
    with pytest.raises(DataError, match="infinite"):
        Normalization().fit([1.0, float("inf")])
    with pytest.raises(DataError, match="numeric"):
        Normalization().fit(["1", "2"])
