import torch

from recstack import Exclusions


def test_from_pairs_dedups_and_sorts_per_key():
    excl = Exclusions.from_pairs(torch.tensor([2, 0, 2, 2, 0]), torch.tensor([9, 4, 1, 9, 3]), num_keys=4)
    assert excl.indptr.tolist() == [0, 2, 2, 4, 4]
    assert excl.indices.tolist() == [3, 4, 1, 9]


def test_pairs_for_a_batch_including_unknown_keys():
    excl = Exclusions.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([5, 6, 7]))
    rows, ids = excl.pairs(torch.tensor([1, 7, 0, -1]))
    assert list(zip(rows.tolist(), ids.tolist())) == [(0, 7), (2, 5), (2, 6)]
