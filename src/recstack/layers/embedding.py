"""Embedding table with Keras defaults and an optional L2 penalty."""

from __future__ import annotations

import torch
from torch import nn


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
