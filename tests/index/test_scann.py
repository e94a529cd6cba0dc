"""ScaNN backend (skipped when the scann package is not installed)."""

import json

import numpy as np
import pytest

pytest.importorskip("scann")

from recstack.index import ScaNN, load_index  # noqa: E402

from .conftest import clustered, numpy_top_k  # noqa: E402


def test_tune_and_round_trip(data, tmp_path):
    ids, x, q = data
    index = ScaNN(num_leaves=40, leaves_to_search=1, reorder=20).build(ids, x)
    record = index.tune(clustered(200, seed=9), target_recall=0.9, k=20)
    assert record["target_met"] and record["recall"] >= 0.9
    index.save(tmp_path / "s")
    assert not list((tmp_path / "s").rglob("*.pkl"))             # no pickled docids
    loaded = load_index(tmp_path / "s")
    assert isinstance(loaded, ScaNN) and loaded.search_params() == index.search_params()
    s1, i1 = index.search(q, k=10)
    s2, i2 = loaded.search(q, k=10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1.numpy(), s2.numpy(), rtol=1e-6)


def test_refuses_a_pickled_docids_file(data, tmp_path):
    ids, x, _ = data
    ScaNN(num_leaves=10).build(ids[:500], x[:500]).save(tmp_path / "s")
    (tmp_path / "s" / "scann" / "scann_docids.pkl").write_bytes(b"\x80\x04N.")
    with pytest.raises(ValueError, match="unpickle"):
        load_index(tmp_path / "s")


def test_remove_mirrors_scann_swap_deletes(data):
    ids, x, q = data
    index = ScaNN(num_leaves=30, leaves_to_search=30, reorder=x.shape[0]).build(ids, x)
    gone = np.concatenate([numpy_top_k(q[:2], x, ids, 4)[0][0], ids[[0, 1, -1]]])
    assert index.remove(gone) == len(np.unique(gone))
    keep = ~np.isin(ids, gone)
    ref, _ = numpy_top_k(q, x[keep], ids[keep], 10)
    np.testing.assert_array_equal(index.search(q, k=10)[1], np.stack(ref))
    np.testing.assert_array_equal(index.vectors(ids[keep][:20]).numpy(), x[keep][:20])
    # add rebuilds and keeps every candidate searchable
    index.add(gone, x[np.searchsorted(ids, gone)])
    index.set_search_params(leaves_to_search=10**6, reorder=x.shape[0])
    ref, _ = numpy_top_k(q, x, ids, 10)
    np.testing.assert_array_equal(index.search(q, k=10)[1], np.stack(ref))


def test_an_unlisted_embeddings_file_changes_nothing(data, tmp_path):
    """ScaNN's re-ordering keeps the vectors (scann/dataset.npy, listed); an embeddings.npy that the
    saved index did not write is not read in their place."""
    ids, x, q = data
    index = ScaNN(num_leaves=10, leaves_to_search=10, reorder=500).build(ids[:500], x[:500])
    index.save(tmp_path / "s")
    files = json.loads((tmp_path / "s" / "index.json").read_text())["files"]
    assert "embeddings.npy" not in files and "scann/dataset.npy" in files
    np.save(tmp_path / "s" / "embeddings.npy", np.zeros_like(x[:500]))
    loaded = load_index(tmp_path / "s")
    np.testing.assert_array_equal(loaded.vectors(ids[:20]).numpy(), x[:20])
    s1, i1 = index.search(q, k=10)
    s2, i2 = loaded.search(q, k=10)
    np.testing.assert_array_equal(i1, i2)
    np.testing.assert_allclose(s1.numpy(), s2.numpy(), rtol=1e-6)
