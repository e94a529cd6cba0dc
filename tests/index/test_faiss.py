"""FaissIVF: MIPS->L2 augmentation, determinism, tuning, persistence, mutation."""

import json

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from recstack.core.errors import ConfigError, DataError, ShapeError  # noqa: E402
from recstack.index import FaissIVF, load_index  # noqa: E402

from .conftest import clustered, numpy_top_k  # noqa: E402


def recall(found, truth):
    return np.mean([np.isin(t, f).mean() for f, t in zip(found, truth)])


def test_builds_are_deterministic(data):
    ids, x, q = data
    a = FaissIVF(nlist=32, nprobe=4, seed=5).build(ids, x)
    b = FaissIVF(nlist=32, nprobe=4, seed=5).build(ids, x)
    sa, ia = a.search(q, k=20)
    sb, ib = b.search(q, k=20)
    np.testing.assert_array_equal(ia, ib)
    assert (faiss.serialize_index(a._index) == faiss.serialize_index(b._index)).all()


def test_augmentation_makes_l2_cells_rank_by_inner_product(data):
    ids, x, q = data
    index = FaissIVF(nlist=32, nprobe=32).build(ids, x)
    assert index.norm_bound == pytest.approx(np.linalg.norm(x, axis=1).max(), rel=1e-6)
    stored = index.vectors(ids[:50]).numpy()
    np.testing.assert_allclose(stored, x[:50], rtol=1e-6)
    # Every augmented vector has norm M.
    aug = index._index.reconstruct_batch(ids[:50])
    np.testing.assert_allclose(np.linalg.norm(aug, axis=1), index.norm_bound, rtol=1e-5)
    ref_ids, _ = numpy_top_k(q, x, ids, 10)
    np.testing.assert_array_equal(index.search(q, k=10)[1], np.stack(ref_ids))


def test_tune_meets_the_target_and_records_measured_recall(data, tmp_path):
    ids, x, q = data
    held_out = clustered(300, seed=7)
    index = FaissIVF(nlist=64, nprobe=1).build(ids, x)
    record = index.tune(held_out, target_recall=0.95, k=50)
    assert record["target_met"] and record["conservative"]
    assert record["recall"] >= record["lower_bound"] >= 0.95
    nprobe = record["params"]["nprobe"]
    assert index.search_params() == {"nprobe": nprobe}
    # Independent check of the recorded recall with numpy ground truth.
    truth, _ = numpy_top_k(held_out, x, ids, 50)
    _, found = index.search(held_out, k=50)
    assert recall(found, truth) == pytest.approx(record["recall"], abs=1e-6)
    # Every cheaper ladder step falls short (the cheapest passing setting was chosen), and
    # the lower bound is mean - 1.645 sd / sqrt(n) of the per-query recalls.
    curve = record["curve"]
    assert all(step["lower_bound"] < 0.95 for step in curve[:-1]) and curve[-1]["params"] == {"nprobe": nprobe}
    per = np.array([np.isin(t, f).mean() for f, t in zip(found, truth)])
    assert record["lower_bound"] == pytest.approx(per.mean() - 1.645 * per.std(ddof=1) / np.sqrt(len(per)), abs=1e-6)
    # Without the margin, a cheaper-or-equal setting is chosen.
    loose = FaissIVF(nlist=64, nprobe=1).build(ids, x).tune(held_out, target_recall=0.95, k=50, conservative=False)
    assert loose["params"]["nprobe"] <= nprobe and loose["recall"] >= 0.95
    index.save(tmp_path / "ivf")
    state = json.loads((tmp_path / "ivf" / "index.json").read_text())
    assert state["metadata"]["recall"]["value"] == record["recall"]
    assert load_index(tmp_path / "ivf").metadata["tuning"]["params"] == {"nprobe": nprobe}


def test_tune_without_queries_uses_a_candidate_sample(data):
    ids, x, _ = data
    index = FaissIVF(nlist=32, nprobe=1).build(ids, x)
    record = index.tune(target_recall=0.9, k=20, max_queries=100)
    assert record["queries"] == "candidate_sample" and record["num_queries"] == 100


def test_save_load_round_trip(data, tmp_path):
    ids, x, q = data
    index = FaissIVF(nlist=32, nprobe=3).build(ids, x)
    index.save(tmp_path / "ivf")
    loaded = load_index(tmp_path / "ivf")
    assert isinstance(loaded, FaissIVF) and not loaded.is_exact and loaded.kind == "faiss_ivf"
    assert loaded.search_params() == {"nprobe": 3} and loaded.norm_bound == index.norm_bound
    s1, i1 = index.search(q, k=15, exclude=[[ids[0]]] * q.shape[0])
    s2, i2 = loaded.search(q, k=15, exclude=[[ids[0]]] * q.shape[0])
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_array_equal(s1.numpy(), s2.numpy())


def test_remove_and_add(data):
    ids, x, q = data
    index = FaissIVF(nlist=32, nprobe=32).build(ids, x)
    gone = numpy_top_k(q[:1], x, ids, 5)[0][0]
    assert index.remove(gone) == 5 and index.num_candidates == x.shape[0] - 5
    _, got = index.search(q[:1], k=10)
    assert not np.isin(got, gone).any()
    # Re-adding them, one with a larger norm than any indexed: M grows, search stays exact.
    new_x = x[np.searchsorted(ids, gone)].copy()
    new_x[0] *= 3.0
    index.tune(q, target_recall=0.5, k=10)
    old_bound = index.norm_bound
    index.add(gone, new_x)
    assert index.norm_bound == pytest.approx(np.linalg.norm(new_x[0]), rel=1e-6) and index.norm_bound > old_bound
    assert index.metadata["tuning"]["stale"] is True
    x2 = x.copy()
    x2[np.searchsorted(ids, gone)] = new_x
    index.set_search_params(nprobe=32)
    ref_ids, _ = numpy_top_k(q, x2, ids, 10)
    np.testing.assert_array_equal(index.search(q, k=10)[1], np.stack(ref_ids))
    # Augmented norms all equal the new M (stored vectors and the re-centred cells).
    aug = index._index.reconstruct_batch(ids[:100])
    np.testing.assert_allclose(np.linalg.norm(aug, axis=1), index.norm_bound, rtol=1e-4)
    with pytest.raises(DataError, match="already indexed"):
        index.add(gone[:1], new_x[:1])


def test_errors(data):
    ids, x, q = data
    with pytest.raises(DataError, match="unique"):
        FaissIVF(nlist=4).build(np.zeros(x.shape[0], dtype=np.int64), x)
    with pytest.raises(ConfigError, match="empty"):
        FaissIVF().search(q, k=3)
    index = FaissIVF(nlist=8).build(ids, x)
    with pytest.raises(ShapeError, match=r"\[B, 12\]"):
        index.search(np.zeros((1, 5), np.float32), k=3)
    with pytest.raises(ConfigError, match="nprobe"):
        index.set_search_params(leaves=3)
    with pytest.raises(ConfigError, match="norm_headroom"):
        FaissIVF(norm_headroom=0.5)
    with pytest.raises(DataError, match="unknown candidate"):
        index.vectors([12345678])
