"""The history-reading user tower of ``two_tower`` (``model.user_history``): pooling against hand
computations, the stored history table, the target item masked out of its own example's history,
padding ignored, an unseen user's query by hand, and the parameter checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.columns import Columns
from recstack.core.errors import ConfigError
from recstack.core.id_lists import IdLists
from recstack.experiment.config import parse_config
from recstack.experiment.model_kinds import (
    MODEL_KINDS,
    ModelContext,
    TwoTowerParams,
    UserHistoryParams,
    build_two_tower,
    two_tower_history_query,
)
from recstack.experiment.next_item import HistoryScorer
from recstack.layers import HistoryPooling
from recstack.models.tower_codec import tower_config, tower_from_config
from recstack.models.user_history import latest_items_table, padded_latest

NUM_USERS, NUM_ITEMS = 4, 6
# user 1: items 1, 2, 3; user 2: items 2, 4 (and 5, later, past max_length 2... see the table test); user 3: item 5.
USERS = torch.tensor([1, 1, 1, 2, 2, 3])
ITEMS = torch.tensor([1, 2, 3, 2, 4, 5])
TIMES = torch.tensor([10.0, 30.0, 20.0, 5.0, 6.0, 1.0], dtype=torch.float64)


def pooling(kind: str, seed: int = 0) -> HistoryPooling:
    torch.manual_seed(seed)
    layer = HistoryPooling(NUM_ITEMS, 3, kind)
    if layer.query is not None:
        with torch.no_grad():
            layer.query.copy_(torch.tensor([1.5, -2.0, 0.7]))
    return layer


def attention_by_hand(table: np.ndarray, w: np.ndarray, row: list[int]) -> np.ndarray:
    real = [i for i in row if i != 0]
    if not real:
        return np.zeros(table.shape[1])
    e = table[real]
    s = e @ w / np.sqrt(table.shape[1])
    a = np.exp(s - s.max())
    a /= a.sum()
    return a @ e


ROWS = [[1, 2, 0, 3], [0, 0, 0, 0], [2, 2, 0, 0], [0, 5, 0, 0]]


def test_mean_pooling_is_the_mean_of_the_real_items():
    layer = pooling("mean")
    table = layer.embedding.weight.detach().numpy()
    got = layer(torch.tensor(ROWS)).detach().numpy()
    expected = [table[[i for i in r if i]].mean(0) if any(r) else np.zeros(3) for r in ROWS]
    np.testing.assert_allclose(got, np.stack(expected), rtol=1e-6, atol=1e-7)


def test_attention_pooling_by_hand_softmax_over_real_positions():
    layer = pooling("attention")
    table = layer.embedding.weight.detach().numpy().astype(np.float64)
    w = layer.query.detach().numpy().astype(np.float64)
    got = layer(torch.tensor(ROWS)).detach().numpy()
    expected = np.stack([attention_by_hand(table, w, r) for r in ROWS])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-7)
    weights = layer.attention_weights(torch.tensor(ROWS)).detach().numpy()
    np.testing.assert_allclose(weights.sum(1), [1, 0, 1, 1], atol=1e-6)   # the all-pad row weighs nothing
    assert (weights[np.array(ROWS) == 0] == 0).all()


@pytest.mark.parametrize("kind", ["mean", "attention"])
def test_padding_is_ignored_wherever_it_is(kind):
    layer = pooling(kind)
    packed = layer(torch.tensor([[3, 1, 4]]))
    for padded in ([[3, 1, 4, 0, 0, 0]], [[0, 3, 0, 1, 4, 0]], [[0, 0, 0, 0, 3, 1, 4]]):
        torch.testing.assert_close(layer(torch.tensor(padded)), packed)


def test_attention_on_an_all_padding_row_has_finite_gradients():
    layer = pooling("attention")
    layer(torch.tensor([[0, 0], [1, 2]])).sum().backward()
    assert torch.isfinite(layer.embedding.weight.grad).all() and torch.isfinite(layer.query.grad).all()


def test_history_table_keeps_the_latest_items_by_timestamp():
    table = latest_items_table(torch.cat([USERS, torch.tensor([0, 2])]), torch.cat([ITEMS, torch.tensor([4, 0])]),
                               torch.cat([TIMES, torch.tensor([0.0, 99.0], dtype=torch.float64)]), NUM_USERS, 2)
    # latest first; user 0 and item 0 (unknown) left out; user 1's latest two by time are 2 (t=30), 3 (t=20).
    assert table.tolist() == [[0, 0], [2, 3], [4, 2], [5, 0]]
    assert latest_items_table(USERS, ITEMS, None, NUM_USERS, 2).tolist() == [[0, 0], [3, 2], [4, 2], [5, 0]]
    lists = IdLists.from_lists([[1, 2, 3], [], [9, 4]])          # oldest first; 9 is not an item id
    assert padded_latest(lists, 2, NUM_ITEMS).tolist() == [[3, 2], [0, 0], [4, 0]]


def tasks():
    return parse_config({"name": "t", "data": {"interactions": "x.csv"}, "model": {"kind": "two_tower"}}).tasks


def build(history: UserHistoryParams | None, seed: int = 0, **params):
    torch.manual_seed(seed)
    ctx = ModelContext(num_users=NUM_USERS, num_items=NUM_ITEMS, catalogue=torch.arange(1, NUM_ITEMS), tasks=tasks(),
                       train=Columns({"user": USERS, "item": ITEMS, "timestamp": TIMES}))
    return build_two_tower(ctx, TwoTowerParams(embedding_dim=4, user_history=history, **params))


def item_table(model) -> torch.Tensor:
    return model.query_tower.history.embedding.weight


@pytest.mark.parametrize("history", [UserHistoryParams("mean", 3), UserHistoryParams("attention", 3, item_table="own"),
                                     UserHistoryParams("mean", 3, combine="sum")])
def test_the_target_item_is_masked_out_of_its_own_examples_history(history):
    model = build(history)
    if model.query_tower.history.query is not None:
        with torch.no_grad():
            model.query_tower.history.query.normal_()
    batch = {"user": torch.tensor([1, 1]), "item": torch.tensor([2, 1])}   # user 1's history: 1, 2, 3
    before = model.query_embeddings(batch, exclude_target=True).detach().clone()
    with torch.no_grad():
        item_table(model)[2] += 1.0                                          # change item 2 only
    after = model.query_embeddings(batch, exclude_target=True).detach()
    torch.testing.assert_close(after[0], before[0])                          # its own example: unchanged
    assert not torch.allclose(after[1], before[1])                           # another example reads it
    # Outside training (evaluation, serving) the whole history is read.
    unmasked = model.query_embeddings(batch).detach()
    assert torch.allclose(unmasked[0], unmasked[1]) and not torch.allclose(unmasked[0], after[0])


def test_training_loss_masks_the_target_vectorised():
    model = build(UserHistoryParams("attention", 3))
    batch = {"user": USERS, "item": ITEMS, "query_key": USERS}
    loss = model.compute_loss(batch, training=True)
    loss.backward()
    # user 3's only item is its example's target: an empty history, finite gradients.
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    q = model.query_embeddings(batch, exclude_target=True)
    by_row = torch.cat([model.query_tower(USERS[i:i + 1], exclude_items=ITEMS[i:i + 1]) for i in range(len(USERS))])
    torch.testing.assert_close(q, by_row)


def test_an_unseen_user_gets_the_query_computed_by_hand_from_the_weights():
    model = build(UserHistoryParams("mean", 2))
    history = IdLists.from_lists([[1, 3, 4]])                 # oldest first: the latest two, 3 and 4, are read
    got = two_tower_history_query(model, history).detach().numpy()
    tower = model.query_tower
    e_user0 = tower.id_embedding.weight[0].detach().numpy()
    items = model.candidate_tower.id_embedding.weight.detach().numpy()      # shared: the item tower's table
    x = np.concatenate([e_user0, items[[3, 4]].mean(0)])
    w, b = tower.head.weight.detach().numpy(), tower.head.bias.detach().numpy()
    np.testing.assert_allclose(got[0], x @ w.T + b, rtol=1e-5, atol=1e-6)
    assert tower.head.weight.shape == (4, 8)                  # id + history parts -> Dense to d


def test_a_history_only_tower_is_the_same_for_known_and_new_users():
    model = build(UserHistoryParams("mean", 3, use_id=False))
    assert model.query_tower.id_embedding is None and model.query_tower.output_dim == 4
    known = model.user_embeddings(torch.tensor([1]))
    new = two_tower_history_query(model, IdLists.from_lists([[3, 1, 2]]))
    torch.testing.assert_close(known, new)
    torch.testing.assert_close(known[0], item_table(model)[[1, 2, 3]].mean(0))


def test_without_the_option_the_model_is_unchanged_and_scores_users():
    plain, with_none = build(None), build(None)
    assert not plain.reads_histories
    assert set(plain.state_dict()) == set(with_none.state_dict())
    assert not any("history" in key for key in plain.state_dict())
    assert "history_items" not in plain.query_tower.get_config()
    assert not HistoryScorer(plain, MODEL_KINDS.get("two_tower"), NUM_ITEMS).reads_histories
    assert HistoryScorer(build(UserHistoryParams()), MODEL_KINDS.get("two_tower"), NUM_ITEMS).reads_histories


def test_the_history_tower_round_trips_through_the_tower_codec():
    model = build(UserHistoryParams("attention", 3, item_table="shared"))
    tower = model.query_tower
    copy = tower_from_config(tower_config(tower))
    copy.load_state_dict(tower.state_dict())
    ids = torch.tensor([0, 1, 2, 3])
    torch.testing.assert_close(copy(ids), tower(ids))


def test_a_saved_state_reloads_without_the_training_rows():
    model = build(UserHistoryParams("mean", 3))
    torch.manual_seed(1)
    ctx = ModelContext(num_users=NUM_USERS, num_items=NUM_ITEMS, catalogue=torch.arange(1, NUM_ITEMS), tasks=tasks())
    again = build_two_tower(ctx, TwoTowerParams(embedding_dim=4, user_history=UserHistoryParams("mean", 3)))
    assert not again.query_tower.history_table.any()
    again.load_state_dict(model.state_dict())
    torch.testing.assert_close(again.user_embeddings(torch.arange(NUM_USERS)), model.user_embeddings(torch.arange(NUM_USERS)))
    assert again.query_tower.history.embedding is again.candidate_tower.id_embedding   # still shared


def errors_of(model: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config({"name": "t", "data": {"interactions": "x.csv"}, "model": {"kind": "two_tower", **model}})
    return str(info.value)


def test_parameter_errors_are_clear():
    assert "model.user_history.pooling: must be one of 'mean', 'attention'; got 'max'" in \
        errors_of({"user_history": {"pooling": "max"}})
    assert "model.user_history.max_length: must be >= 1, got 0" in errors_of({"user_history": {"max_length": 0}})
    assert "model.user_history.max_length: must be at most" in errors_of({"user_history": {"max_length": 10 ** 6}})
    assert "model.user_history.combine: 'sum' adds the history to the user id embedding, but use_id is false" in \
        errors_of({"user_history": {"use_id": False, "combine": "sum"}})
    assert "model.user_history.item_table: must be one of 'shared', 'own'" in \
        errors_of({"user_history": {"item_table": "mine"}})
    assert "model.user_history.polling: unknown key" in errors_of({"user_history": {"polling": "mean"}})
    parsed = parse_config({"name": "t", "data": {"interactions": "x.csv"},
                           "model": {"kind": "two_tower", "user_history": {"pooling": "attention"}}})
    assert parsed.model.params.user_history == UserHistoryParams(pooling="attention")
