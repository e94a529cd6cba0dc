"""Embedding tables with Keras defaults and an optional L2 penalty; the masked mean of token embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import ShapeError


class Embedding(nn.Embedding):
    """``nn.Embedding`` initialised like Keras (uniform(-0.05, 0.05)), with optional L2.

    Args:
        num_embeddings: table rows (vocabulary size, OOV row included).
        embedding_dim: output width d.
        l2: penalty coefficient; :meth:`regularization_loss` = l2 * sum(W ** 2),
            over the whole table like a Keras ``embeddings_regularizer``.
        init_scale: half-width of the uniform initialiser.

    Input [...] int64 -> output [..., d].
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, l2: float = 0.0,
                 init_scale: float = 0.05, **kwargs):
        self.init_scale = init_scale
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.l2 = float(l2)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.init_scale, self.init_scale)
        self._fill_padding_idx_with_zero()

    def regularization_loss(self) -> torch.Tensor:
        if self.l2 == 0.0:
            return self.weight.new_zeros(())
        return self.l2 * self.weight.pow(2).sum()


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
