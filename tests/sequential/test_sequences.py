"""Sequences from an interaction table: ordering, ties, padding, truncation, protocols, sampling.

References are written from the definitions with plain Python loops over a hand-made table.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError, DataError
from recstack.datasets.sampled_negatives import sample_negatives
from recstack.datasets.sequences import (
    build_histories,
    leave_one_out,
    left_pad,
    temporal_split,
    training_sequences,
)

# user, item, timestamp; rows deliberately out of order, with ties (user 7: two at t=5,
# user 3: three at t=1) that must keep table row order.
TABLE = np.array([
    # user item  t
    [7, 4, 5],    # row 0
    [3, 2, 1],    # row 1
    [7, 1, 2],    # row 2
    [3, 5, 1],    # row 3
    [7, 3, 5],    # row 4  (tie with row 0 at t=5: row 0 first)
    [9, 6, 8],    # row 5  (user 9 has a single interaction)
    [3, 1, 0],    # row 6
    [3, 6, 1],    # row 7
    [7, 2, 9],    # row 8
    [3, 4, 3],    # row 9
])
# By hand: user 3: t=0 item 1; t=1 items 2, 5, 6 (rows 1, 3, 7); t=3 item 4.
#          user 7: t=2 item 1; t=5 items 4, 3 (rows 0, 4); t=9 item 2.   user 9: item 6.
EXPECTED = {3: [1, 2, 5, 6, 4], 7: [1, 4, 3, 2], 9: [6]}


def histories(**kwargs):
    return build_histories(TABLE[:, 0], TABLE[:, 1], TABLE[:, 2], **kwargs)


def reference_histories(table: np.ndarray) -> dict[int, list[int]]:
    """Per user, items sorted by (timestamp, row) with Python's stable sort."""
    out: dict[int, list[tuple[float, int, int]]] = {}
    for row, (u, i, t) in enumerate(table):
        out.setdefault(int(u), []).append((float(t), row, int(i)))
    return {u: [i for _, _, i in sorted(v)] for u, v in out.items()}


def ref_pad(items: list[int], length: int) -> list[int]:
    kept = items[-length:] if items else []
    return [0] * (length - len(kept)) + kept


def test_histories_order_by_time_and_break_ties_by_row_order() -> None:
    h = histories()
    assert h.users.tolist() == [3, 7, 9]
    got = {int(u): h.lists.row(r).tolist() for r, u in enumerate(h.users)}
    assert got == EXPECTED == reference_histories(TABLE)
    assert h.indptr.tolist() == [0, 5, 9, 10]
    # timestamps and source rows travel with the items
    assert h.timestamps[:5].tolist() == [0, 1, 1, 1, 3]
    assert h.rows[:5].tolist() == [6, 1, 3, 7, 9]


def test_histories_match_reference_on_a_random_table_with_many_ties() -> None:
    rng = np.random.default_rng(3)
    table = np.stack([rng.integers(0, 40, 2000), rng.integers(1, 50, 2000), rng.integers(0, 6, 2000)], axis=1)
    h = build_histories(torch.from_numpy(table[:, 0]), table[:, 1], table[:, 2].astype(np.float64))
    ref = reference_histories(table)
    assert {int(u): h.lists.row(r).tolist() for r, u in enumerate(h.users)} == ref


def test_features_are_carried_and_padded_with_the_items() -> None:
    genre = TABLE[:, 1] * 10          # a per-interaction feature: item id * 10
    h = histories(features={"genre": genre})
    assert h.padded(3).tolist() == [[5, 6, 4], [4, 3, 2], [0, 0, 6]]
    assert h.padded_features(3)["genre"].tolist() == [[50, 60, 40], [40, 30, 20], [0, 0, 60]]


def test_left_pad_truncates_to_the_most_recent_items() -> None:
    values = np.arange(1, 11)
    out = left_pad(values, np.array([0, 2, 5, 5]), np.array([10, 4, 5, 6]), 4)
    assert out.tolist() == [[7, 8, 9, 10], [0, 0, 3, 4], [0, 0, 0, 0], [0, 0, 0, 6]]


@pytest.mark.parametrize("length", [1, 2, 4, 6])
def test_training_sequences_one_window_are_the_last_steps(length: int) -> None:
    seqs = training_sequences(histories(), length)
    assert seqs.users.tolist() == [3, 7]          # user 9 (one item) has no step
    for row, user in enumerate(seqs.users):
        items = EXPECTED[int(user)]
        assert seqs.inputs[row].tolist() == ref_pad(items[:-1], length)
        assert seqs.targets[row].tolist() == ref_pad(items[1:], length)


def test_training_sequences_all_windows_cover_every_step_once() -> None:
    rng = np.random.default_rng(0)
    table = np.stack([rng.integers(0, 5, 300), rng.integers(1, 30, 300), rng.permutation(300)], axis=1)
    h = build_histories(table[:, 0], table[:, 1], table[:, 2])
    ref = reference_histories(table)
    seqs = training_sequences(h, 7, windows=None)
    for user, items in ref.items():
        rows = np.flatnonzero(seqs.users == user)
        pairs = [(a, b) for r in rows for a, b in zip(seqs.inputs[r], seqs.targets[r]) if a]
        # windows go back in time: reversed, their steps are the user's steps in order
        ordered = [(a, b) for r in rows[::-1] for a, b in zip(seqs.inputs[r], seqs.targets[r]) if a]
        assert ordered == list(zip(items[:-1], items[1:]))
        assert len(pairs) == len(items) - 1
    two = training_sequences(h, 7, windows=2)
    assert np.bincount(np.searchsorted(h.users, two.users)).max() == 2
    assert seqs.num_targets == sum(len(v) - 1 for v in ref.values())


def test_leave_one_out_split_matches_the_definition() -> None:
    rng = np.random.default_rng(1)
    table = np.stack([rng.integers(0, 30, 400), rng.integers(1, 25, 400), rng.integers(0, 50, 400)], axis=1)
    h = build_histories(table[:, 0], table[:, 1], table[:, 2], num_items=25)
    ref = reference_histories(table)
    L = 5
    split = leave_one_out(h, L)
    evaluated = sorted(u for u, items in ref.items() if len(items) >= 3)
    assert split.test.users.tolist() == evaluated == split.validation.users.tolist()
    for row, user in enumerate(evaluated):
        items = ref[user]
        assert split.test.target[row] == items[-1]
        assert split.test.history[row].tolist() == ref_pad(items[:-1], L)
        assert split.validation.target[row] == items[-2]
        assert split.validation.history[row].tolist() == ref_pad(items[:-2], L)
        assert split.test.seen().row(row).tolist() == sorted(set(items[:-1]))
        assert split.validation.seen().row(row).tolist() == sorted(set(items[:-2]))
    train = {int(u): split.train_histories.lists.row(r).tolist() for r, u in enumerate(split.train_histories.users)}
    assert train == {u: (items[:-2] if len(items) >= 3 else items) for u, items in ref.items()}
    # training rows never contain a held-out interaction's step
    for row, user in enumerate(split.train.users):
        assert split.train.targets[row].tolist() == ref_pad(train[int(user)][1:], L)


def test_temporal_split_cuts_at_one_global_time() -> None:
    h = histories()
    split = temporal_split(h, test_start=5, max_length=3)
    assert (split.train_histories.timestamps < 5).all()
    # test targets: each user's first interaction at t >= 5 that has an earlier one
    assert split.test.users.tolist() == [7]          # user 3 has none at t >= 5; user 9's is its first
    assert split.test.target.tolist() == [4] and split.test.history.tolist() == [[0, 0, 1]]
    every = temporal_split(h, test_start=5, max_length=3, targets="all")
    # user 7 at t >= 5: items 4 (row 0), 3 (row 4, tie -> after 4), 2 (t=9)
    assert every.test.target.tolist() == [4, 3, 2]
    assert every.test.history.tolist() == [[0, 0, 1], [0, 1, 4], [1, 4, 3]]
    with_val = temporal_split(h, test_start=5, max_length=3, validation_start=1)
    assert (with_val.train_histories.timestamps < 1).all()
    # validation period [1, 5): user 3's first is item 2 (row 1, after item 1 at t=0)
    assert with_val.validation.users.tolist() == [3] and with_val.validation.target.tolist() == [2]
    assert with_val.test.target.tolist() == [4]


def test_protocol_arguments_are_checked() -> None:
    h = histories()
    with pytest.raises(ConfigError, match="validation_start"):
        temporal_split(h, test_start=5, max_length=3, validation_start=6)
    with pytest.raises(DataError, match="before the cut"):
        temporal_split(h, test_start=-1, max_length=3)
    with pytest.raises(ConfigError, match="max_length"):
        leave_one_out(h, 0)
    with pytest.raises(DataError, match="start at 1"):
        build_histories([0, 1], [0, 3], [1, 2])
    with pytest.raises(DataError, match="integer-encoded"):
        build_histories([0, 1], [1.0, 3.0], [1, 2])
    with pytest.raises(DataError, match="non-finite"):
        build_histories([0, 1], [1, 3], [1.0, np.nan])
    with pytest.raises(DataError, match="num_items"):
        build_histories([0, 1], [1, 9], [1, 2], num_items=9)


# --- sampled protocol ----------------------------------------------------------------------


def loo(num_items: int = 40, users: int = 60, seed: int = 2):
    rng = np.random.default_rng(seed)
    n = users * 12
    table = np.stack([rng.integers(0, users, n), rng.integers(1, num_items, n), rng.integers(0, 100, n)], axis=1)
    return leave_one_out(build_histories(table[:, 0], table[:, 1], table[:, 2]), 8)


def test_sampled_negatives_never_include_the_positive_and_are_distinct() -> None:
    split = loo()
    negatives = sample_negatives(split.test, 40, 30, seed=0, max_cells=100)   # several row chunks
    assert negatives.shape == (split.test.num_rows, 30)
    assert not (negatives == split.test.target[:, None]).any()
    assert not (negatives == 0).any()
    assert all(len(set(row)) == 30 for row in negatives.tolist())
    assert (sample_negatives(split.test, 40, 30, seed=0, max_cells=100) == negatives).all()  # seeded
    assert not (sample_negatives(split.test, 40, 30, seed=1, max_cells=100) == negatives).all()


def test_sampled_negatives_can_exclude_every_history_item() -> None:
    split = loo()
    seen = split.test.seen()
    negatives = sample_negatives(split.test, 40, 5, exclude_seen=True, seed=0)
    assert not seen.isin(negatives).any()
    assert not (negatives == split.test.target[:, None]).any()
    # without the option, history items are drawn (the check above is not vacuous)
    assert seen.isin(sample_negatives(split.test, 40, 5, seed=0)).any()


def test_popularity_negatives_follow_the_weights() -> None:
    split = loo(num_items=6, users=400)
    weights = np.array([0, 1, 1, 1, 1, 96], dtype=float)
    weights_zero = weights.copy()
    weights_zero[3] = 0
    negatives = sample_negatives(split.test, 6, 1, weights=weights_zero, seed=0)
    assert not (negatives == 3).any()                     # weight 0: never drawn
    rows = split.test.target != 5
    share = (sample_negatives(split.test, 6, 1, weights=weights, seed=0)[rows] == 5).mean()
    assert share > 0.85                                  # 96 / 99 of the mass when 5 is not the target


def test_sampled_negatives_refuse_impossible_requests() -> None:
    split = loo(num_items=6)
    with pytest.raises(DataError, match="only"):
        sample_negatives(split.test, 6, 5, seed=0)        # 5 ids minus the target leaves 4
    with pytest.raises(DataError, match="weights"):
        sample_negatives(split.test, 6, 2, weights=[1, 2], seed=0)


def test_targets_after_follow_the_whole_stored_history():
    """Row e's history is its key's stored list (the last L, left-padded); seen() is all of it;
    keys without a list (out of range) have an empty history."""
    from recstack.core.id_lists import IdLists
    from recstack.datasets.sequences import targets_after

    stored = IdLists.from_lists([[], [5, 3, 5, 7], [2]])        # time order, repeats kept
    rows = targets_after(stored, [1, 2, 0, 9], [8, 4, 1, 2], 3, target_timestamps=[1.0, 2.0, 3.0, 4.0])
    assert rows.history.tolist() == [[3, 5, 7], [0, 0, 2], [0, 0, 0], [0, 0, 0]]
    assert rows.target.tolist() == [8, 4, 1, 2] and rows.target_timestamp.tolist() == [1.0, 2.0, 3.0, 4.0]
    seen = rows.seen()
    assert [seen.row(i).tolist() for i in range(4)] == [[3, 5, 7], [2], [], []]
    assert rows.columns()["history"].shape == (4, 3)
