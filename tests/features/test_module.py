"""The layers as torch modules: no parameters, nn.Sequential on raw values, errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from recstack.core.errors import DataError, NotFittedError
from recstack.features import (
    Discretization,
    IntegerLookup,
    Normalization,
    StringLookup,
    TextVectorization,
)

ALL_UNFITTED = [StringLookup, IntegerLookup, Normalization, TextVectorization, lambda: Discretization(num_bins=4)]


def test_sequential_with_embedding_on_raw_strings() -> None:
    ids = np.array(["u1", "u2", "u3"])
    lookup = StringLookup(vocabulary=ids)
    model = nn.Sequential(lookup, nn.Embedding(lookup.vocabulary_size(), 8))
    out = model(["u2", "never-seen", "u1"])
    assert out.shape == (3, 8)
    weight = model[1].weight
    assert torch.equal(out[0], weight[2]) and torch.equal(out[1], weight[0]) and torch.equal(out[2], weight[1])
    out.sum().backward()  # gradients flow to the embedding
    assert weight.grad is not None


def test_sequential_text_and_buckets() -> None:
    text = TextVectorization(vocabulary=["toy", "story"])
    bag = nn.Sequential(text, nn.Embedding(text.vocabulary_size(), 4, padding_idx=0))
    assert bag(["Toy Story", "Heat"]).shape == (2, 2, 4)
    buckets = Discretization(bin_boundaries=[1.0, 2.0])
    assert nn.Sequential(buckets, nn.Embedding(buckets.num_buckets(), 4))(torch.tensor([0.0, 5.0])).shape == (2, 4)
    norm = Normalization(mean=0.0, variance=1.0)
    assert norm(torch.tensor([1.0, 2.0])).unsqueeze(-1).shape == (2, 1)


@pytest.mark.parametrize("make", ALL_UNFITTED)
def test_no_parameters_and_empty_state_dict(make) -> None:
    layer = make()
    assert list(layer.parameters()) == []
    assert layer.state_dict() == {}


@pytest.mark.parametrize("make", ALL_UNFITTED)
def test_unfitted_use_raises(make) -> None:
    layer = make()
    assert not layer.is_fitted
    with pytest.raises(NotFittedError, match=r"call fit\(values\)"):
        layer(["1", "2"])


@pytest.mark.parametrize(
    "layer",
    [
        StringLookup(vocabulary=["a"]),
        IntegerLookup(vocabulary=[1]),
        Normalization(mean=0.0, variance=1.0),
        Discretization(bin_boundaries=[0.5]),
    ],
)
def test_input_must_be_1d(layer) -> None:
    with pytest.raises(DataError, match="1-D.*scalar"):
        layer(np.array(1))
    with pytest.raises(DataError, match=r"1-D.*\(2, 2\)"):
        layer(np.ones((2, 2), dtype=np.int64))
    with pytest.raises(DataError, match="1-D"):
        layer([[1], [1, 2]])
    with pytest.raises(DataError, match="DataFrame"):
        layer(pd.DataFrame({"a": [1]}))


def test_single_string_is_not_a_batch() -> None:
    with pytest.raises(DataError, match=r"wrap it in a list"):
        StringLookup(vocabulary=["abc"])("abc")
    with pytest.raises(DataError, match=r"wrap it in a list"):
        TextVectorization(vocabulary=["abc"])("abc")


def test_fit_returns_self_and_fit_transform() -> None:
    layer = StringLookup()
    assert layer.fit(["a"]) is layer
    assert StringLookup().fit_transform(["b", "a"]).tolist() == [2, 1]


def test_large_batch_is_vectorised_and_exact() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 10_000, 200_000)
    layer = IntegerLookup().fit(values)
    np.testing.assert_array_equal(layer(values).numpy(), np.searchsorted(np.unique(values), values) + 1)


def test_outputs_follow_module_device() -> None:
    # .to(device) moves the (empty, non-persistent) anchor buffer; outputs follow it.
    # "meta" stands in for a GPU so this runs everywhere.
    lookup = StringLookup(vocabulary=["a", "b"])
    model = nn.Sequential(lookup, nn.Embedding(lookup.vocabulary_size(), 4)).to("meta")
    assert lookup(["a"]).device.type == "meta"
    assert model(["a", "b"]).shape == (2, 4)
    assert StringLookup(vocabulary=["a"])(["a"]).device.type == "cpu"
