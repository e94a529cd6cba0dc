"""Sequence encoders for next-item retrieval: SASRec-style self-attention and GRU4Rec-style GRU.

Both map item ids ``[B, L]`` (0 = padding, anywhere in the row; the datasets left-pad)
plus optional per-position features to states ``[B, L, d]``, where the state at position
t depends only on the non-pad items at positions <= t (causal) and is 0 at pad positions.
The state at the last real position is the query embedding of the whole history.

Padding is *absent*, not a token: a padded row gives, at its real positions, exactly the
states of the same items without padding. For that the self-attention encoder counts
positions from the first real item (position embedding k for the k-th real item, 1-based)
and masks pad keys, and the recurrent encoder packs each row's real items to the front
before the GRU runs. So a prefix seen in training (every position of a training row) gets
the state a history of that prefix gets at inference.

Input embeddings: ``item_embedding`` (a :class:`~recstack.layers.Embedding` with the pad
row fixed at 0; models may share it as the output table), plus, for every name in
``feature_encoders``, a module mapping the feature's ``[B, L]`` values to ``[B, L, d]``
(an int cardinality builds an embedding table with 0 as padding).
"""

from __future__ import annotations

import math
from typing import Any
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ConfigError, ShapeError
from .dense import make_activation
from .embedding import Embedding

FeatureEncoders = Mapping[str, "nn.Module | int"]


class SequenceInput(nn.Module):
    """Item embeddings plus per-position feature embeddings: ``[B, L]`` -> ``[B, L, d]``.

    Args:
        num_items: item id space V (pad id 0 included).
        embedding_dim: d.
        feature_encoders: {feature name: module ``[B, L] -> [B, L, d]`` or an int
            cardinality (an :class:`Embedding` with ``padding_idx=0``)}; outputs are summed
            into the item embedding.
        init_scale: half-width of the uniform initialiser of the tables.
    """

    def __init__(self, num_items: int, embedding_dim: int, feature_encoders: FeatureEncoders | None = None,
                 init_scale: float = 0.05):
        super().__init__()
        if num_items < 2 or embedding_dim < 1:
            raise ConfigError(f"need num_items >= 2 (pad id 0 plus items) and embedding_dim >= 1; got "
                              f"{num_items}, {embedding_dim}.")
        self.num_items = int(num_items)
        self.embedding_dim = int(embedding_dim)
        self.item_embedding = Embedding(self.num_items, self.embedding_dim, padding_idx=0, init_scale=init_scale)
        encoders = {}
        for name, spec in (feature_encoders or {}).items():
            if isinstance(spec, bool) or not isinstance(spec, (int, nn.Module)):
                raise ConfigError(f"feature encoder {name!r} must be an nn.Module or an int cardinality; got "
                                  f"{type(spec).__name__}.")
            encoders[name] = spec if isinstance(spec, nn.Module) else Embedding(
                int(spec), self.embedding_dim, padding_idx=0, init_scale=init_scale)
        self.feature_encoders = nn.ModuleDict(encoders)

    @staticmethod
    def real_positions(items: torch.Tensor) -> torch.Tensor:
        """[B, L] bool: True where ``items`` holds an item (not the pad id 0)."""
        if items.dim() != 2:
            raise ShapeError(f"item sequences must be [batch, length]; got shape {tuple(items.shape)}.")
        return items != 0

    def forward(self, items: torch.Tensor, features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        self.real_positions(items)
        x = self.item_embedding(items.long())
        missing = [name for name in self.feature_encoders if features is None or name not in features]
        if missing:
            raise ShapeError(f"the encoder needs the per-position features {missing} ([batch, length] each); "
                             f"got {sorted(features or {})}.")
        for name, encoder in self.feature_encoders.items():
            values = features[name]  # type: ignore[index]
            if values.shape != items.shape:
                raise ShapeError(f"feature {name!r} has shape {tuple(values.shape)}; the items have "
                                 f"{tuple(items.shape)}.")
            x = x + encoder(values)
        return x


class _SelfAttentionBlock(nn.Module):
    """One transformer block: multi-head attention + position-wise FFN, pre- or post-LN."""

    def __init__(self, dim: int, num_heads: int, ffn_dim: int, dropout: float, norm_first: bool, activation: str):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_dim), make_activation(activation), nn.Dropout(dropout),
                                 nn.Linear(ffn_dim, dim))
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.attention_dropout = dropout
        self.norm_first = norm_first

    def _attend(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        B, L, d = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed,
                                           dropout_p=self.attention_dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(B, L, d))

    def forward(self, x: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        if self.norm_first:
            x = x + self.dropout(self._attend(self.norm1(x), allowed))
            return x + self.dropout(self.ffn(self.norm2(x)))
        x = self.norm1(x + self.dropout(self._attend(x, allowed)))
        return self.norm2(x + self.dropout(self.ffn(x)))


class _HistoryEncoder(nn.Module):
    """What both encoders share: ``input`` (a :class:`SequenceInput`), the item table, and their
    constructor arguments as JSON (``_config``, None with feature inputs) for the bundle codec."""

    input: SequenceInput
    _config: dict[str, Any] | None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments as JSON (bundles); an encoder with feature inputs has none."""
        if self._config is None:
            raise ConfigError(f"a {type(self).__name__} with per-position feature inputs cannot be saved as a "
                              "serving bundle yet; export a model without item features.")
        return dict(self._config)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "Any":
        """The same architecture (identical state_dict keys and shapes) from :meth:`get_config`."""
        return cls(**dict(config))

    @property
    def item_embedding(self) -> Embedding:
        return self.input.item_embedding


class SASRecEncoder(_HistoryEncoder):
    """Causal self-attention over a history (Kang & McAuley 2018, "SASRec").

    x_t = item_embedding(i_t) * sqrt(d) (if ``scale_embeddings``) + features_t + P[pos_t],
    with pos_t the 1-based rank of position t among the row's real items; then dropout and
    ``num_blocks`` blocks in which position t attends to real positions s <= t (and to
    itself); pre-LN (``norm_first``, plus a final LayerNorm) or post-LN. Pad positions
    output 0.

    Args:
        num_items: item id space V (0 = pad).
        embedding_dim: d (divisible by ``num_heads``).
        max_length: the most real items a row may hold (rows of more raise).
        num_blocks, num_heads: transformer depth and heads.
        dropout: on embeddings, attention weights, FFN and residual branches.
        norm_first: pre-LN (True) or post-LN (False, the original transformer).
        ffn_dim: hidden width of the FFN (default d, as in SASRec).
        activation: FFN activation ("gelu", "relu", ...).
        feature_encoders, init_scale: see :class:`SequenceInput`.

    Input: items [B, L] int, features {name: [B, L]}; output [B, L, d].
    """

    def __init__(self, num_items: int, embedding_dim: int = 64, max_length: int = 50, num_blocks: int = 2,
                 num_heads: int = 1, dropout: float = 0.2, norm_first: bool = True, ffn_dim: int | None = None,
                 activation: str = "gelu", scale_embeddings: bool = True,
                 feature_encoders: FeatureEncoders | None = None, init_scale: float = 0.05):
        super().__init__()
        if num_heads < 1 or embedding_dim % num_heads:
            raise ConfigError(f"embedding_dim ({embedding_dim}) must be divisible by num_heads ({num_heads}).")
        if max_length < 1 or num_blocks < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"need max_length >= 1, num_blocks >= 1 and 0 <= dropout < 1; got {max_length}, "
                              f"{num_blocks}, {dropout}.")
        self.input = SequenceInput(num_items, embedding_dim, feature_encoders, init_scale)
        self.num_items, self.embedding_dim, self.max_length = int(num_items), int(embedding_dim), int(max_length)
        # constructor arguments for get_config (the bundle codec); feature inputs are not serialisable
        self._config = None if feature_encoders else {
            "num_items": self.num_items, "embedding_dim": self.embedding_dim, "max_length": self.max_length,
            "num_blocks": int(num_blocks), "num_heads": int(num_heads), "dropout": float(dropout),
            "norm_first": bool(norm_first), "ffn_dim": None if ffn_dim is None else int(ffn_dim),
            "activation": str(activation), "scale_embeddings": bool(scale_embeddings),
            "init_scale": float(init_scale)}
        self.position_embedding = Embedding(self.max_length + 1, self.embedding_dim, padding_idx=0,
                                            init_scale=init_scale)
        self.scale = math.sqrt(self.embedding_dim) if scale_embeddings else 1.0
        self.dropout = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            _SelfAttentionBlock(self.embedding_dim, num_heads, ffn_dim or self.embedding_dim, dropout, norm_first,
                                activation) for _ in range(num_blocks))
        self.final_norm = nn.LayerNorm(self.embedding_dim) if norm_first else nn.Identity()

    def forward(self, items: torch.Tensor, features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        real = self.input.real_positions(items)                               # [B, L]
        positions = torch.cumsum(real, dim=1) * real
        if positions.numel() and int(positions.max()) > self.max_length:
            raise ShapeError(f"a history holds {int(positions.max())} items but this encoder was built with "
                             f"max_length={self.max_length}; keep the last {self.max_length} items.")
        x = self.input(items, features)
        if self.scale != 1.0:
            x = x * self.scale
        x = self.dropout(x + self.position_embedding(positions))
        L = items.shape[1]
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).tril()
        eye = torch.eye(L, dtype=torch.bool, device=items.device)
        # Attend to real earlier positions; every query also to itself, so that no row of the
        # mask is empty (an all-masked softmax is NaN) - a pad query's output is zeroed below.
        allowed = (causal & (real[:, None, :] | eye))[:, None]               # [B, 1, L, L]
        keep = real[..., None].to(x.dtype)
        for block in self.blocks:
            x = block(x, allowed) * keep
        return self.final_norm(x) * keep


class GRU4RecEncoder(_HistoryEncoder):
    """A recurrent history encoder (Hidasi et al. 2016, "GRU4Rec", as in RecBole's GRU4Rec).

    states = Linear(GRU(dropout(embedding(items) + features))) over the row's real items in
    order, from a zero initial state; pad positions output 0.

    Args:
        num_items: item id space V (0 = pad).
        embedding_dim: d, width of the inputs and of the output states.
        hidden_size: GRU width (default d); a Linear maps it to d.
        num_layers: stacked GRU layers.
        dropout: on the input embeddings (and between GRU layers when num_layers > 1).
        feature_encoders, init_scale: see :class:`SequenceInput`.

    Input: items [B, L] int, features {name: [B, L]}; output [B, L, d].
    """

    def __init__(self, num_items: int, embedding_dim: int = 64, hidden_size: int | None = None,
                 num_layers: int = 1, dropout: float = 0.2, feature_encoders: FeatureEncoders | None = None,
                 init_scale: float = 0.05):
        super().__init__()
        if num_layers < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"need num_layers >= 1 and 0 <= dropout < 1; got {num_layers}, {dropout}.")
        self.input = SequenceInput(num_items, embedding_dim, feature_encoders, init_scale)
        self.num_items, self.embedding_dim = int(num_items), int(embedding_dim)
        hidden = int(hidden_size or embedding_dim)
        self._config = None if feature_encoders else {
            "num_items": self.num_items, "embedding_dim": self.embedding_dim, "hidden_size": hidden,
            "num_layers": int(num_layers), "dropout": float(dropout), "init_scale": float(init_scale)}
        self.dropout = nn.Dropout(dropout)
        self.gru = nn.GRU(self.embedding_dim, hidden, num_layers=num_layers, batch_first=True,
                          dropout=dropout if num_layers > 1 else 0.0)
        self.output = nn.Linear(hidden, self.embedding_dim)

    def forward(self, items: torch.Tensor, features: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        real = self.input.real_positions(items)
        x = self.dropout(self.input(items, features))
        # Move each row's real items to the front (stable, order kept): the GRU then reads them
        # from a zero state, and the pads it reads afterwards cannot affect earlier states.
        order = torch.argsort((~real).to(torch.int8), dim=1, stable=True)          # [B, L]
        packed = x.gather(1, order[..., None].expand_as(x))
        states = self.output(self.gru(packed)[0])
        unpacked = torch.empty_like(states).scatter_(1, order[..., None].expand_as(states), states)
        return unpacked * real[..., None].to(states.dtype)


SequenceEncoder = SASRecEncoder | GRU4RecEncoder

__all__ = ["GRU4RecEncoder", "SASRecEncoder", "SequenceEncoder", "SequenceInput"]
