"""A tiny end-to-end fit: sequential models learn an order-2 pattern that popularity and
item-to-item transitions cannot see."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.datasets.sequences import build_histories, leave_one_out
from recstack.layers.sequence import GRU4RecEncoder, SASRecEncoder
from recstack.models.next_item_eval import evaluate_next_item
from recstack.models.sequential import SequentialRetrieval
from recstack.models.transitions import ItemTransitions, MostPopular

V = 21          # items 1..20


def stepping_users(num_users: int = 240, seed: int = 0):
    """Each user walks the item ring with a fixed step of 1 or 2: the next item is
    last + step, so the last item alone leaves the step (and the next item) a coin flip."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(num_users):
        step, start, length = rng.integers(1, 3), rng.integers(0, V - 1), rng.integers(6, 11)
        walk = (start + step * np.arange(length)) % (V - 1) + 1
        users += [u] * length
        items += walk.tolist()
        times += list(range(length))
    return leave_one_out(build_histories(np.array(users), np.array(items), np.array(times), num_items=V), 8)


@pytest.fixture(scope="module")
def split():
    return stepping_users()


@pytest.fixture(scope="module")
def baselines(split):
    return {cls.__name__: evaluate_next_item(cls(V).fit(split.train_histories), split.test, ks=(1,)).metrics
            for cls in (MostPopular, ItemTransitions)}


@pytest.mark.parametrize("kind, loss", [("sasrec", "softmax"), ("gru4rec", "softmax"), ("sasrec", "sampled"),
                                        ("sasrec", "bce")])
def test_sequential_models_learn_what_baselines_cannot(split, baselines, kind: str, loss: str, one_thread) -> None:
    torch.manual_seed(0)
    encoder = (SASRecEncoder(V, 32, max_length=8, num_blocks=2, num_heads=2, ffn_dim=64, dropout=0.0) if kind == "sasrec"
               else GRU4RecEncoder(V, 32, dropout=0.0))
    model = SequentialRetrieval(encoder, loss=loss, num_negatives=10,
                                candidate_counts=torch.from_numpy(split.train.target_counts(V)))
    model.fit(split.train.columns(), epochs=40, batch_size=32, seed=0, verbose=False,
              optimizer=lambda params: torch.optim.Adam(params, lr=0.005))
    result = evaluate_next_item(model, split.test, ks=(1,)).metrics
    assert baselines["MostPopular"]["hr_at_1"] < 0.2
    assert baselines["ItemTransitions"]["hr_at_1"] < 0.7     # ~ half: the step is invisible to it
    assert result["hr_at_1"] > 0.9, result
    assert result["mrr"] > baselines["ItemTransitions"]["mrr"] + 0.2
