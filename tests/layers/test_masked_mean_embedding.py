"""MaskedMeanEmbedding (the text part of FeatureTower): the masked mean, padding and its gradient."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ShapeError
from recstack.layers import MaskedMeanEmbedding


def title_tokens(b: int = 5, length: int = 4) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    tokens = torch.randint(1, 30, (b, length), generator=g)
    tokens[0, 2:] = 0  # a shorter title, right-padded
    return tokens


def test_masked_mean_matches_numpy_and_ignores_padding() -> None:
    torch.manual_seed(0)
    layer = MaskedMeanEmbedding(30, 6)
    tokens = title_tokens()
    table = layer.embedding.weight.detach().numpy()
    expected = np.stack([table[[t for t in row if t != 0]].mean(axis=0) for row in tokens.tolist()])
    out = layer(tokens)
    np.testing.assert_allclose(out.detach().numpy(), expected, rtol=1e-5, atol=1e-7)
    padded = torch.cat([tokens, torch.zeros(tokens.shape[0], 7, dtype=torch.long)], dim=1)
    torch.testing.assert_close(layer(padded), out)
    # Changing the padding row's embedding changes nothing either.
    with torch.no_grad():
        layer.embedding.weight[0] = 100.0
    torch.testing.assert_close(layer(padded), out)


def test_masked_mean_all_padding_row_is_zero_and_padding_gets_no_gradient() -> None:
    layer = MaskedMeanEmbedding(5, 3)
    out = layer(torch.tensor([[0, 0], [2, 0]]))
    assert torch.equal(out[0], torch.zeros(3))
    out.sum().backward()
    assert torch.equal(layer.embedding.weight.grad[0], torch.zeros(3))


def test_masked_mean_needs_a_batch_of_token_rows() -> None:
    with pytest.raises(ShapeError, match="batch, length"):
        MaskedMeanEmbedding(5, 2)(torch.tensor([1, 2]))
