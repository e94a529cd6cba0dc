"""Keras-style preprocessing layers for PyTorch (the ones the TFRS tutorials use).

Each layer is a parameter-free ``torch.nn.Module`` with ``fit`` (Keras ``adapt``),
``transform`` / ``forward`` on raw values, and a plain-JSON ``get_config`` /
``from_config`` round trip. ``FeatureSet`` applies several of them to the
columns of a table and saves them together.
"""

from recstack.features.base import PREPROCESSING_LAYERS, PreprocessingLayer, layer_from_config, registered_layers
from recstack.features.discretization import Discretization
from recstack.features.feature_set import FeatureSet
from recstack.features.lookup import IntegerLookup, StringLookup
from recstack.features.normalization import Normalization
from recstack.features.text import TextVectorization

__all__ = [
    "PREPROCESSING_LAYERS",
    "Discretization",
    "FeatureSet",
    "IntegerLookup",
    "Normalization",
    "PreprocessingLayer",
    "StringLookup",
    "TextVectorization",
    "layer_from_config",
    "registered_layers",
]
