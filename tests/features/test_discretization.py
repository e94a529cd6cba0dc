"""Discretization: Keras bucket semantics, boundary sorting, quantile fit, equal width."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.features import Discretization


def test_edges_below_on_between_above() -> None:
    layer = Discretization(bin_boundaries=[0.0, 1.0, 2.5])
    x = [-5.0, -1e-12, 0.0, 0.5, 1.0, 2.4999, 2.5, 3.0, 1e300, float("-inf"), float("inf")]
    # x < 0 -> 0; 0 <= x < 1 -> 1; 1 <= x < 2.5 -> 2; x >= 2.5 -> 3 (values ON a boundary go up)
    expected = [0, 0, 1, 1, 2, 2, 3, 3, 3, 0, 3]
    out = layer(x)
    assert out.dtype == torch.int64
    assert out.tolist() == expected
    assert layer.num_buckets() == 4


def test_input_types() -> None:
    layer = Discretization(bin_boundaries=[10, 20])
    assert layer(np.array([5, 10, 25], dtype=np.int64)).tolist() == [0, 1, 2]
    assert layer(torch.tensor([5.0, 15.0])).tolist() == [0, 1]
    assert layer(pd.Series([20, 19])).tolist() == [2, 1]


def test_unsorted_boundaries_warn_and_are_sorted() -> None:
    # The TFRS deep-retrieval tutorial passes np.linspace(max, min, n): descending.
    with pytest.warns(UserWarning, match="not sorted"):
        layer = Discretization(bin_boundaries=np.linspace(3.0, 1.0, 3))
    np.testing.assert_array_equal(layer.bin_boundaries, [1.0, 2.0, 3.0])
    assert layer([0.0, 1.0, 2.0, 3.0]).tolist() == [0, 1, 2, 3]


def test_sorted_boundaries_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Discretization(bin_boundaries=[1.0, 2.0, 2.0, 3.0])


def test_quantile_fit_against_numpy() -> None:
    rng = np.random.default_rng(1)
    x = rng.exponential(size=10_001)
    layer = Discretization(num_bins=4).fit(x)
    expected = np.quantile(x, [0.25, 0.5, 0.75])
    np.testing.assert_array_equal(layer.bin_boundaries, expected)
    counts = np.bincount(layer(x).numpy(), minlength=4)
    assert layer.num_buckets() == 4
    assert counts.min() >= 2500 and counts.max() <= 2501  # equal-frequency buckets


def test_quantile_fit_small_by_hand() -> None:
    layer = Discretization(num_bins=2).fit([1.0, 2.0, 3.0, 4.0])
    assert layer.bin_boundaries.tolist() == [2.5]  # median, linear interpolation
    assert Discretization(num_bins=1).fit([1.0, 2.0]).num_buckets() == 1


def test_timestamp_boundaries_keep_float64_precision() -> None:
    t0 = 893_286_638  # MovieLens 100K timestamps; float32 spacing here is 64 s
    layer = Discretization(bin_boundaries=[t0, t0 + 1])
    assert layer(np.array([t0 - 1, t0, t0 + 1], dtype=np.int64)).tolist() == [0, 1, 2]


def test_equal_width() -> None:
    layer = Discretization.equal_width(0.0, 10.0, 6)
    np.testing.assert_allclose(layer.bin_boundaries, [0.0, 2.0, 4.0, 6.0, 8.0, 10.0])
    assert layer([-1.0, 0.0, 1.9, 2.0, 9.99, 10.0]).tolist() == [0, 1, 1, 2, 5, 6]
    assert layer.num_buckets() == 7
    with pytest.raises(ConfigError):
        Discretization.equal_width(10.0, 0.0, 5)
    with pytest.raises(ConfigError):
        Discretization.equal_width(0.0, 1.0, 0)


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="not both"):
        Discretization(bin_boundaries=[1.0], num_bins=3)
    with pytest.raises(ConfigError, match="num_bins"):
        Discretization(num_bins=0)
    with pytest.raises(ConfigError, match="num_bins"):
        Discretization(bin_boundaries=[1.0]).fit([1.0, 2.0])
    with pytest.raises(ConfigError, match="num_bins"):
        Discretization().fit([1.0, 2.0])


def test_data_errors() -> None:
    layer = Discretization(bin_boundaries=[1.0])
    with pytest.raises(DataError, match="missing"):
        layer([1.0, float("nan")])
    with pytest.raises(DataError, match="numeric"):
        layer(["a", "b"])
    with pytest.raises(DataError, match="no values"):
        Discretization(num_bins=3).fit([])
    with pytest.raises(DataError):
        Discretization(bin_boundaries=[1.0, float("nan")])
