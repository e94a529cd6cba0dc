"""The seed reproductions (000, 001, 004) on synthetic MovieLens files, through the CLI."""

import json

import pytest

from recstack.cli.main import main


@pytest.mark.parametrize("name, options, metric", [
    ("deep-retrieval", ["epochs=2", "layer_sizes=[16,8]"], "factorized_top_k/top_100_categorical_accuracy"),
    ("multitask", ["epochs=1", "rating_weight=1", "retrieval_weight=0"], "root_mean_squared_error"),
    ("autorec", ["epochs=2"], "root_mean_squared_error"),
])
def test_reproduce_runs_each_seed_experiment(synthetic_ml100k, tmp_path, name, options, metric, capsys):
    out = tmp_path / "result.json"
    argv = ["reproduce", name, "--data-dir", str(synthetic_ml100k), "--progress", "quiet", "--output", str(out)]
    for option in options:
        argv += ["--set", option]
    assert main(argv) == 0
    result = json.loads(out.read_text())
    assert result["name"] == name and 0.0 <= result["metrics"][metric] < 10.0
    assert capsys.readouterr().out.strip()


def test_reproduce_set_needs_key_value(synthetic_ml100k):
    assert main(["reproduce", "autorec", "--data-dir", str(synthetic_ml100k), "--set", "epochs"]) == 2
