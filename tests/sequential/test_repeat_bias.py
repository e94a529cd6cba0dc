"""The learned repeat offset of SequentialRetrieval against a per-position computation by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.layers.sequence import SASRecEncoder
from recstack.models.sequential import SequentialRetrieval

V, D = 9, 4
HISTORY = torch.tensor([[0, 0, 3, 5, 2], [1, 4, 4, 6, 8], [0, 0, 0, 0, 7]])
TARGET = torch.tensor([[0, 0, 5, 2, 3], [4, 4, 6, 8, 1], [0, 0, 0, 0, 7]])   # 3, 4, 1, 7: repeats


def model(bias: float, temperature: float | None = None) -> SequentialRetrieval:
    torch.manual_seed(0)
    m = SequentialRetrieval(SASRecEncoder(V, D, max_length=5, num_blocks=1, dropout=0.0), loss="softmax",
                            repeat_bias=True, temperature=temperature)
    with torch.no_grad():
        m.repeat_bias.fill_(bias)
    return m


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_training_loss_offsets_exactly_the_items_each_position_has_read(temperature: float | None) -> None:
    m = model(-1.5, temperature)
    loss = m.compute_loss({"history": HISTORY, "target": TARGET}, training=True)
    states = m.encoder(HISTORY).detach().numpy().astype(np.float64)
    table = m.encoder.item_embedding.weight.detach().numpy().astype(np.float64)
    terms = []
    for b in range(HISTORY.shape[0]):
        for t in range(HISTORY.shape[1]):
            y = int(TARGET[b, t])
            if y == 0:
                continue
            read = {int(x) for x in HISTORY[b, : t + 1] if int(x) != 0}
            logits = np.array([states[b, t] @ table[j] + (-1.5 if j in read else 0.0) for j in range(1, V)])
            logits /= temperature or 1.0
            terms.append(np.log(np.exp(logits).sum()) - logits[y - 1])
    assert float(loss.detach()) == pytest.approx(float(np.mean(terms)), rel=1e-5)


def test_the_offset_gets_the_gradient_of_the_history_items_logits() -> None:
    m = model(0.0)
    m.compute_loss({"history": HISTORY, "target": TARGET}, training=True).backward()
    assert m.repeat_bias.grad is not None and math.isfinite(float(m.repeat_bias.grad))
    assert float(m.repeat_bias.grad) != 0.0


def test_scores_add_the_offset_to_the_given_history_only() -> None:
    m = model(-2.0)
    history = torch.tensor([[0, 3, 5, 3], [0, 0, 0, 7]])
    scores = m.score_items(history)
    plain = (m.query_embeddings(history) @ m.encoder.item_embedding.weight.T).detach()
    offset = torch.zeros(2, V)
    offset[0, [3, 5]] = -2.0                     # item 3 twice: one offset
    offset[1, 7] = -2.0
    torch.testing.assert_close(scores.detach(), plain + offset)


def test_a_strongly_negative_offset_ranks_the_history_last() -> None:
    m = model(-1e4)
    history = torch.tensor([[0, 2, 6, 1]])
    order = torch.argsort(m.score_items(history)[0, 1:], descending=True) + 1
    assert set(order[-3:].tolist()) == {1, 2, 6}


def test_training_on_data_without_repeats_learns_a_negative_offset() -> None:
    torch.manual_seed(1)
    rng = np.random.default_rng(0)
    rows = torch.from_numpy(np.stack([rng.permutation(np.arange(1, 41))[:12] for _ in range(64)]))
    m = SequentialRetrieval(SASRecEncoder(41, 8, max_length=11, num_blocks=1, dropout=0.0), loss="softmax",
                            repeat_bias=True)
    optimizer = torch.optim.Adam(m.parameters(), lr=0.05)
    for _ in range(30):
        optimizer.zero_grad()
        m.compute_loss({"history": rows[:, :-1], "target": rows[:, 1:]}, training=True).backward()
        optimizer.step()
    assert float(m.repeat_bias.detach()) < -0.5


@pytest.mark.parametrize("loss", ["sampled", "bce"])
def test_the_offset_needs_the_full_softmax(loss: str) -> None:
    with pytest.raises(ConfigError, match="repeat_bias needs loss='softmax'"):
        SequentialRetrieval(SASRecEncoder(V, D, max_length=5), loss=loss, num_negatives=3, repeat_bias=True)
