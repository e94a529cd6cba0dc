"""Feature towers of the TFRS deep-retrieval tutorial: a user/context query tower and a
title/text candidate tower, each an embedding stage followed by an MLP.

Both towers take tensors produced by a fitted :class:`recstack.features.FeatureSet`
(see :mod:`recstack.models.movielens_features`), never strings:

* ``QueryTower`` input: ``{"user_id": LongTensor [B], "timestamp_bucket": LongTensor [B],
  "timestamp_norm": FloatTensor [B]}`` (the timestamp keys only with ``use_timestamp``).
* ``CandidateTower`` input: ``{"title_id": LongTensor [B], "title_tokens": LongTensor [B, L]}``
  (token id 0 is padding; ``title_tokens`` only with ``use_text``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ShapeError
from ..layers.dense import MLP
from ..layers.embedding import Embedding


def _head(in_features: int, layer_sizes: Sequence[int] | None, activation: str, l2: float) -> nn.Module:
    """MLP(layer_sizes) with ``activation`` on all but the last layer, or identity if empty."""
    if not layer_sizes:
        return nn.Identity()
    return MLP(in_features, list(layer_sizes), activation=activation, l2=l2)


def _require(inputs: Mapping[str, torch.Tensor], key: str, tower: str) -> torch.Tensor:
    try:
        return inputs[key]
    except KeyError:
        raise ShapeError(
            f"{tower} needs an input {key!r}; got keys {sorted(inputs)}. Encode the table with "
            "recstack.models.movielens_features (or a FeatureSet producing that key).") from None


class MaskedMeanEmbedding(nn.Module):
    """Mean of token embeddings over real tokens: Keras ``Embedding(mask_zero=True)`` +
    ``GlobalAveragePooling1D``.

    out_b = sum_t [x_bt != 0] E[x_bt] / max(1, sum_t [x_bt != 0])

    Padding (id 0) neither contributes nor counts, so extra padding columns never change
    the result; an all-padding row gives zeros (Keras would give NaN). Input LongTensor
    [B, L] -> [B, d].
    """

    def __init__(self, num_tokens: int, embedding_dim: int, l2: float = 0.0):
        super().__init__()
        self.embedding = Embedding(num_tokens, embedding_dim, l2=l2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.dim() != 2:
            raise ShapeError(f"token ids must be [batch, length]; got shape {tuple(tokens.shape)}.")
        # embedding_bag's mean skips padding_idx in both the sum and the count (and gives
        # zeros for an all-padding bag): the formula above, without a [B, L, d] intermediate.
        return F.embedding_bag(tokens, self.embedding.weight, mode="mean", padding_idx=0)


class _ConfigurableTower(nn.Module):
    """A tower rebuilt from its constructor arguments (``self.config``), so a serving
    bundle can recreate it without user code (see recstack.serving)."""

    config: dict[str, Any]

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (plain JSON); the weights travel in the state_dict."""
        return dict(self.config)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "_ConfigurableTower":
        return cls(**config)


class QueryTower(_ConfigurableTower):
    """User (+ time) query tower: the tutorial's ``QueryModel(UserModel)``.

    features = concat[E_user[user_id] (d), E_time[timestamp_bucket] (d), timestamp_norm (1)]
    output   = MLP(layer_sizes)(features)   (ReLU on all but the last layer)

    Args:
        num_users: user vocabulary size (``StringLookup.vocabulary_size()``, OOV included).
        layer_sizes: widths of the dense layers; empty/None returns the features as they are.
        embedding_dim: width d of each embedding (32 in the tutorial).
        num_timestamp_buckets: ``Discretization.num_buckets()`` (needed with ``use_timestamp``).
        use_timestamp: add the timestamp-bucket embedding and the normalised timestamp.
        activation: hidden-layer activation.
        l2: L2 coefficient on every embedding table and dense kernel.

    Input dict -> [B, layer_sizes[-1]] (or [B, 2d + 1] / [B, d] without layers).
    """

    def __init__(self, num_users: int, layer_sizes: Sequence[int] | None = (32,), embedding_dim: int = 32,
                 num_timestamp_buckets: int | None = None, use_timestamp: bool = True,
                 activation: str = "relu", l2: float = 0.0):
        super().__init__()
        # Constructor arguments as JSON, so a serving bundle can rebuild the tower (get_config).
        self.config = {"num_users": int(num_users), "layer_sizes": [int(x) for x in (layer_sizes or ())],
                       "embedding_dim": int(embedding_dim),
                       "num_timestamp_buckets": None if num_timestamp_buckets is None else int(num_timestamp_buckets),
                       "use_timestamp": bool(use_timestamp), "activation": activation, "l2": float(l2)}
        if use_timestamp and not num_timestamp_buckets:
            raise ConfigError("QueryTower(use_timestamp=True) needs num_timestamp_buckets "
                              "(Discretization.num_buckets()).")
        self.use_timestamp = use_timestamp
        self.user_embedding = Embedding(num_users, embedding_dim, l2=l2)
        self.timestamp_embedding = (Embedding(int(num_timestamp_buckets), embedding_dim, l2=l2)
                                    if use_timestamp else None)
        self.feature_dim = embedding_dim + (embedding_dim + 1 if use_timestamp else 0)
        self.dense_layers = _head(self.feature_dim, layer_sizes, activation, l2)
        self.output_dim = int(layer_sizes[-1]) if layer_sizes else self.feature_dim

    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, feature_dim] concatenated embeddings (the tutorial's ``UserModel``)."""
        parts = [self.user_embedding(_require(inputs, "user_id", "QueryTower"))]
        if self.timestamp_embedding is not None:
            parts.append(self.timestamp_embedding(_require(inputs, "timestamp_bucket", "QueryTower")))
            norm = _require(inputs, "timestamp_norm", "QueryTower")
            parts.append(norm.reshape(-1, 1).to(parts[0].dtype))
        return torch.cat(parts, dim=1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.dense_layers(self.features(inputs))


class CandidateTower(_ConfigurableTower):
    """Movie candidate tower: the tutorial's ``CandidateModel(MovieModel)``.

    features = concat[E_title[title_id] (d), masked-mean E_token[title_tokens] (d)]
    output   = MLP(layer_sizes)(features)

    Args:
        num_titles: title vocabulary size (OOV included).
        layer_sizes: dense widths; empty/None returns the features.
        embedding_dim: width d of each embedding.
        num_tokens: text vocabulary size (``TextVectorization.vocabulary_size()``, padding
            and OOV included); needed with ``use_text``.
        use_text: add the mean title-token embedding.
        activation, l2: as in :class:`QueryTower`.

    Input dict -> [B, layer_sizes[-1]].
    """

    def __init__(self, num_titles: int, layer_sizes: Sequence[int] | None = (32,), embedding_dim: int = 32,
                 num_tokens: int | None = None, use_text: bool = True, activation: str = "relu",
                 l2: float = 0.0):
        super().__init__()
        self.config = {"num_titles": int(num_titles), "layer_sizes": [int(x) for x in (layer_sizes or ())],
                       "embedding_dim": int(embedding_dim), "num_tokens": None if num_tokens is None else int(num_tokens),
                       "use_text": bool(use_text), "activation": activation, "l2": float(l2)}
        if use_text and not num_tokens:
            raise ConfigError("CandidateTower(use_text=True) needs num_tokens "
                              "(TextVectorization.vocabulary_size()).")
        self.title_embedding = Embedding(num_titles, embedding_dim, l2=l2)
        self.title_text_embedding = MaskedMeanEmbedding(int(num_tokens), embedding_dim, l2=l2) if use_text else None
        self.feature_dim = embedding_dim * (2 if use_text else 1)
        self.dense_layers = _head(self.feature_dim, layer_sizes, activation, l2)
        self.output_dim = int(layer_sizes[-1]) if layer_sizes else self.feature_dim

    def features(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """[B, feature_dim] concatenated title and text embeddings (the tutorial's ``MovieModel``)."""
        parts = [self.title_embedding(_require(inputs, "title_id", "CandidateTower"))]
        if self.title_text_embedding is not None:
            parts.append(self.title_text_embedding(_require(inputs, "title_tokens", "CandidateTower")))
        return torch.cat(parts, dim=1)

    def forward(self, inputs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.dense_layers(self.features(inputs))


__all__ = ["CandidateTower", "MaskedMeanEmbedding", "QueryTower"]
