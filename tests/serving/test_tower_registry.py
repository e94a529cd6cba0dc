"""Tower configs (recstack.models.tower_codec, re-exported by recstack.serving): rebuild +
load_state_dict reproduces the outputs; what cannot be described is refused, not approximated."""

import json
import sys

import pytest
import torch
from torch import nn

from recstack.core.errors import ConfigError
from recstack.features import StringLookup
from recstack.layers import MLP, Dense, Embedding
from recstack.serving import TOWERS, register_tower, tower_config, tower_from_config


def round_trip(module):
    config = json.loads(json.dumps(tower_config(module)))          # must be plain JSON
    rebuilt = tower_from_config(config)
    rebuilt.load_state_dict(module.state_dict(), strict=True)
    return rebuilt.eval()


@pytest.mark.parametrize("make, inputs", [
    (lambda: nn.Sequential(Embedding(10, 4, l2=0.1), MLP(4, [8, 3], activation="tanh", final_activation="sigmoid")),
     torch.tensor([0, 3, 9])),
    (lambda: nn.Sequential(nn.Embedding(5, 3, padding_idx=0), nn.Flatten(), nn.Linear(3, 2), nn.ReLU(),
                           nn.LayerNorm(2), nn.Dropout(0.2), Dense(2, 2, activation="gelu", bias=False)),
     torch.tensor([1, 4])),
    (lambda: nn.Sequential(StringLookup(vocabulary=["a", "b"]), Embedding(3, 2)), ["b", "zzz", "a"]),
])
def test_round_trip_reproduces_outputs(make, inputs):
    torch.manual_seed(0)
    module = make().eval()
    rebuilt = round_trip(module)
    assert torch.equal(rebuilt(inputs), module(inputs))
    assert tower_config(rebuilt) == tower_config(module)


def test_mlp_config_reads_its_constructor_arguments():
    config = tower_config(MLP(6, [5, 4, 2], activation="elu", l2=0.5))
    assert config == {"type": "mlp", "config": {
        "in_features": 6, "layer_sizes": [5, 4, 2], "activation": "elu", "final_activation": None, "l2": 0.5}}


class Scaled(nn.Module):
    def __init__(self, dim: int, scale: float):
        super().__init__()
        self.dim, self.scale = dim, scale
        self.weight = nn.Parameter(torch.randn(dim))

    def forward(self, x):
        return x * self.weight * self.scale

    def get_config(self):
        return {"dim": self.dim, "scale": self.scale}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def test_user_towers_need_registration():
    module = nn.Sequential(nn.Linear(3, 3), Scaled(3, 2.0))
    with pytest.raises(ConfigError, match="register_tower"):
        tower_config(module)
    register_tower(Scaled, name="tests.scaled")
    assert tower_config(module)["config"]["layers"][1]["type"] == "tests.scaled"
    rebuilt = round_trip(module)
    x = torch.randn(2, 3)
    assert torch.equal(rebuilt(x), module(x))
    with pytest.raises(ConfigError, match="already registered"):
        register_tower(nn.GRU, name="tests.scaled", to_config=lambda m: {}, from_config=lambda c: nn.GRU(1, 1))


def test_configs_record_registered_names_not_import_paths():
    from recstack.models.feature_tower import FeatureTower

    config = tower_config(nn.Sequential(StringLookup(vocabulary=["a"]), FeatureTower(2, 4, layer_sizes=[3])))
    assert [layer["type"] for layer in config["config"]["layers"]] == ["preprocessing", "feature_tower"]
    assert config["type"] == "sequential"


@pytest.mark.parametrize("old, new", [
    ("torch.nn.Sequential", "sequential"), ("recstack.features", "preprocessing"),
    ("recstack.layers.MLP", "mlp"), ("torch.nn.Linear", "linear"),
    ("recstack.cli.feature_towers.FeatureTower", "feature_tower"), ("torch.nn.Embedding", "torch_embedding"),
    ("recstack.layers.Embedding", "embedding"), ("recstack.layers.Dense", "dense"),
    ("torch.nn.LayerNorm", "layer_norm"), ("torch.nn.ELU", "elu"),
])
def test_format_1_import_path_names_are_aliases(old, new):
    """Bundles (and BruteForce query models) written before the registry recorded import paths;
    they name the same codecs."""
    assert TOWERS.canonical(old) == new


def test_unknown_or_foreign_types_are_refused():
    with pytest.raises(ConfigError, match="cannot describe"):
        tower_config(nn.GRU(3, 3))
    with pytest.raises(ConfigError, match="unknown tower type"):
        tower_from_config({"type": "os.system", "config": {}})
    # A recstack import path that is not a registered alias is refused without importing it.
    sys.modules.pop("recstack.experiment.run_dir", None)
    with pytest.raises(ConfigError, match="unknown tower type"):
        tower_from_config({"type": "recstack.experiment.run_dir.RunDir", "config": {}})
    assert "recstack.experiment.run_dir" not in sys.modules
    with pytest.raises(ConfigError, match="malformed"):
        tower_from_config({"type": "dense", "config": {"bogus": 1}})


@pytest.mark.parametrize("activation", [nn.ELU(alpha=2.0), nn.GELU(approximate="tanh")], ids=["elu", "gelu"])
def test_an_activation_with_arguments_the_config_cannot_store_is_refused(activation):
    """Stored without arguments, it would come back as the default and compute something else."""
    with pytest.raises(ConfigError, match="non-default"):
        tower_config(nn.Sequential(nn.Linear(2, 2), activation))
    dense = Dense(2, 2, activation="elu")
    dense.act = activation
    with pytest.raises(ConfigError, match="non-default"):
        tower_config(dense)


def test_an_mlp_with_replaced_layers_is_stored_as_the_sequential_of_its_layers():
    torch.manual_seed(0)
    mlp = MLP(3, [4, 4, 2], activation="relu")
    mlp[1].act = nn.Tanh()                                       # no longer what MLP(...) builds
    config = tower_config(mlp)
    assert config["type"] == "sequential" and [c["type"] for c in config["config"]["layers"]] == ["dense"] * 3
    x = torch.randn(5, 3)
    assert torch.equal(round_trip(mlp)(x), mlp.eval()(x))
