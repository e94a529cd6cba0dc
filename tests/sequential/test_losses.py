"""The three training losses of SequentialRetrieval against direct computations on tiny cases."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recstack.core.errors import ConfigError
from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder
from recstack.models.sequential import SequentialRetrieval, last_positions

V, D = 9, 4
HISTORY = torch.tensor([[0, 0, 3, 5, 2], [1, 4, 4, 6, 8], [0, 0, 0, 0, 7]])
TARGET = torch.tensor([[0, 0, 5, 2, 6], [4, 4, 6, 8, 3], [0, 0, 0, 0, 1]])


def model(loss: str, **kwargs) -> SequentialRetrieval:
    torch.manual_seed(0)
    encoder = SASRecEncoder(V, D, max_length=5, num_blocks=1, dropout=0.0)
    return SequentialRetrieval(encoder, loss=loss, **kwargs)


def positions(m: SequentialRetrieval) -> tuple[torch.Tensor, torch.Tensor]:
    """The queries and targets of every real position, computed outside compute_loss."""
    states = m.encoder(HISTORY)
    valid = TARGET > 0
    return states[valid], TARGET[valid]


@pytest.mark.parametrize("temperature", [None, 0.5])
def test_full_softmax_is_cross_entropy_over_items_1_to_v(temperature: float | None) -> None:
    m = model("softmax", temperature=temperature)
    loss = m.compute_loss({"history": HISTORY, "target": TARGET}, training=True)
    loss.backward()
    got = m.encoder.item_embedding.weight.grad.clone()
    m.zero_grad()
    q, t = positions(m)
    logits = q @ m.encoder.item_embedding.weight[1:].T / (temperature or 1.0)
    ref = F.cross_entropy(logits, t - 1)
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(got, m.encoder.item_embedding.weight.grad)


def test_evaluation_batches_score_the_held_out_item_of_the_last_position() -> None:
    m = model("softmax")
    held_out = torch.tensor([4, 1, 2])
    loss = m.compute_loss({"history": HISTORY, "target": held_out})
    q = m.encoder(HISTORY)[:, -1]
    torch.testing.assert_close(loss, F.cross_entropy(q @ m.encoder.item_embedding.weight[1:].T, held_out - 1))


def test_sampled_softmax_equals_the_expanded_batch_with_logq_and_hit_masking() -> None:
    counts = torch.tensor([0, 5, 1, 2, 3, 4, 1, 2, 6], dtype=torch.float64)
    weights = torch.tensor([0, 1, 1, 1, 1, 1, 1, 1, 4], dtype=torch.float64)
    m = model("sampled", num_negatives=4, candidate_counts=counts, negative_weights=weights, temperature=0.7)
    sampled = torch.tensor([8, 5, 8, 3])          # repeats and accidental hits on purpose
    m._draw = lambda shape, device: sampled       # fixed draws: the reference needs the same ones
    loss = m.compute_loss({"history": HISTORY, "target": TARGET}, training=True)

    q, t = positions(m)
    n, S = t.shape[0], sampled.shape[0]
    ids = torch.cat([t, sampled])                 # every copy is its own column
    p = counts / counts[1:].sum()
    u = weights / weights[1:].sum()
    q_prob = (n * p[ids] + S * u[ids]) / (n + S)
    logits = (q @ m.encoder.item_embedding.weight[ids].T) / 0.7 - torch.log(q_prob).float()
    hit = (ids[None, :] == t[:, None])
    hit[torch.arange(n), torch.arange(n)] = False  # a row's own copy stays
    logits = logits.masked_fill(hit, float("-inf"))
    ref = (torch.logsumexp(logits, dim=1) - logits[torch.arange(n), torch.arange(n)]).mean()
    torch.testing.assert_close(loss, ref)


def test_sampled_softmax_without_counts_corrects_only_the_sampled_part() -> None:
    m = model("sampled", num_negatives=3)
    sampled = torch.tensor([2, 7, 7])
    m._draw = lambda shape, device: sampled
    loss = m.compute_loss({"history": HISTORY, "target": TARGET}, training=True)
    q, t = positions(m)
    n, S = t.shape[0], 3
    ids = torch.cat([t, sampled])
    q_prob = (S * torch.full((ids.shape[0],), 1.0 / (V - 1))) / (n + S)
    logits = q @ m.encoder.item_embedding.weight[ids].T - torch.log(q_prob)
    hit = ids[None, :] == t[:, None]
    hit[torch.arange(n), torch.arange(n)] = False
    logits = logits.masked_fill(hit, float("-inf"))
    ref = (torch.logsumexp(logits, 1) - logits.diagonal()).mean()
    torch.testing.assert_close(loss, ref)


def test_binary_loss_is_sasrecs_with_one_negative_per_position() -> None:
    m = model("bce")
    q, t = positions(m)
    negatives = torch.tensor([1, 1, 1, 1, 1, 1, 1, 1, 2])
    assert not (negatives == t).any()
    m._draw = lambda shape, device: negatives
    loss = m.compute_loss({"history": HISTORY, "target": TARGET}, training=True)
    table = m.encoder.item_embedding.weight
    pos = torch.sigmoid((q * table[t]).sum(1))
    neg = torch.sigmoid((q * table[negatives]).sum(1))
    ref = -(torch.log(pos) + torch.log(1 - neg)).mean()
    torch.testing.assert_close(loss, ref)


def test_binary_negatives_never_equal_their_target() -> None:
    encoder = GRU4RecEncoder(3, D, dropout=0.0)          # items 1, 2: a clash half of the time
    m = SequentialRetrieval(encoder, loss="bce", seed=3)
    targets = torch.tensor([1, 2] * 500)
    first = m._draw((1000,), targets.device)
    assert (first == targets).any()                     # without the redraws there would be clashes
    negatives = m.binary_negatives(targets)
    assert not (negatives == targets).any()
    assert set(negatives.tolist()) == {1, 2}


def test_separate_output_table_and_query_of_the_last_real_item() -> None:
    torch.manual_seed(0)
    m = SequentialRetrieval(GRU4RecEncoder(V, D, dropout=0.0), share_embeddings=False)
    assert m.item_table is not m.encoder.item_embedding
    m.eval()
    rows = torch.tensor([[0, 0, 3, 4], [3, 4, 0, 0]])     # left- and right-padded: same last item
    assert last_positions(rows).tolist() == [3, 1]
    q = m.query_embeddings(rows)
    torch.testing.assert_close(q[0], q[1])
    torch.testing.assert_close(m.score_items(rows), q @ m.item_table.weight.T)
    assert m.catalogue_ids().tolist() == list(range(1, V))


def test_model_arguments_are_checked() -> None:
    encoder = SASRecEncoder(V, D, max_length=5)
    with pytest.raises(ConfigError, match="num_negatives"):
        SequentialRetrieval(encoder, loss="sampled")
    with pytest.raises(ConfigError, match="loss must be"):
        SequentialRetrieval(encoder, loss="hinge")
    with pytest.raises(ConfigError, match="negative_weights"):
        SequentialRetrieval(encoder, loss="bce", negative_weights=torch.ones(3))


def test_fit_with_validation_sequences_and_a_weights_round_trip(tmp_path) -> None:
    import numpy as np

    from recstack.datasets.sequences import build_histories, leave_one_out

    rng = np.random.default_rng(0)
    table = np.stack([rng.integers(0, 20, 200), rng.integers(1, V, 200), rng.integers(0, 50, 200)], axis=1)
    split = leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2], num_items=V), 5)
    m = model("softmax")
    history = m.fit(split.train.columns(), epochs=2, batch_size=8, seed=0, verbose=False,
                    validation_data=split.validation.columns(),
                    optimizer=lambda params: torch.optim.Adam(params, lr=0.01))
    assert np.isfinite(history.last()["val_loss"])
    m.save_weights(tmp_path / "w.pt")
    again = model("softmax")
    again.load_weights(tmp_path / "w.pt")
    m.eval()
    again.eval()
    torch.testing.assert_close(again.score_items(HISTORY), m.score_items(HISTORY))
