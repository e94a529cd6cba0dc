"""Most-popular and item-to-item transition baselines against hand counts."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch

from recstack.core.errors import NotFittedError
from recstack.datasets.sequences import build_histories
from recstack.models.transitions import ItemTransitions, MostPopular

V = 7
# user 0: 1 2 3 2 3; user 1: 2 3 4; user 2: 5   (the last item of user 0 and the first of
# user 1 are adjacent in the CSR arrays, but 3 -> 2 across users must not be counted)
USERS = np.array([0, 0, 0, 0, 0, 1, 1, 1, 2])
ITEMS = np.array([1, 2, 3, 2, 3, 2, 3, 4, 5])
TIMES = np.arange(9)


def fitted(cls):
    return cls(V).fit(build_histories(USERS, ITEMS, TIMES))


def test_transition_counts_are_consecutive_pairs_within_a_user() -> None:
    model = fitted(ItemTransitions)
    expected = Counter()
    for u in np.unique(USERS):
        seq = ITEMS[USERS == u]
        expected.update(zip(seq[:-1].tolist(), seq[1:].tolist()))
    got = {(a, b): c for a in range(V) for b, c in model.transition_counts(a).items()}
    assert got == dict(expected) == {(1, 2): 1, (2, 3): 3, (3, 2): 1, (3, 4): 1}
    assert model.num_transitions == 4


def test_transition_scores_rank_by_count_then_popularity_then_id() -> None:
    model = fitted(ItemTransitions)
    histories = torch.tensor([[0, 1, 3], [0, 0, 6], [0, 0, 0]])   # last items 3, 6 (never followed), none
    scores = model.score_items(histories)
    order = lambda row: torch.argsort(scores[row, 1:], descending=True).add(1).tolist()
    # after 3: items 2 and 4 once each -> 2 (3 interactions) before 4 (1); then popularity: 3 (3), 1, 5 (1 each,
    # lower id first), 6 (0)
    assert order(0) == [2, 4, 3, 1, 5, 6]
    assert order(1) == order(2) == [2, 3, 1, 4, 5, 6]            # pure popularity back-off
    pop = fitted(MostPopular).score_items(histories)
    assert torch.argsort(pop[0, 1:], descending=True).add(1).tolist() == [2, 3, 1, 4, 5, 6]
    assert len(set(scores[0, 1:].tolist())) == V - 1               # no ties


def test_popularity_is_a_dot_product_model() -> None:
    model = fitted(MostPopular)
    items = torch.arange(1, V)
    q = model.query_embeddings(torch.zeros(2, 3, dtype=torch.long))
    torch.testing.assert_close(q @ model.item_embeddings(items).T, model.score_items(torch.zeros(2, 3))[:, 1:])
    counts = np.bincount(ITEMS, minlength=V)
    assert np.array_equal(np.floor(model.scores.numpy()), counts)


@pytest.mark.parametrize("cls", [MostPopular, ItemTransitions])
def test_baselines_need_fitting(cls) -> None:
    with pytest.raises(NotFittedError, match="fit"):
        cls(V).score_items(torch.zeros(1, 2, dtype=torch.long))
