"""BruteForce's saved query model: the tower codec shared with serving bundles (one table of type
names), indexes saved by the previous layout with a query model (tests/index/fixtures), and the
rule that loading reads only the files index.json lists."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from recstack.core.errors import ConfigError, DataError
from recstack.features import StringLookup
from recstack.index import BruteForce, load_index, register_query_layer
from recstack.layers import MLP, Embedding
from recstack.models.feature_tower import FeatureTower
from recstack.serving import TOWERS, register_tower

FIXTURES = Path(__file__).parent / "fixtures"


def _elu(x):
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0)))


def _reference_query_embeddings(folder, users):
    """The fixture's query model evaluated in numpy from its stored arrays (make_v1_brute_force_query_model.py:
    StringLookup(u1..u6, OOV 0) -> Embedding(7, 4) -> Dense(4->5, elu) -> Dense(5->3) -> LayerNorm(3))."""
    with np.load(folder / "query_model.npz") as w:
        w = {k: w[k].astype(np.float64) for k in w.files}
    vocab = [f"u{i}" for i in range(1, 7)]
    codes = [vocab.index(u) + 1 if u in vocab else 0 for u in users]
    h = w["1.weight"][codes]
    h = _elu(h @ w["2.0.weight"].T + w["2.0.bias"])
    h = h @ w["2.1.weight"].T + w["2.1.bias"]
    mean, var = h.mean(1, keepdims=True), h.var(1, keepdims=True)
    return (h - mean) / np.sqrt(var + 1e-5) * w["3.weight"] + w["3.bias"]


def test_an_index_with_a_query_model_saved_by_the_previous_layout_loads():
    folder = FIXTURES / "v1_brute_force_query_model"
    assert json.loads((folder / "query_model.json").read_text())["type"] == "torch.nn.Sequential"   # old names
    loaded = load_index(folder)
    users = ["u3", "u6", "nobody"]
    scores, got = loaded(users)                                    # raw ids in, titles out
    ref = _reference_query_embeddings(folder, users) @ np.load(folder / "embeddings.npy").astype(np.float64).T
    order = np.argsort(-ref, axis=1, kind="stable")[:, :3]
    np.testing.assert_array_equal(got, np.load(folder / "identifiers.npy")[order])
    np.testing.assert_allclose(scores.numpy(), np.take_along_axis(ref, order, 1), rtol=1e-5, atol=1e-6)


def test_a_saved_query_model_records_the_registered_tower_names(tmp_path):
    users = StringLookup(vocabulary=["a", "b"])
    model = nn.Sequential(users, Embedding(3, 4), MLP(4, [2]))
    BruteForce(model).build(None, np.eye(2, 2, dtype=np.float32)).save(tmp_path / "bf")
    config = json.loads((tmp_path / "bf" / "query_model.json").read_text())
    assert config["type"] == "sequential"
    assert [layer["type"] for layer in config["config"]["layers"]] == ["preprocessing", "embedding", "mlp"]
    assert all(TOWERS.canonical(t) == t for t in ("sequential", "preprocessing", "embedding", "mlp"))


def test_a_feature_tower_is_a_savable_query_model(tmp_path):
    torch.manual_seed(0)
    tower = FeatureTower(6, 4, categorical_sizes=[3], num_numeric=2, layer_sizes=[5, 3])
    tower.set_feature_tables(categorical=torch.tensor([[0], [1], [2], [1], [0], [2]]), numeric=torch.randn(6, 2))
    index = BruteForce(tower.eval(), k=4).build(None, torch.randn(9, 3))
    users = torch.tensor([0, 3, 5])
    expected_scores, expected = index(users)
    index.save(tmp_path / "ft")
    config = json.loads((tmp_path / "ft" / "query_model.json").read_text())
    assert config["type"] == "feature_tower"
    loaded = load_index(tmp_path / "ft")
    assert isinstance(loaded.query_model, FeatureTower)
    scores, got = loaded(users)
    np.testing.assert_array_equal(got, expected)
    assert torch.equal(scores, expected_scores)


class Shift(nn.Module):
    def __init__(self, by: float):
        super().__init__()
        self.by = by

    def forward(self, x):
        return x + self.by

    def get_config(self):
        return {"by": self.by}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_one_registration_serves_bundles_and_query_models(tmp_path):
    assert register_query_layer is register_tower
    register_tower(Shift, name="tests.index.shift")
    model = nn.Sequential(nn.Embedding(3, 2), Shift(0.5))
    index = BruteForce(model).build(None, np.eye(2, dtype=np.float32))
    index.save(tmp_path / "shift")
    assert isinstance(load_index(tmp_path / "shift").query_model[1], Shift)


def test_a_non_default_activation_is_refused_not_saved_as_the_default(tmp_path):
    index = BruteForce(nn.Sequential(nn.Embedding(3, 2), nn.GELU(approximate="tanh")))
    with pytest.raises(ConfigError, match="cannot save the query model without pickle.*non-default"):
        index.build(None, np.eye(2, dtype=np.float32)).save(tmp_path / "gelu")


# -- loading reads only the files index.json lists -------------------------------------------
def test_an_unlisted_file_in_the_folder_changes_nothing(tmp_path):
    x = np.random.default_rng(0).normal(size=(8, 3)).astype(np.float32)
    q = np.random.default_rng(1).normal(size=(2, 3)).astype(np.float32)
    plain = BruteForce(k=3).build(np.arange(8) * 2, x)
    plain.save(tmp_path / "plain")
    expected = plain.search(q)
    # Another index's optional files (string identifiers, a query model) dropped into the folder.
    BruteForce(nn.Embedding(4, 3), k=3).build(None, x, identifiers=[f"t{i}" for i in range(8)]).save(tmp_path / "other")
    for name in ("identifiers.npy", "query_model.json", "query_model.npz"):
        shutil.copy(tmp_path / "other" / name, tmp_path / "plain" / name)
    loaded = load_index(tmp_path / "plain")
    assert loaded.query_model is None
    scores, got = loaded.search(q)
    assert got.dtype.kind == "i"
    np.testing.assert_array_equal(got, expected[1])
    assert torch.equal(scores, expected[0])


def test_a_needed_file_the_index_json_does_not_list_is_an_error(tmp_path):
    BruteForce().build(None, np.eye(3, dtype=np.float32)).save(tmp_path / "bf")
    state = json.loads((tmp_path / "bf" / "index.json").read_text())
    state["files"].remove("ids.npy")
    (tmp_path / "bf" / "index.json").write_text(json.dumps(state))
    with pytest.raises(DataError, match="does not list ids.npy"):
        load_index(tmp_path / "bf")


# -- load_index(directory, **param_overrides) -------------------------------------------------
def test_load_index_overrides_saved_parameters(tmp_path):
    BruteForce(k=4, max_scores_in_memory=64).build(None, np.eye(3, dtype=np.float32)).save(tmp_path / "bf")
    loaded = load_index(tmp_path / "bf", k=2)
    assert (loaded.k, loaded.max_scores_in_memory) == (2, 64)
    assert load_index(tmp_path / "bf", k=None).k == BruteForce().k          # None: the constructor default
    assert load_index(tmp_path / "bf").k == 4
    with pytest.raises(ConfigError, match="does not take"):
        load_index(tmp_path / "bf", nprobe=3)
