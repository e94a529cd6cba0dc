"""The preprocessing-layer table (one recstack.core.registry.Registry) and configs saved before it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.features import PREPROCESSING_LAYERS, FeatureSet, PreprocessingLayer, registered_layers

# FeatureSet.to_json(indent=None) written by the layout before the registry (commit 76c4e1e,
# HashingLookup then in recstack.streaming.hashing), for the table below:
#   FeatureSet({"user": StringLookup(), "item": IntegerLookup(num_oov_indices=0)})
#     .add("ts_bucket", Discretization(num_bins=3), "ts").add("ts_norm", Normalization(), "ts")
#     .add("title_tokens", TextVectorization(max_tokens=8, output_sequence_length=3), "title")
#     .add("user_hash", HashingLookup(16, salt=7), "user").fit(TABLE)
OLD_JSON = (
    '{"class": "FeatureSet", "format": "recstack.FeatureSet", "version": 1, "features": ['
    '{"output": "user", "input": "user", "layer": {"class": "StringLookup", "num_oov_indices": 1, '
    '"order": "sorted", "max_tokens": null, "vocabulary": ["u1", "u2", "u3"]}}, '
    '{"output": "item", "input": "item", "layer": {"class": "IntegerLookup", "num_oov_indices": 0, '
    '"order": "sorted", "max_tokens": null, "vocabulary": [10, 20, 30]}}, '
    '{"output": "ts_bucket", "input": "ts", "layer": {"class": "Discretization", '
    '"bin_boundaries": [2.5, 4.0], "num_bins": 3, "epsilon": 0.01}}, '
    '{"output": "ts_norm", "input": "ts", "layer": {"class": "Normalization", "mean": 3.875, '
    '"variance": 6.796875, "epsilon": 1e-07}}, '
    '{"output": "title_tokens", "input": "title", "layer": {"class": "TextVectorization", '
    '"max_tokens": 8, "output_sequence_length": 3, "standardize": "lower_and_strip_punctuation", '
    '"split": "whitespace", "vocabulary": ["1995", "story", "toy", "2009", "heat", "up"]}}, '
    '{"output": "user_hash", "input": "user", "layer": {"class": "HashingLookup", "num_bins": 16, "salt": 7}}]}'
)
TABLE = {"user": ["u1", "u2", "u3", "u1"], "item": [10, 20, 30, 10], "ts": [1.0, 2.5, 4.0, 8.0],
         "title": ["Toy Story (1995)", "Heat (1995)", "Up (2009)", "Toy Story (1995)"]}
# The old code's transform(TABLE) of that FeatureSet.
OLD_OUTPUTS = {
    "user": [1, 2, 3, 1],
    "item": [0, 1, 2, 0],
    "ts_bucket": [0, 1, 2, 2],
    "ts_norm": [-1.1027655601501465, -0.5274096131324768, 0.04794633015990257, 1.5822288990020752],
    "title_tokens": [[4, 3, 2], [6, 2, 0], [7, 5, 0], [4, 3, 2]],
    "user_hash": [4, 14, 5, 4],
}


def test_feature_set_json_from_the_previous_layout_loads_and_transforms_the_same() -> None:
    features = FeatureSet.from_json(OLD_JSON)
    out = features.transform(TABLE)
    assert set(out) == set(OLD_OUTPUTS)
    for name, expected in OLD_OUTPUTS.items():
        np.testing.assert_array_equal(out[name].numpy(), np.asarray(expected, dtype=out[name].numpy().dtype))
    # Saving again writes the same names (the registered names are the old "class" values).
    assert json.loads(features.to_json(indent=None)) == json.loads(OLD_JSON)


def test_hashing_is_a_lazy_entry_loaded_on_first_use() -> None:
    """In a fresh process the table names HashingLookup before its module is imported, and loads it on get."""
    code = ("import sys; from recstack.features import PREPROCESSING_LAYERS as t; "
            "assert 'recstack.features.hashing' not in sys.modules; "
            "print('HashingLookup' in t.names(), 'HashingLookup' in t.loaded()); "
            "cls = t.get('HashingLookup'); print(cls.__module__, 'recstack.features.hashing' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False", "recstack.features.hashing", "True"]


def test_every_layer_class_has_one_stable_name() -> None:
    assert registered_layers() == ["Discretization", "HashingLookup", "IntegerLookup", "Normalization",
                                   "StringLookup", "TextVectorization"]
    for name in registered_layers():
        assert PREPROCESSING_LAYERS.name_of(PREPROCESSING_LAYERS.get(name)) == name


class _Doubler(PreprocessingLayer):
    """A user-defined layer: x -> 2x (stateless)."""

    is_fitted = True

    def fit(self, values):
        return self

    def transform(self, values):
        return self._output(2 * np.asarray(values, dtype=np.int64))

    def get_config(self):
        return {"class": self.registered_name()}

    @classmethod
    def _from_config(cls, config):
        return cls()


def test_a_user_layer_saves_only_once_registered_and_then_round_trips() -> None:
    with pytest.raises(ConfigError, match="not a registered preprocessing layer.*register"):
        FeatureSet({"x": _Doubler()}).to_json()
    PREPROCESSING_LAYERS.register("test_doubler", _Doubler)
    try:
        again = FeatureSet.from_json(FeatureSet({"x": _Doubler()}).to_json())
        assert isinstance(again["x"], _Doubler)
        assert torch.equal(again.transform({"x": [1, 2]})["x"], torch.tensor([2, 4]))
    finally:
        PREPROCESSING_LAYERS._entries.pop("test_doubler")


def test_unknown_name_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="unknown preprocessing layer 'StringLookpu'.*'StringLookup'"):
        FeatureSet.from_json(OLD_JSON.replace('"StringLookup"', '"StringLookpu"'))
