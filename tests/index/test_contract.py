"""The contract every index backend runs (pgvector's tests point ``make`` at their backend too):
exclusions and allow-lists against a numpy reference, and the input checks of build and search."""

import numpy as np
import pytest
import torch

from recstack import Exclusions
from recstack.core.errors import DataError

from .conftest import make, numpy_top_k

KINDS = ["brute_force", "faiss", "scann"]


def assert_same(got_scores, got_ids, ref_ids, ref_scores):
    for r, (ri, rs) in enumerate(zip(ref_ids, ref_scores)):
        n = len(ri)
        np.testing.assert_array_equal(got_ids[r, :n], ri)
        np.testing.assert_allclose(got_scores[r, :n].numpy(), rs, rtol=1e-4, atol=1e-4)
        assert (got_ids[r, n:] == -1).all() and torch.isneginf(got_scores[r, n:]).all()


@pytest.mark.parametrize("kind", KINDS)
def test_exhaustive_search_is_exact(data, kind):
    ids, x, q = data
    scores, got = make(kind, ids, x, exhaustive=True).search(q, k=25)
    assert_same(scores, got, *numpy_top_k(q, x, ids, 25))


@pytest.mark.parametrize("kind", KINDS)
def test_exclusion_lists(data, kind):
    ids, x, q = data
    ref_top, _ = numpy_top_k(q, x, ids, 30)
    # Each row excludes its own 15 best ids plus some unrelated ones.
    exclude = [list(ref_top[r][:15]) + list(ids[r:r + 5]) for r in range(q.shape[0])]
    index = make(kind, ids, x, exhaustive=True)
    scores, got = index.search(q, k=10, exclude=exclude)
    ref = numpy_top_k(q, x, ids, 10, exclude=exclude)
    assert_same(scores, got, *ref)
    for r in range(5):          # single-query requests take the serving fast path
        scores, got = index.search(q[r:r + 1], k=10, exclude=[exclude[r]])
        assert_same(scores, got, [ref[0][r]], [ref[1][r]])


@pytest.mark.parametrize("kind", KINDS)
def test_exclusions_object_with_query_keys(data, kind):
    ids, x, q = data
    q = q[:4]
    excl = Exclusions.from_pairs(torch.tensor([0, 0, 2]), torch.tensor([ids[5], ids[9], ids[100]]))
    keys = torch.tensor([2, 0, 7, 2])
    scores, got = make(kind, ids, x, exhaustive=True).search(q, k=8, exclude=excl, query_keys=keys)
    lists = [[ids[100]], [ids[5], ids[9]], [], [ids[100]]]
    assert_same(scores, got, *numpy_top_k(q, x, ids, 8, exclude=lists))


@pytest.mark.parametrize("kind", KINDS)
def test_allow_lists_are_scored_exactly_even_at_low_recall_settings(data, kind):
    ids, x, q = data
    q = q[:5]
    rng = np.random.default_rng(3)
    allow = [list(rng.choice(ids, 40, replace=False)) for _ in range(4)] + [None]
    exclude = [allow[0][:5], [], [], allow[3][:39], [ids[0]]]
    index = make(kind, ids, x, exhaustive=False)
    scores, got = index.search(q[:4], k=12, allow=allow[:4], exclude=exclude[:4])
    assert_same(scores, got, *numpy_top_k(q[:4], x, ids, 12, exclude=exclude[:4], allow=allow[:4]))
    # A None entry leaves its row unrestricted (only checked for the exact index here).
    if kind == "brute_force":
        scores, got = index.search(q, k=12, allow=allow, exclude=exclude)
        assert_same(scores, got, *numpy_top_k(q, x, ids, 12, exclude=exclude, allow=allow))


@pytest.mark.parametrize("kind", KINDS)
def test_fewer_than_k_remaining_pads_with_minus_one(data, kind):
    ids, x, q = data
    index = make(kind, ids, x, exhaustive=False)
    allow = [list(ids[:3]), list(ids[10:12])]
    scores, got = index.search(q[:2], k=5, allow=allow, exclude=[[ids[1]], []])
    assert_same(scores, got, *numpy_top_k(q[:2], x, ids, 5, exclude=[[ids[1]], []], allow=allow))
    assert (got[0, 2:] == -1).all() and (got[1, 2:] == -1).all()


@pytest.mark.parametrize("kind", ["faiss", "scann"])
def test_ann_still_returns_k_when_probed_cells_are_all_excluded(data, kind):
    """Low-recall setting + excluding the whole neighbourhood: the fallback must still fill k."""
    ids, x, q = data
    index = make(kind, ids, x, exhaustive=False)
    ref_top, _ = numpy_top_k(q[:3], x, ids, 600)
    exclude = [list(r) for r in ref_top]            # the 600 best of each row
    scores, got = index.search(q[:3], k=20, exclude=exclude)
    assert (got >= 0).all()
    for r in range(3):
        assert not np.isin(got[r], exclude[r]).any()
        np.testing.assert_allclose(scores[r].numpy(), x[np.searchsorted(ids, got[r])] @ q[r], rtol=1e-4, atol=1e-4)
        assert (np.diff(scores[r].numpy()) <= 1e-6).all()


@pytest.mark.parametrize("kind", ["faiss", "scann"])
def test_excluding_all_but_a_few_returns_exactly_the_rest(data, kind):
    ids, x, q = data
    index = make(kind, ids, x, exhaustive=False)
    keep = ids[[4, 500, 2999]]
    exclude = [list(np.setdiff1d(ids, keep))]
    scores, got = index.search(q[:1], k=5, exclude=exclude)
    assert_same(scores, got, *numpy_top_k(q[:1], x, ids, 5, exclude=exclude))


@pytest.mark.parametrize("kind", KINDS)
def test_similar_excludes_the_item_itself(data, kind):
    ids, x, q = data
    index = make(kind, ids, x, exhaustive=True)
    items = ids[[0, 17, 2500]]
    scores, got = index.similar(items, k=6)
    pos = np.searchsorted(ids, items)
    assert_same(scores, got, *numpy_top_k(x[pos], x, ids, 6, exclude=[[i] for i in items]))


@pytest.mark.parametrize("kind", KINDS)
def test_build_refuses_non_finite_embeddings_naming_the_first_row(data, kind):
    ids, x, _ = data
    for value in (np.nan, np.inf):
        bad = x.copy()
        bad[7, 3] = value
        bad[20, 0] = value
        with pytest.raises(DataError, match=rf"candidate embeddings row 7 \(id {ids[7]}\) is not finite"):
            make(kind, ids, bad)


@pytest.mark.parametrize("kind", KINDS)
def test_search_refuses_non_finite_queries_naming_the_first_row(data, kind):
    ids, x, q = data
    index = make(kind, ids, x)
    bad = q[:4].copy()
    bad[2, 0] = -np.inf
    with pytest.raises(DataError, match="queries row 2 is not finite"):
        index.search(bad, k=5)
    bad[1, 5] = np.nan
    with pytest.raises(DataError, match="queries row 1 is not finite"):
        index.search(torch.from_numpy(bad), k=5)


@pytest.mark.parametrize("kind", KINDS)
def test_build_refuses_repeated_ids_naming_them(data, kind):
    ids, x, _ = data
    repeated = ids.copy()
    repeated[9] = repeated[4]
    with pytest.raises(DataError, match=rf"id {ids[4]} is at rows \[4, 9\]"):
        make(kind, repeated, x)


@pytest.mark.parametrize("kind", KINDS)
def test_add_refuses_non_finite_vectors_and_known_ids(data, kind):
    ids, x, _ = data
    index = make(kind, ids[:-2], x[:-2])
    bad = x[-2:].copy()
    bad[1, 0] = np.nan
    with pytest.raises(DataError, match="not finite"):
        index.add(ids[-2:], bad)
    with pytest.raises(DataError, match="already indexed"):
        index.add(ids[:1], x[:1])
    assert index.num_candidates == x.shape[0] - 2


# The whole contract, for backends that run it from their own test module (pgvector) ...
CONTRACT = [v for k, v in list(globals().items()) if k.startswith("test_") and callable(v)]
# ... and the checks that hold at any recall (for an ANN without an exhaustive setting, e.g. HNSW).
ANY_RECALL = [test_allow_lists_are_scored_exactly_even_at_low_recall_settings,
              test_fewer_than_k_remaining_pads_with_minus_one,
              test_ann_still_returns_k_when_probed_cells_are_all_excluded,
              test_excluding_all_but_a_few_returns_exactly_the_rest,
              test_build_refuses_non_finite_embeddings_naming_the_first_row,
              test_search_refuses_non_finite_queries_naming_the_first_row,
              test_build_refuses_repeated_ids_naming_them,
              test_add_refuses_non_finite_vectors_and_known_ids]
