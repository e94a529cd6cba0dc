"""Per-position item features for sequence encoders, looked up from per-item tables.

A history position holding item i gets

    f(i) = sum_j E_j[cat[i, j]] + mean_{t: text[i, t] != 0} T[text[i, t]]        ([d])

where ``cat`` [V, n_cat] holds the item's categorical codes (vocabulary ids, 0 = unknown) and
``text`` [V, L_text] its token ids (0 = padding), both fitted on the item table by the run's
preprocessing. Pad positions (item 0) get zeros. The tables are persistent buffers, so a saved
run's weights carry them; the embeddings E_j and T are learned with the encoder.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from .embedding import Embedding, MaskedMeanEmbedding
from .tables import fill_table


class ItemSideFeatures(nn.Module):
    """[B, L] item ids -> [B, L, d] embeddings of the items' categorical and text features.

    Args:
        num_items: V, rows of the feature tables (id 0 = padding / unknown).
        embedding_dim: d.
        categorical_sizes: vocabulary size of each categorical column.
        text_vocab_size: token vocabulary size (0: no text feature).
        text_length: token positions per item in the text table.
    """

    def __init__(self, num_items: int, embedding_dim: int, categorical_sizes: Sequence[int] = (),
                 text_vocab_size: int = 0, text_length: int = 0):
        super().__init__()
        self.categorical = nn.ModuleList(Embedding(int(n), embedding_dim) for n in categorical_sizes)
        self.text = MaskedMeanEmbedding(text_vocab_size, embedding_dim) if text_vocab_size else None
        self.register_buffer("categorical_table", torch.zeros(num_items, len(self.categorical), dtype=torch.long))
        self.register_buffer("text_table", torch.zeros(num_items, int(text_length) if text_vocab_size else 0,
                                                       dtype=torch.long))
        self.embedding_dim = int(embedding_dim)

    def set_tables(self, categorical: torch.Tensor | None = None, text: torch.Tensor | None = None) -> None:
        """Fill the per-item tables: categorical [V, n_cat] long, text [V, L_text] long."""
        for name, value in (("categorical_table", categorical), ("text_table", text)):
            if value is not None:
                fill_table(self, name, value)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        ids = items.long()
        out = torch.zeros(*ids.shape, self.embedding_dim, device=ids.device)
        codes = self.categorical_table[ids]                                   # [B, L, n_cat]
        for j, embedding in enumerate(self.categorical):
            out = out + embedding(codes[..., j])
        if self.text is not None:
            tokens = self.text_table[ids]                                     # [B, L, L_text]
            out = out + self.text(tokens.reshape(-1, tokens.shape[-1])).reshape(out.shape)
        return out * (ids != 0).unsqueeze(-1).to(out.dtype)


__all__ = ["ItemSideFeatures"]
