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


def stable_reference(q, x, k, masked=()):
    """Positions of the first k unmasked candidates of a stable descending sort (float64 scores)."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    out = []
    for r in range(q.shape[0]):
        keep = np.array([j for j in range(x.shape[0]) if j not in masked[r]]) if masked else np.arange(x.shape[0])
        out.append(keep[np.argsort(-scores[r, keep], kind="stable")][:k])
    return np.stack(out)


@pytest.mark.parametrize("budget", [1 << 24, 40, 7])
def test_search_serves_ties_in_catalogue_order_whatever_the_tiling(budget):
    rng = np.random.default_rng(0)
    x = rng.integers(-1, 2, size=(60, 2)).astype(np.float32)       # 9 distinct vectors: ties everywhere
    q = rng.integers(-1, 2, size=(12, 2)).astype(np.float32)
    ids = rng.permutation(60) * 2 + 5                                # catalogue position != id order
    index = BruteForce(max_scores_in_memory=budget).build(ids, x)
    masked = [set(rng.choice(60, 10, replace=False).tolist()) for _ in range(12)]
    for k in (1, 4, 25, 60):
        _, got = index.search(q, k=k)
        np.testing.assert_array_equal(got, ids[stable_reference(q, x, k)])
        _, got = index.search(q, k=k, exclude=[ids[sorted(m)].tolist() for m in masked])
        want = stable_reference(q, x, min(k, 50), masked)
        np.testing.assert_array_equal(got[:, :want.shape[1]], ids[want])


def test_added_candidates_follow_the_built_ones_in_tie_order():
    index = BruteForce().build([9, 4], np.ones((2, 1), np.float32))
    index.add([1], np.ones((1, 1), np.float32))
    assert index.search(np.ones((1, 1), np.float32), k=3)[1].tolist() == [[9, 4, 1]]
    assert index.catalogue_positions([1, 9, 4, 77]).tolist() == [2, 0, 1, 3]


def test_count_higher_counts_ties_before_the_positives_catalogue_position():
    x = np.array([[1.0], [2.0], [1.0], [1.0], [0.0]], np.float32)
    index = BruteForce().build([30, 10, 20, 40, 50], x)
    q = np.ones((3, 1), np.float32)
    thresholds = torch.ones(3)
    # Positive 40 (position 3): 2.0 beats it, 30 and 20 tie before it; 30 (position 0): only 2.0;
    # an id not indexed follows every tied entry.
    counts = index.count_higher(q, thresholds, exclude=[[40], [30], []], positive_ids=[40, 30, 99])
    assert counts.tolist() == [3, 1, 4]
    assert index.count_higher(q, thresholds, exclude=[[40], [30], []]).tolist() == [1, 1, 1]


def test_search_refuses_queries_whose_scores_could_overflow():
    # Finite vectors whose float32 inner product overflows: inf or NaN depending on the matmul
    # layout, and torch.topk would rank a NaN first. No order exists, so search says so.
    d = 8
    x = np.concatenate([np.r_[[2.0] * 4, [-2.0] * 4][None], np.eye(d)[:5]]).astype(np.float32)
    index = BruteForce().build(None, x)
    q = np.stack([np.ones(d), np.full(d, 3e38)]).astype(np.float32)
    assert index.overflowing(q).tolist() == [False, True]
    with pytest.raises(DataError, match="queries row 1 .*overflow float32.*diverged model"):
        index.search(q, k=3)
    with pytest.raises(DataError, match="overflow"):
        index.count_higher(q, torch.zeros(2))
    scores, got = index.search(q[:1], k=3)
    assert torch.isfinite(scores).all() and got.tolist() == [[1, 2, 3]]
