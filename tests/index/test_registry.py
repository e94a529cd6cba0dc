"""The one table of index backends: make_index / load_index by registered name, and indexes saved
by the previous layout (tests/index/fixtures/v1_*) still load."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recstack.core.errors import ConfigError
from recstack.index import INDEXES, BruteForce, Index, load_index, make_index

FIXTURES = Path(__file__).parent / "fixtures"


def test_every_backend_is_one_registered_name():
    assert set(INDEXES.names()) >= {"brute_force", "faiss_ivf", "pgvector", "pgvector_hnsw", "scann"}
    for alias, name in [("exact", "brute_force"), ("bruteforce", "brute_force"), ("faiss", "faiss_ivf")]:
        assert INDEXES.canonical(alias) == name
    assert isinstance(make_index("EXACT"), BruteForce) and make_index("exact").kind == "brute_force"


def test_make_index_knows_pgvector():
    pytest.importorskip("psycopg")
    from recstack.index.pgvector_hnsw import PgVectorHNSW
    from recstack.index.pgvector_index import PgVector
    index = make_index("pgvector", dsn="host=127.0.0.1 port=1", table="items")   # no connection yet
    assert type(index) is PgVector and index.kind == "pgvector"
    assert type(make_index("pgvector_hnsw", table="items", ef_search=64)) is PgVectorHNSW


def test_unknown_kind_names_the_closest():
    with pytest.raises(ConfigError, match="faiss_ivf"):
        make_index("faiss_ivv")


def test_saved_kind_is_the_registered_name(tmp_path):
    BruteForce().build(None, np.eye(3, dtype=np.float32)).save(tmp_path / "bf")
    assert json.loads((tmp_path / "bf" / "index.json").read_text())["kind"] == "brute_force"


def test_an_unregistered_subclass_is_not_saved_under_its_parent_name(tmp_path):
    class Mine(BruteForce):
        pass

    with pytest.raises(ConfigError, match="register_index"):
        Mine().build(None, np.eye(3, dtype=np.float32)).save(tmp_path / "mine")


def test_load_of_a_class_checks_the_kind(tmp_path):
    BruteForce().build(None, np.eye(3, dtype=np.float32)).save(tmp_path / "bf")
    assert isinstance(BruteForce.load(tmp_path / "bf"), BruteForce)
    with pytest.raises(ConfigError, match="load_index"):
        Index.load(tmp_path / "bf")


def _fixture_data():
    """What tests/index/fixtures/v1_* were built from (commit 5f154c7, before the index split):
    BruteForce(k=4).index(x, identifiers=titles, candidate_ids=ids) and
    FaissIVF(nlist=4, nprobe=2, seed=0).build(ids, x), then save()."""
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    ids = np.arange(40, dtype=np.int64) * 3 + 1
    return ids, x, np.array([f"item {i}" for i in range(40)])


def test_a_brute_force_index_saved_by_the_previous_layout_loads():
    ids, x, titles = _fixture_data()
    loaded = load_index(FIXTURES / "v1_brute_force")
    assert isinstance(loaded, BruteForce) and loaded.k == 4 and loaded.query_model is None
    q = np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32)
    scores, got = loaded.search(q, exclude=[[ids[0]]] * 5)
    ref = q.astype(np.float64) @ x.T.astype(np.float64)
    ref[:, 0] = -np.inf
    order = np.argsort(-ref, axis=1, kind="stable")[:, :4]
    np.testing.assert_array_equal(got, titles[order])
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(ref, order, 1), rtol=1e-5)


def test_a_faiss_index_saved_by_the_previous_layout_loads():
    pytest.importorskip("faiss")
    from recstack.index import FaissIVF
    ids, x, _ = _fixture_data()
    loaded = load_index(FIXTURES / "v1_faiss_ivf")
    assert isinstance(loaded, FaissIVF) and loaded.search_params() == {"nprobe": 2}
    loaded.set_search_params(nprobe=4)                     # every cell: exact
    q = torch.from_numpy(np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32))
    _, got = loaded.search(q, k=6)
    order = np.argsort(-(q.numpy().astype(np.float64) @ x.T.astype(np.float64)), axis=1, kind="stable")[:, :6]
    np.testing.assert_array_equal(got, ids[order])
