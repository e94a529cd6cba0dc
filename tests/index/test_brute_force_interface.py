"""BruteForce through the common Index interface: build, save/load, mutation, counts."""

import numpy as np
import pytest
import torch

from recstack.core.errors import DataError
from recstack.index import BruteForce, Index, load_index, make_index

from .conftest import numpy_top_k


def test_build_search_and_interface(data):
    ids, x, q = data
    index = make_index("exact").build(ids, x)
    assert isinstance(index, Index) and index.is_exact and index.kind == "brute_force"
    assert index.num_candidates == x.shape[0] and index.dimension == x.shape[1]
    scores, got = index.search(torch.from_numpy(q), k=7)
    ref_ids, ref_scores = numpy_top_k(q, x, ids, 7)
    np.testing.assert_array_equal(got, np.stack(ref_ids))
    np.testing.assert_allclose(scores.numpy(), np.stack(ref_scores), rtol=1e-5)
    np.testing.assert_array_equal(index.candidate_ids(), np.sort(ids))
    np.testing.assert_array_equal(index.vectors(ids[[5, 2]]).numpy(), x[[5, 2]])


def test_chunked_search_matches_one_chunk(data):
    ids, x, q = data
    one = BruteForce().build(ids, x).search(q, k=9)
    many = BruteForce(max_scores_in_memory=4000).build(ids, x).search(q, k=9)
    np.testing.assert_array_equal(one[1], many[1])
    np.testing.assert_array_equal(one[0].numpy(), many[0].numpy())


def test_save_load_with_string_identifiers(tmp_path):
    x = np.eye(4, dtype=np.float32)
    index = BruteForce(k=2).build(torch.tensor([10, 11, 12, 13]), torch.from_numpy(x),
                                  identifiers=np.array(["a", "b", "c", "d"], dtype=object))
    index.save(tmp_path / "bf")
    loaded = load_index(tmp_path / "bf")
    _, got = loaded.search(torch.eye(4)[[2]], exclude=[[12]])
    assert got[0, 0] != "c" and loaded.k == 2
    _, got = loaded.search(torch.eye(4)[[2]])
    assert got[0, 0] == "c"


def test_remove_add_and_count_higher(data):
    ids, x, q = data
    index = BruteForce().build(ids, x)
    top = numpy_top_k(q[:1], x, ids, 3)[0][0]
    assert index.remove(top) == 3
    assert not np.isin(index.search(q[:1], k=10)[1], top).any()
    index.add(top, x[np.searchsorted(ids, top)])
    np.testing.assert_array_equal(index.search(q[:1], k=3)[1][0], top)
    # Thresholds between candidate scores, so float32 vs float64 rounding cannot flip a count.
    thresholds = torch.tensor([float(q[0] @ x[5]) + 1e-3, float(q[1] @ x[6]) - 1e-3])
    counts = index.count_higher(q[:2], thresholds, exclude=[[ids[9]], []])
    scores = q[:2].astype(np.float64) @ x.T.astype(np.float64)
    scores[0, 9] = -np.inf
    assert counts.tolist() == (scores > thresholds.numpy()[:, None].astype(np.float64)).sum(1).tolist()
    with pytest.raises(DataError, match="unknown"):
        index.vectors([-5])
