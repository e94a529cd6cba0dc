"""Sequence encoders: causality, padding as absence, features, pre/post-LN, input checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recstack.core.errors import ConfigError, ShapeError
from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder

V, D = 20, 8


def encoders(**kwargs):
    torch.manual_seed(0)
    return [SASRecEncoder(V, D, max_length=6, num_blocks=2, num_heads=2, dropout=0.0, norm_first=True, **kwargs),
            SASRecEncoder(V, D, max_length=6, num_blocks=2, num_heads=2, dropout=0.0, norm_first=False, **kwargs),
            GRU4RecEncoder(V, D, hidden_size=12, num_layers=2, dropout=0.0, **kwargs)]


@pytest.mark.parametrize("encoder", encoders(), ids=["sasrec-pre-ln", "sasrec-post-ln", "gru4rec"])
def test_a_later_item_never_changes_an_earlier_state(encoder: nn.Module) -> None:
    encoder.eval()
    items = torch.tensor([[0, 0, 3, 7, 2, 9], [4, 1, 1, 5, 6, 8]])
    base = encoder(items)
    for t in range(2, 6):
        changed = items.clone()
        changed[:, t] = (changed[:, t] % (V - 1)) + 1      # another real item at position t
        out = encoder(changed)
        torch.testing.assert_close(out[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(out[:, t], base[:, t])    # the change is visible where it happens


@pytest.mark.parametrize("encoder", encoders(), ids=["sasrec-pre-ln", "sasrec-post-ln", "gru4rec"])
def test_padding_is_absence(encoder: nn.Module) -> None:
    """Real positions get the same states with any amount of left padding; pads output 0."""
    encoder.eval()
    short = encoder(torch.tensor([[3, 7, 2]]))
    padded = encoder(torch.tensor([[0, 0, 0, 3, 7, 2]]))
    torch.testing.assert_close(padded[:, 3:], short, rtol=0, atol=1e-5)
    assert padded[:, :3].abs().max() == 0
    # a padded row in a batch with a full row: unchanged by its neighbour
    batch = encoder(torch.tensor([[0, 0, 0, 3, 7, 2], [5, 4, 3, 2, 1, 9]]))
    torch.testing.assert_close(batch[:1], padded, rtol=0, atol=1e-5)
    empty = encoder(torch.zeros(1, 6, dtype=torch.long))
    assert torch.isfinite(empty).all() and empty.abs().max() == 0


def test_training_prefix_states_equal_the_states_of_the_prefix_alone() -> None:
    """What position t learns in training is what a history of t items gets at inference."""
    for encoder in encoders():
        encoder.eval()
        row = torch.tensor([[0, 4, 8, 1, 6, 2]])
        states = encoder(row)
        for t in range(1, 6):
            alone = encoder(torch.cat([torch.zeros(1, 5 - t, dtype=torch.long), row[:, 1:t + 1]], dim=1))
            torch.testing.assert_close(alone[:, -1], states[:, t], rtol=0, atol=1e-5)


def test_features_enter_as_embeddings() -> None:
    for encoder in encoders(feature_encoders={"genre": 5}):
        encoder.eval()
        items = torch.tensor([[0, 3, 7, 2]])
        genre = torch.tensor([[0, 1, 2, 3]])
        base = encoder(items, {"genre": genre})
        other = encoder(items, {"genre": torch.tensor([[0, 1, 4, 3]])})
        torch.testing.assert_close(other[:, :2], base[:, :2], rtol=0, atol=1e-6)   # still causal
        assert not torch.allclose(other[:, 2:], base[:, 2:])
        with pytest.raises(ShapeError, match="genre"):
            encoder(items)


def test_dropout_is_active_in_training_only() -> None:
    encoder = SASRecEncoder(V, D, max_length=4, dropout=0.5)
    items = torch.tensor([[1, 2, 3, 4]])
    encoder.train()
    assert not torch.allclose(encoder(items), encoder(items))
    encoder.eval()
    torch.testing.assert_close(encoder(items), encoder(items))


def test_pre_and_post_layer_norm_are_different_networks() -> None:
    torch.manual_seed(0)
    pre = SASRecEncoder(V, D, max_length=4, dropout=0.0, norm_first=True)
    torch.manual_seed(0)
    post = SASRecEncoder(V, D, max_length=4, dropout=0.0, norm_first=False)
    items = torch.tensor([[1, 2, 3, 4]])
    assert not torch.allclose(pre(items), post(items))
    assert isinstance(pre.final_norm, nn.LayerNorm) and isinstance(post.final_norm, nn.Identity)


def test_encoder_inputs_are_checked() -> None:
    encoder = SASRecEncoder(V, D, max_length=3, dropout=0.0)
    with pytest.raises(ShapeError, match="max_length=3"):
        encoder(torch.tensor([[1, 2, 3, 4]]))
    encoder(torch.tensor([[0, 0, 1, 2, 3]]))      # wider rows are fine while 3 items are real
    with pytest.raises(ShapeError, match="batch, length"):
        encoder(torch.tensor([1, 2, 3]))
    with pytest.raises(ConfigError, match="divisible"):
        SASRecEncoder(V, 10, num_heads=3)
    with pytest.raises(ConfigError, match="cardinality"):
        GRU4RecEncoder(V, D, feature_encoders={"genre": "five"})
