"""get_config / from_config / JSON round trips for every layer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError, NotFittedError
from recstack.features import (
    Discretization,
    IntegerLookup,
    Normalization,
    PreprocessingLayer,
    StringLookup,
    TextVectorization,
    layer_from_config,
)

RNG = np.random.default_rng(0)
IDS = RNG.integers(0, 50, 300)
TIMES = RNG.integers(874_724_710, 893_286_638, 300).astype(np.int64)
TEXTS = [f"Movie {i % 17}, The ({1990 + i % 7})!" for i in range(300)]

CASES = [
    (lambda: StringLookup(order="frequency", max_tokens=20).fit(IDS.astype(str)), IDS.astype(str)),
    (lambda: StringLookup(num_oov_indices=0).fit(IDS.astype(str)), IDS.astype(str)),
    (lambda: IntegerLookup().fit(IDS), np.append(IDS, 999)),
    (lambda: Discretization(num_bins=10).fit(TIMES), TIMES),
    (lambda: Discretization.equal_width(0.5, 2.5, 7), np.linspace(0, 3, 50)),
    (lambda: Normalization().fit(TIMES), TIMES),
    (lambda: TextVectorization(max_tokens=10, output_sequence_length=4).fit(TEXTS), TEXTS + ["unseen words"]),
    (lambda: TextVectorization(split="character", standardize="lower").fit(TEXTS), TEXTS),
]


@pytest.mark.parametrize(("make", "inputs"), CASES)
def test_round_trip_gives_identical_outputs(make, inputs) -> None:
    layer = make()
    config = layer.get_config()
    # Plain JSON: survives dumps/loads unchanged (no numpy scalars, no pickle).
    text = json.dumps(config)
    assert json.loads(text) == config
    assert config["class"] == type(layer).__name__
    expected = layer(inputs)
    for rebuilt in (
        type(layer).from_config(config),
        layer_from_config(json.loads(text)),
        PreprocessingLayer.from_json(layer.to_json()),
        type(layer).from_json(layer.to_json(indent=2)),
    ):
        assert type(rebuilt) is type(layer)
        assert rebuilt.get_config() == config
        assert torch.equal(rebuilt(inputs), expected)


def test_exact_float_state_survives_json() -> None:
    layer = Normalization().fit(TIMES)
    again = Normalization.from_json(layer.to_json())
    assert (again.mean, again.variance) == (layer.mean, layer.variance)
    d = Discretization(num_bins=7).fit(TIMES / 3.0)
    np.testing.assert_array_equal(Discretization.from_json(d.to_json()).bin_boundaries, d.bin_boundaries)


def test_refit_after_round_trip_keeps_num_bins() -> None:
    d = Discretization.from_config(Discretization(num_bins=4).fit(TIMES).get_config())
    assert d.fit(np.arange(100.0)).num_buckets() == 4


def test_unfitted_config_round_trips_unfitted() -> None:
    for layer in (StringLookup(), IntegerLookup(), Discretization(num_bins=3), Normalization(), TextVectorization()):
        rebuilt = layer_from_config(json.loads(layer.to_json()))
        assert not rebuilt.is_fitted
        with pytest.raises(NotFittedError):
            rebuilt(["1"])


def test_config_errors() -> None:
    config = StringLookup(vocabulary=["a"]).get_config()
    with pytest.raises(ConfigError, match="StringLookup.*IntegerLookup"):
        IntegerLookup.from_config(config)
    with pytest.raises(ConfigError, match="unknown preprocessing layer .Nope."):
        layer_from_config({"class": "Nope"})
    with pytest.raises(ConfigError, match="class"):
        layer_from_config({"vocabulary": ["a"]})
    with pytest.raises(ConfigError, match="missing key 'vocabulary'"):
        layer_from_config({k: v for k, v in config.items() if k != "vocabulary"})
    with pytest.raises(ConfigError, match="JSON"):
        StringLookup.from_json("{not json")
