"""Config files: YAML/TOML loading, --set overrides, and the validation messages."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from recstack.cli.main import main
from recstack.core.errors import ConfigError
from recstack.experiment.config import (
    ExperimentConfig,
    TrainingConfig,
    dump_config,
    parse_config,
)
from recstack.experiment.config_files import apply_overrides, load_config
from recstack.experiment.deprecations import ConfigDeprecationWarning
from recstack.experiment.model_kinds import TwoTowerParams
from recstack.experiment.reference import unreported_metrics

from .conftest import BASE, merge


def errors_of(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, source="cfg.yaml")
    return str(info.value)


def test_defaults_and_types(write_config):
    config = load_config(write_config())
    assert isinstance(config, ExperimentConfig)
    assert config.training == TrainingConfig(epochs=2, batch_size=64)
    assert config.model.kind == "two_tower" and config.model.params == TwoTowerParams(embedding_dim=8)
    assert Path(config.data.interactions).is_absolute() and config.data.interactions.endswith("ratings.csv")


def test_unknown_keys_suggest_the_closest_valid_key():
    message = errors_of(merge(BASE, {"traning": {"epochs": 3}, "training": {"epocs": 3}}))
    assert "traning: unknown key (did you mean 'training'?)" in message
    assert "training.epocs: unknown key (did you mean 'epochs'?)" in message
    assert "valid keys here:" in message and "batch_size" in message


def test_unknown_model_hyperparameter_names_the_kind():
    message = errors_of(merge(BASE, {"model": {"kind": "two_tower", "embeding_dim": 8}}))
    assert "model.embeding_dim: unknown key for model kind 'two_tower' (did you mean 'embedding_dim'?)" in message


def test_unknown_model_kind_lists_the_registered_ones():
    message = errors_of(merge(BASE, {"model": {"kind": "two_towers"}}))
    assert "unknown model kind 'two_towers' (did you mean 'two_tower'?)" in message
    assert "popularity" in message and "ease" in message


def test_wrong_types_are_reported_with_their_path():
    message = errors_of(merge(BASE, {"training": {"epochs": "ten", "shuffle": "yes please"},
                                     "evaluation": {"ks": [1, "five"]}, "model": {"layer_sizes": 64},
                                     "optimizer": {"learning_rate": True}}))
    assert "training.epochs: expected an integer, got 'ten' (str)" in message
    assert "training.shuffle: expected true/false, got 'yes please' (str)" in message
    assert "evaluation.ks[1]: expected an integer, got 'five' (str)" in message
    assert "model.layer_sizes: expected a list of an integer, got 64 (int)" in message
    assert "optimizer.learning_rate: expected a number, got true (a boolean)" in message


def test_choices_and_ranges():
    message = errors_of(merge(BASE, {"split": {"method": "randm", "train_fraction": 1.5},
                                     "training": {"epochs": 0}}))
    assert "split.method: must be one of 'random', 'temporal', 'leave-last-out', 'leave-one-out', 'per-user-random', 'column'; got 'randm' " \
           "(did you mean 'random'?)" in message
    assert "split.train_fraction: must be in (0, 1), got 1.5" in message
    assert "training.epochs: must be >= 1, got 0" in message


def test_missing_required_and_inconsistent_sections():
    raw = merge(BASE, {})
    del raw["data"]["interactions"]
    assert "data.interactions: missing required key" in errors_of(raw)
    raw = merge(BASE, {"tasks": {"rating": {"weight": 1.0}}})
    del raw["data"]["columns"]["rating"]
    assert "tasks.rating.weight > 0 needs a rating column: set data.columns.rating" in errors_of(raw)
    raw = merge(BASE, {"split": {"method": "temporal"}})
    del raw["data"]["columns"]["timestamp"]
    assert "split.method 'temporal' needs a timestamp column" in errors_of(raw)


def test_set_overrides_are_yaml_values_and_validated(write_config):
    path = write_config()
    config = load_config(path, ["training.epochs=7", "model.layer_sizes=[16, 8]",
                                "tasks.retrieval.temperature=0.5", "evaluation.protocols=[all-items]"])
    assert config.training.epochs == 7 and config.model.params.layer_sizes == [16, 8]
    assert config.tasks.retrieval.temperature == 0.5 and config.evaluation.protocols == ["all-items"]
    with pytest.raises(ConfigError, match="training.epohcs: unknown key .*did you mean 'epochs'"):
        load_config(path, ["training.epohcs=3"])
    with pytest.raises(ConfigError, match="--set expects KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])
    with pytest.raises(ConfigError, match="training is a value, not a section"):
        apply_overrides({"training": 3}, ["training.epochs=1"])


def test_toml_and_yaml_give_the_same_config(workdir, write_config):
    yaml_path = write_config()
    toml_path = workdir / "config.toml"
    toml_path.write_text("""
name = "t"
[data]
interactions = "ratings.csv"
[data.columns]
user = "userId"
item = "movieId"
rating = "rating"
timestamp = "timestamp"
[split]
method = "leave-last-out"
[model]
kind = "two_tower"
embedding_dim = 8
[optimizer]
name = "adagrad"
learning_rate = 0.2
[training]
epochs = 2
batch_size = 64
[evaluation]
ks = [1, 5, 10]
[output]
plots = false
runs_dir = "%s"
""" % (workdir / "runs"))
    assert load_config(toml_path) == load_config(yaml_path)


def test_dumped_config_round_trips(write_config):
    config = load_config(write_config({"model": {"layer_sizes": [16]}, "data": {"items": {
        "path": "items.csv", "id": "movieId", "categorical": ["genre"], "text": "title"}}}))
    again = parse_config(yaml.safe_load(dump_config(config)))
    assert again == config


def test_unparseable_file_and_unknown_suffix(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    with pytest.raises(ConfigError, match="bad.yaml is not valid YAML"):
        load_config(bad)
    other = tmp_path / "config.ini"
    other.write_text("x=1")
    with pytest.raises(ConfigError, match="unknown config format '.ini'"):
        load_config(other)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_cli_exits_2_with_the_message_for_a_bad_config(write_config, capsys):
    path = write_config({"training": {"epocs": 3}})
    assert main(["train", str(path), "--progress", "quiet"]) == 2
    err = capsys.readouterr().err
    assert "training.epocs: unknown key (did you mean 'epochs'?)" in err


def test_the_old_protocol_name_seed_still_works_with_a_deprecation_warning(write_config, capsys):
    raw = merge(BASE, {"evaluation": {"protocols": ["seed", "exclude-seen"], "validation_protocol": "seed"},
                       "reference": {"source": "s", "metrics": {"seed/top_10_categorical_accuracy": 0.1}}})
    with pytest.warns(ConfigDeprecationWarning, match="'seed' is now called 'all-items' \\(evaluation.protocols, "
                      "evaluation.validation_protocol, reference.metrics.seed/top_10_categorical_accuracy\\)"):
        config = parse_config(raw, source="cfg.yaml")
    assert config.evaluation.protocols == ["all-items", "exclude-seen"]
    assert config.evaluation.validation_protocol == "all-items"
    assert config.reference.metrics == {"all-items/top_10_categorical_accuracy": 0.1}
    assert "seed" not in dump_config(config).replace("seed: ", "")      # written back with the new name
    # On the command line: one "warning:" line on stderr, and the run goes on.
    path = write_config({"evaluation": {"protocols": ["seed"]}})
    assert main(["train", str(path), "--run-dir", str(path.parent / "run"), "--progress", "quiet"]) == 0
    err = capsys.readouterr().err
    assert "warning: " in err and "the evaluation protocol 'seed' is now called 'all-items'" in err
    assert main(["evaluate", str(path.parent / "run"), "--protocol", "seed", "--format", "json"]) == 0
    captured = capsys.readouterr()
    assert "warning: --protocol seed is now called --protocol all-items" in captured.err
    assert list(json.loads(captured.out)["protocols"]) == ["all-items"]


def test_reference_blocks_are_validated():
    good = {"source": "a paper", "metrics": {"all-items/top_10_categorical_accuracy": 0.2}}
    assert parse_config(merge(BASE, {"reference": good})).reference.metrics == good["metrics"]
    message = errors_of(merge(BASE, {"reference": {"metrics": {"test/root_mean_squared_error": "high"}}}))
    assert "reference.source: missing required key" in message
    assert "reference.metrics.test/root_mean_squared_error: expected a number, got 'high' (str)" in message
    message = errors_of(merge(BASE, {"reference": {"source": "s", "metrics": {
        "seen/mrr": 0.2, "all-items/ndcg": 0.3, "test/rmse": 1.0}}}))
    assert "reference.metrics.seen/mrr: a reference metric is PROTOCOL/METRIC" in message
    assert "reference.metrics.all-items/ndcg: 'ndcg' is not a metric the runs report" in message
    assert "reference.metrics.test/rmse: the test metrics are root_mean_squared_error, loss" in message


def test_reference_metrics_the_run_does_not_report_are_found():
    """A --set may change what a run evaluates (the comparison then shows "-"), so this is not a parse
    error; the shipped configs are held to it (test_configs_and_demo)."""
    config = parse_config(merge(BASE, {"evaluation": {"protocols": ["exclude-seen"]}, "reference": {
        "source": "s", "metrics": {"all-items/mrr": 0.2, "exclude-seen/top_7_categorical_accuracy": 0.1,
                                   "test/root_mean_squared_error": 1.0},
        "variants": [{"when": {"tasks.rating.weight": 1.0}, "metrics": {"test/root_mean_squared_error": 1.0}}]}}))
    problems = unreported_metrics(config)
    assert problems == [
        "reference.metrics.all-items/mrr: protocol 'all-items' is not evaluated (evaluation.protocols: "
        "['exclude-seen'])",
        "reference.metrics.exclude-seen/top_7_categorical_accuracy: K = 7 is not in evaluation.ks = [1, 5, 10]",
        "reference.metrics.test/root_mean_squared_error: the run reports test/root_mean_squared_error and test/loss "
        "only for rating models (model kind autorec, or tasks.rating.weight > 0)"]     # the variant's RMSE is fine


def test_reference_variants_are_valid_settings():
    def variant(when):
        return merge(BASE, {"reference": {"source": "s", "variants": [
            {"when": when, "metrics": {"all-items/mrr": 0.1}}]}})

    assert parse_config(variant({"model.layer_sizes": [8]})).reference.variants[0].when == {"model.layer_sizes": [8]}
    assert "reference.variants[0].when: model.layer_size: not a setting of the config (did you mean " \
           "'layer_sizes'?)" in errors_of(variant({"model.layer_size": [8]}))
    assert "model.layer_sizes: expected a list of an integer, got 'wide' (str)" in \
        errors_of(variant({"model.layer_sizes": "wide"}))
    assert "reference.variants[0].when: list the settings of this variant" in errors_of(variant({}))
