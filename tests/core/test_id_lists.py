"""IdLists, the one per-row id-list type (exported as recstack.Exclusions and recstack.index.RowIds)."""

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.core.errors import DataError, ShapeError
from recstack.core.id_lists import IdLists
from recstack.index import RowIds


def as_lists(lists):
    return [lists.row(i).tolist() for i in range(lists.num_rows)]


def test_the_old_names_are_the_one_type():
    assert Exclusions is IdLists and RowIds is IdLists


def test_from_pairs_dedups_and_sorts_per_key():
    excl = Exclusions.from_pairs(torch.tensor([2, 0, 2, 2, 0]), torch.tensor([9, 4, 1, 9, 3]), num_keys=4)
    assert excl.indptr.tolist() == [0, 2, 2, 4, 4]
    assert excl.indices.tolist() == [3, 4, 1, 9]
    assert excl.num_keys == excl.batch == len(excl) == 4


def test_from_pairs_with_ids_far_apart_does_not_overflow():
    """Keys x id span beyond int64 (e.g. 64-bit hashed ids): a combined-key sort would wrap."""
    big = np.array([2 ** 62, -(2 ** 62), 5], dtype=np.int64)
    lists = IdLists.from_pairs(np.array([3, 3, 0]), big)
    assert as_lists(lists) == [[5], [], [], [-(2 ** 62), 2 ** 62]]


def test_pairs_and_take_for_a_batch_including_unknown_keys():
    excl = Exclusions.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([5, 6, 7]))
    rows, ids = excl.pairs(torch.tensor([1, 7, 0, -1]))
    assert list(zip(rows.tolist(), ids.tolist())) == [(0, 7), (2, 5), (2, 6)]
    assert as_lists(excl.take(np.array([1, 7, 0, -1]))) == [[7], [], [5, 6], []]
    assert as_lists(IdLists.empty(0).take([3, 0])) == [[], []]


def test_row_helpers_take_union_and_same():
    rows = RowIds.from_pairs(np.array([2, 0, 2]), np.array([7, 5, 9]), 3)
    assert rows.indptr.tolist() == [0, 1, 1, 3] and rows.ids.tolist() == [5, 7, 9]
    assert rows.counts.tolist() == [1, 0, 2] and rows.rows.tolist() == [0, 2, 2]
    assert rows.take(np.array([2, 0])).ids.tolist() == [7, 9, 5]
    both = RowIds.concat_rows(rows, RowIds.from_lists([[1], None, [2, 7]]))
    assert as_lists(both) == [[1, 5], [], [2, 7, 9]]
    assert as_lists(IdLists.same([4, 2], 3)) == [[4, 2]] * 3
    with pytest.raises(ShapeError, match="differ in rows"):
        rows.union(IdLists.empty(2))


def test_isin_against_python_sets():
    rng = np.random.default_rng(0)
    lists = IdLists.from_lists([rng.choice(50, size=n, replace=False) for n in (0, 3, 20, 7)])
    values = rng.integers(0, 50, size=(4, 9))
    expected = np.array([[v in set(lists.row(r).tolist()) for v in values[r]] for r in range(4)])
    np.testing.assert_array_equal(lists.isin(values), expected)


def test_state_dict_round_trip_and_torch_save_format():
    excl = Exclusions.from_pairs(torch.tensor([1, 1, 0]), torch.tensor([3, 2, 8]))
    state = excl.state_dict()
    assert set(state) == {"indptr", "indices"} and all(isinstance(v, torch.Tensor) for v in state.values())
    back = IdLists.from_state_dict(state)
    assert as_lists(back) == [[8], [2, 3]]
    assert as_lists(Exclusions(state["indptr"], state["indices"])) == [[8], [2, 3]]   # how run folders load it
    with pytest.raises(DataError, match="'indices' is missing"):
        IdLists.from_state_dict({"indptr": state["indptr"]})


def test_invalid_inputs_say_what_is_wrong():
    with pytest.raises(ShapeError, match="rise from 0"):
        IdLists(np.array([0, 3, 2]), np.arange(2))
    with pytest.raises(ShapeError, match="rise from 0"):
        IdLists(np.array([0, 2]), np.arange(3))
    with pytest.raises(DataError, match="integers"):
        IdLists.from_lists([[1.5]])
    with pytest.raises(ShapeError, match="non-negative"):
        IdLists.from_pairs([-1], [2])
    with pytest.raises(ShapeError, match="num_keys"):
        IdLists.from_pairs([5], [2], num_keys=3)
