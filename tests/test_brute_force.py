"""BruteForce vs numpy argsort, with exclusions and allow-lists; its one builder; its saved query model."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from recstack import BruteForce, Exclusions
from recstack.core.errors import ConfigError, ShapeError
from recstack.features import StringLookup
from recstack.index import load_index, register_query_layer
from recstack.layers import MLP, Embedding


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    return rng.normal(size=(50, 6)).astype(np.float32), rng.normal(size=(4, 6)).astype(np.float32)


def numpy_top_k(q, cand, k, masked=None):
    scores = q @ cand.T
    if masked is not None:
        for i, items in enumerate(masked):
            scores[i, list(items)] = -np.inf
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, 1), order


@pytest.mark.parametrize("budget", [1 << 24, 40])     # one chunk, many chunks
def test_exact_top_k(setup, budget):
    cand, q = setup
    index = BruteForce(k=7, max_scores_in_memory=budget).build(None, cand)
    scores, ids = index.search(torch.tensor(q))
    ref_scores, ref_ids = numpy_top_k(q, cand, 7)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores.numpy(), ref_scores, rtol=1e-5)


def test_identifiers_and_exclusion_lists(setup):
    cand, q = setup
    titles = np.array([f"movie {i}" for i in range(50)])
    index = BruteForce().build(None, torch.tensor(cand), identifiers=titles)
    masked = [[1, 2, 3], [], [10, 11], [0]]
    _, got = index.search(torch.tensor(q), k=5, exclude=masked)
    _, ref = numpy_top_k(q, cand, 5, masked)
    np.testing.assert_array_equal(got, titles[ref])


def test_exclusions_object_by_query_keys(setup):
    cand, q = setup
    excl = Exclusions.from_pairs(torch.tensor([0, 0, 1]), torch.tensor([4, 9, 13]))
    _, got = BruteForce().build(None, cand).search(
        torch.tensor(q), k=5, exclude=excl, query_keys=torch.tensor([1, 0, 5, 1]))
    _, ref = numpy_top_k(q, cand, 5, [[13], [4, 9], [], [13]])
    np.testing.assert_array_equal(got, ref)


def test_allow_list_with_fewer_than_k_candidates(setup):
    cand, q = setup
    index = BruteForce().build(None, cand)
    scores, ids = index.search(torch.tensor(q[:1]), k=5, allow=[[3, 8, 20]])
    order = np.argsort(-(q[0] @ cand[[3, 8, 20]].T))
    assert ids[0, :3].tolist() == [[3, 8, 20][i] for i in order]
    assert torch.isinf(scores[0, 3:]).all()


def test_query_model_maps_raw_ids():
    users = nn.Embedding(3, 2)
    with torch.no_grad():
        users.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    cand = torch.tensor([[1.0, 0.0], [0.0, 2.0], [0.5, 0.5]])
    index = BruteForce(users).build(None, cand, identifiers=["a", "b", "c"])
    _, ids = index(torch.tensor([0, 1]), k=1)
    assert ids[:, 0].tolist() == ["a", "b"]


def test_errors():
    with pytest.raises(ConfigError, match="empty"):
        BruteForce().search(torch.zeros(1, 2))
    index = BruteForce().build(None, torch.zeros(3, 2))
    with pytest.raises(ShapeError, match=r"\[B, 2\]"):
        index.search(torch.zeros(1, 5))
    with pytest.raises(ShapeError, match="identifiers"):
        BruteForce().build(None, torch.zeros(3, 2), identifiers=["a"])


# -- one builder ----------------------------------------------------------------------------
def test_index_is_a_deprecated_alias_of_build(setup):
    cand, q = setup
    titles = np.array([f"movie {i}" for i in range(50)])
    with pytest.warns(DeprecationWarning, match=r"build\(ids, embeddings"):
        old = BruteForce().index(torch.tensor(cand), identifiers=titles, candidate_ids=torch.arange(50) + 100)
    new = BruteForce().build(np.arange(50) + 100, cand, identifiers=titles)
    for index in (old, new):
        _, got = index.search(q, k=5, exclude=[[100 + 3]] * 4)
        np.testing.assert_array_equal(got, titles[numpy_top_k(q, cand, 5, [[3]] * 4)[1]])


def test_index_from_tower_is_build_over_the_tower_output(setup):
    cand, q = setup
    tower = nn.Embedding(50, 6)
    with torch.no_grad():
        tower.weight.copy_(torch.from_numpy(cand))
    index = BruteForce().index_from_tower(tower, torch.arange(50), ids=np.arange(50) * 2, batch_size=7)
    np.testing.assert_array_equal(index.search(q, k=4)[1], numpy_top_k(q, cand, 4)[1] * 2)


# -- the query model is saved and reloaded (raw ids in, candidate ids out) --------------------
def _tutorial_index(query_tail=()):
    """BruteForce(nn.Sequential(StringLookup, Embedding, ...)) over 30 titles, as in the TFRS tutorial."""
    torch.manual_seed(0)
    users = StringLookup(vocabulary=[str(u) for u in range(1, 60)])
    user_model = nn.Sequential(users, Embedding(users.vocabulary_size(), 8), *query_tail)
    titles = np.array([f"Movie {i}" for i in range(30)])
    movies = torch.randn(30, user_model(["1"]).shape[1])
    return BruteForce(user_model, k=3).build(None, movies, identifiers=titles)


@pytest.mark.parametrize("tail", [(), (MLP(8, [16, 4], activation="elu"), nn.LayerNorm(4))], ids=["lookup", "deep"])
def test_saved_index_keeps_its_query_model(tmp_path, tail):
    index = _tutorial_index(tail)
    expected_scores, expected = index(["42", "7", "unknown user"])
    index.save(tmp_path / "bf")
    assert not list((tmp_path / "bf").glob("*.pkl"))
    loaded = load_index(tmp_path / "bf")
    scores, got = loaded(["42", "7", "unknown user"])               # raw ids in, titles out
    assert got.shape == (3, 3) and got.dtype.kind == "U"
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_allclose(scores.numpy(), expected_scores.numpy(), rtol=1e-6)
    config = json.loads((tmp_path / "bf" / "query_model.json").read_text())
    assert config["type"] == "sequential" and config["config"]["layers"][0]["type"] == "preprocessing"


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor

    def get_config(self):
        return {"factor": self.factor}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_a_query_model_that_cannot_be_saved_says_what_can(tmp_path):
    index = BruteForce(lambda raw: torch.zeros(len(raw), 2)).build(None, np.eye(2, dtype=np.float32))
    with pytest.raises(ConfigError, match="cannot save the query model without pickle.*Savable are nn.Sequential"):
        index.save(tmp_path / "lambda")
    index = BruteForce(nn.Sequential(nn.Embedding(3, 2), Scale(2.0))).build(None, np.eye(2, dtype=np.float32))
    with pytest.raises(ConfigError, match="test_brute_force.Scale.*register_query_layer"):
        index.save(tmp_path / "custom")
    register_query_layer(Scale, "tests.Scale")
    index.save(tmp_path / "custom")
    _, got = load_index(tmp_path / "custom")(torch.tensor([1, 2]), k=1)
    np.testing.assert_array_equal(got, index(torch.tensor([1, 2]), k=1)[1])
    with pytest.raises(ConfigError, match="non-default"):
        BruteForce(nn.Sequential(nn.ELU(alpha=2.0))).build(None, np.eye(2, dtype=np.float32)).save(tmp_path / "e")


def test_a_query_layer_name_names_one_class():
    class Other(Scale):
        pass

    register_query_layer(Scale, "tests.Scale")          # the same class again: fine
    with pytest.raises(ConfigError, match="already registered"):
        register_query_layer(Other, "tests.Scale")
