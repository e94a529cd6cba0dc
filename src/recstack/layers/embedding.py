"""Embedding tables with Keras defaults, an optional L2 penalty and ids checked with a clear error;
the masked mean of token embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import IdDtypeError, IdOutOfRangeError, ShapeError


def check_lookup_ids(ids: torch.Tensor, num_rows: int, what: str = "the embedding") -> None:
    """Raise IdDtypeError / IdOutOfRangeError unless ``ids`` are integers in ``[0, num_rows)``.

    Reads the ids' min and max (a host sync on an accelerator): call it where a lookup failed,
    or before a lookup whose failure could not be caught (CUDA).
    """
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise IdDtypeError(
            f"{what} looks rows up by integer id but got a {str(ids.dtype).replace('torch.', '')} tensor: ids "
            "must be an integer tensor (torch.long). Encode raw ids with recstack.features.StringLookup or "
            "IntegerLookup (or call .long() if the values already are row numbers).")
    if ids.numel() == 0:
        return
    low, high = (int(v) for v in torch.aminmax(ids))
    if low < 0 or high >= num_rows:
        bad = high if high >= num_rows else low
        raise IdOutOfRangeError(
            f"{what} has {num_rows} rows (vocabulary size {num_rows}) but got id {bad} (ids in this batch span "
            f"[{low}, {high}]); ids must lie in [0, {num_rows}). Encode the column with the lookup fitted for this "
            "model (ids past its vocabulary_size() come from another vocabulary), or size the table with "
            "num_embeddings = lookup.vocabulary_size().")


class Embedding(nn.Embedding):
    """``nn.Embedding`` initialised like Keras (uniform(-0.05, 0.05)), with optional L2.

    Args:
        num_embeddings: table rows (vocabulary size, OOV row included).
        embedding_dim: output width d.
        l2: penalty coefficient; :meth:`regularization_loss` = l2 * sum(W ** 2),
            over the whole table like a Keras ``embeddings_regularizer``.
        init_scale: half-width of the uniform initialiser.

    Input [...] int64 -> output [..., d]. Float ids raise IdDtypeError and ids outside
    ``[0, num_embeddings)`` raise IdOutOfRangeError (both say what to do) instead of torch's
    RuntimeError / IndexError. On the CPU the range check costs nothing (torch's IndexError is
    translated); on other devices, where a bad index is a device-side assert that poisons the
    process, the ids' min and max are read before the lookup (one host sync per call) unless
    ``check_ids_on_device`` is False.
    """

    #: Read min/max of the ids before a lookup on an accelerator (see the class docstring).
    check_ids_on_device: bool = True

    def __init__(self, num_embeddings: int, embedding_dim: int, l2: float = 0.0,
                 init_scale: float = 0.05, **kwargs):
        self.init_scale = init_scale
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.l2 = float(l2)

    def reset_parameters(self) -> None:
        nn.init.uniform_(self.weight, -self.init_scale, self.init_scale)
        self._fill_padding_idx_with_zero()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            check_lookup_ids(ids, self.num_embeddings)
        if ids.device.type != "cpu" and self.check_ids_on_device:
            check_lookup_ids(ids, self.num_embeddings)
        try:
            return super().forward(ids)
        except IndexError:
            check_lookup_ids(ids, self.num_embeddings)
            raise

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
