"""Shared data and a numpy reference for the index tests."""

import numpy as np
import pytest

from recstack.index import BruteForce


def clustered(n=3000, d=12, clusters=20, seed=0):
    """Clustered vectors with varied norms (as in recommender embeddings)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(clusters, d)) * 2
    x = centers[rng.integers(0, clusters, n)] + rng.normal(size=(n, d))
    x *= np.exp(0.3 * rng.normal(size=(n, 1)))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = clustered()
    ids = (np.arange(x.shape[0]) * 7 + 3).astype(np.int64)          # non-positional ids
    q = clustered(40, seed=1)
    return ids, x, q


def numpy_top_k(q, x, ids, k, exclude=None, allow=None):
    """Reference: float64 scores, masked, argsort; returns per-row lists (ids, scores)."""
    scores = q.astype(np.float64) @ x.astype(np.float64).T
    out_ids, out_scores = [], []
    for r in range(q.shape[0]):
        ok = np.ones(x.shape[0], dtype=bool)
        if exclude is not None:
            ok &= ~np.isin(ids, list(exclude[r]))
        if allow is not None and allow[r] is not None:
            ok &= np.isin(ids, list(allow[r]))
        idx = np.flatnonzero(ok)
        order = idx[np.argsort(-scores[r, idx], kind="stable")][:k]
        out_ids.append(ids[order])
        out_scores.append(scores[r, order])
    return out_ids, out_scores


def make(kind, ids, x, exhaustive=False):
    """A built index of ``kind``; ``exhaustive`` sets the ANN search to scan everything."""
    if kind == "brute_force":
        return BruteForce().build(ids, x)
    if kind == "faiss":
        pytest.importorskip("faiss")
        from recstack.index import FaissIVF
        index = FaissIVF(nlist=32, nprobe=2, seed=0).build(ids, x)
        if exhaustive:
            index.set_search_params(nprobe=32)
        return index
    pytest.importorskip("scann")
    from recstack.index import ScaNN
    index = ScaNN(num_leaves=30, leaves_to_search=2, reorder=50).build(ids, x)
    if exhaustive:
        index.set_search_params(leaves_to_search=30, reorder=x.shape[0])
    return index
