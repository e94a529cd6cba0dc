"""``recstack tune``: the search space's validation, the study's outputs, resuming, interrupted
trials, pruning, best_config.yaml reproducing the best trial, and the test split never read."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

optuna = pytest.importorskip("optuna")

from recstack.cli.main import main  # noqa: E402
from recstack.core.errors import ConfigError  # noqa: E402
from recstack.experiment import tuning  # noqa: E402
from recstack.experiment.config_files import load_config  # noqa: E402
from recstack.experiment.reporter import Reporter  # noqa: E402
from recstack.experiment.run import train  # noqa: E402

EASE = {
    "split": {"method": "random", "train_fraction": 0.7, "validation_fraction": 0.15, "seed": 3},
    "model": {"kind": "ease", "l2": 100.0},
    "evaluation": {"protocols": ["all-items", "exclude-seen"], "validation_protocol": "exclude-seen",
                   "ks": [1, 5, 10]},
    "output": {"plots": False, "report": False},
    "tune": {"metric": "ndcg_at_10", "trials": 3, "sampler": "random",
             "space": {"model.l2": {"low": 0.01, "high": 5000.0, "log": True}}},
}

TWO_TOWER = {
    "split": {"method": "random", "train_fraction": 0.7, "validation_fraction": 0.15, "seed": 3},
    "model": {"kind": "two_tower", "embedding_dim": 8},
    "optimizer": {"name": "adagrad", "learning_rate": 0.3},
    "training": {"epochs": 2, "batch_size": 64},
    "evaluation": {"protocols": ["all-items"], "validation_protocol": "all-items", "ks": [1, 5, 10]},
    "output": {"plots": False, "report": False},
    "tune": {"metric": "top_10_categorical_accuracy", "trials": 6, "sampler": "random", "pruner": "median",
             "startup_trials": 1, "warmup_epochs": 0, "seed": 0,
             "space": {"optimizer.learning_rate": {"choices": [0.5, 1.0e-7]}}},
}


def quiet() -> Reporter:
    return Reporter("quiet")


def study(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "study.json").read_text())


def tune_config(write_config, extra: dict[str, Any] | None = None, base: dict[str, Any] = EASE):
    from tests.cli.conftest import merge

    return load_config(write_config(merge(base, extra or {})))


# -- the search space ---------------------------------------------------------------------------------
def test_space_problems_are_listed_together_with_suggestions(write_config):
    config = tune_config(write_config, {"tune": {"metric": "ndgc_at_10", "space": {
        "model.l3": {"low": 1, "high": 10},                              # unknown setting
        "optimizer.learning_rat": {"low": 0.1, "high": 1.0},             # unknown, close to a real one
        "training.epochs": {"low": 5, "high": 10},                       # an integer setting without int
        "training.batch_size": {"low": 64, "high": 32, "int": True},     # low above high
        "optimizer.weight_decay": {"low": 0.0, "high": 0.1, "log": True},   # log from 0
        "split.seed": {"choices": [1, 2]},                               # would change the split
        "tasks.retrieval.temperature": {"lo": 0.1, "high": 1.0},         # unknown key of a range
        "training.validation_freq": {"low": 0, "high": 3, "int": True},  # 0 is not a valid value
        "model.embedding_dim": {"choices": []},
    }}})
    with pytest.raises(ConfigError) as info:
        tuning.search_space(config)
    text = str(info.value)
    assert "tune.space.model.l3: not a setting of the config (did you mean 'model.l2'?)" in text
    assert "(did you mean 'optimizer.learning_rate'?)" in text
    assert "tune.space.training.epochs: is an integer setting (now 2); add int: true" in text
    assert "tune.space.training.batch_size: low (64) must be below high (32)" in text
    assert "tune.space.optimizer.weight_decay: a log range needs low > 0" in text
    assert "tune.space.split.seed: split cannot be tuned" in text
    assert "tune.space.tasks.retrieval.temperature.lo: unknown key (did you mean 'low'?)" in text
    assert "tune.space.training.validation_freq: 0 is not a valid value: training.validation_freq" in text
    assert "tune.space.model.embedding_dim: not a setting" in text   # ease has no embedding_dim
    assert "tune.metric: 'ndgc_at_10' is not a validation metric of the exclude-seen protocol (did you mean " \
           "'ndcg_at_10'?)" in text


def test_metric_needs_k_in_ks_and_next_item_names(write_config):
    config = tune_config(write_config, {"tune": {"metric": "recall_at_20"}})
    with pytest.raises(ConfigError, match=r"K = 20 of 'recall_at_20' is not in evaluation.ks = \[1, 5, 10\]"):
        tuning.search_space(config)
    from tests.cli.conftest import merge

    raw = merge(EASE, {"evaluation": {"protocols": ["next-item"], "validation_protocol": "next-item"},
                       "tune": {"metric": "recall_at_10"}})
    raw["split"] = {"method": "leave-one-out"}
    next_item = load_config(write_config(raw))
    with pytest.raises(ConfigError, match=r"not a metric of the next-item validation .*hr_at_K, ndcg_at_K"):
        tuning.search_space(next_item)
    assert tuning.validation_key(dataclasses.replace(next_item, tune=dataclasses.replace(
        next_item.tune, metric="hr_at_10"))) == "val_next_item/hr_at_10"


def test_a_config_without_tune_section_or_validation_split_is_refused(write_config, tmp_path):
    plain = load_config(write_config({**{k: v for k, v in EASE.items() if k != "tune"}}))
    with pytest.raises(ConfigError, match="has no tune section"):
        tuning.tune(plain, quiet(), out=tmp_path / "s")
    no_validation = tune_config(write_config, {"split": {"validation_fraction": 0.0}})
    with pytest.raises(ConfigError, match=r"has none: set split.validation_fraction"):
        tuning.tune(no_validation, quiet(), out=tmp_path / "s2")


def test_train_accepts_and_ignores_a_tune_section(write_config):
    config = tune_config(write_config)
    assert config.tune is not None and config.tune.space["model.l2"]["log"] is True
    assert "tune" not in tuning.untuned(config).to_dict()


# -- a study --------------------------------------------------------------------------------------------
def test_a_study_writes_every_output_and_the_command_prints_the_table(write_config, workdir, capsys):
    path = write_config(EASE)
    out = workdir / "study"
    assert main(["tune", str(path), "--trials", "3", "--out", str(out), "--progress", "quiet"]) == 0
    printed = capsys.readouterr().out
    assert "trial  state" in printed and "model.l2" in printed and "best: trial" in printed
    summary = study(out)
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert all(t["state"] == "COMPLETE" and t["epoch_values"] == {"1": t["value"]} for t in summary["trials"])
    assert all(t["seconds"] >= 0 and 0.01 <= t["params"]["model.l2"] <= 5000 for t in summary["trials"])
    values = [t["value"] for t in summary["trials"]]
    assert summary["best"]["value"] == max(values)
    rows = list(csv.DictReader((out / "trials.csv").open()))
    assert [float(r["value"]) for r in rows] == values and rows[0]["state"] == "COMPLETE"
    assert (out / "trials.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert "tune" not in best and best["model"]["l2"] == summary["best"]["params"]["model.l2"]
    assert best["data"]["interactions"] == str(workdir / "ratings.csv")


def test_best_config_reproduces_the_best_trials_validation_metric(write_config, workdir):
    result = tuning.tune(tune_config(write_config), quiet(), out=workdir / "study")
    run = train(load_config(result.out / "best_config.yaml"), quiet(), run_dir=workdir / "best-run")
    history = json.loads((run.run_dir / "history.json").read_text())
    assert history["history"]["val_factorized_top_k/ndcg_at_10"] == [result.best["value"]]
    assert run.config.model.params.l2 == result.best["params"]["model.l2"]


def test_the_value_is_the_validation_metric_of_the_trained_model(write_config, workdir):
    """Independent check: EASE fitted by numpy on the training rows, ranked on the validation rows."""
    from recstack.experiment.prepare import prepare

    config = tune_config(write_config, {"tune": {"trials": 1}})
    result = tuning.tune(config, quiet(), out=workdir / "study")
    l2 = result.best["params"]["model.l2"]
    p = prepare(tuning.untuned(config), quiet())
    n = p.pre.num_items
    x = np.zeros((p.pre.num_users, n))
    x[p.train["user"].numpy(), p.train["item"].numpy()] = 1.0
    g = x.T @ x + l2 * np.eye(n)
    inverse = np.linalg.inv(g)
    b = -inverse / np.diag(inverse)
    np.fill_diagonal(b, 0.0)
    users, items = p.validation["user"].numpy(), p.validation["item"].numpy()
    ndcg = []
    for u in np.unique(users):
        scores = x[u] @ b
        scores[x[u] > 0] = -np.inf   # exclude-seen: the training items
        scores[0] = -np.inf          # id 0 (unknown) is not in the catalogue
        positives = items[users == u]
        ranks = [(scores > scores[i]).sum() for i in positives]
        dcg = sum(1 / math.log2(r + 2) for r in ranks if r < 10)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(len(positives), 10)))
        ndcg.append(dcg / ideal)
    assert result.best["value"] == pytest.approx(float(np.mean(ndcg)), abs=1e-6)


def test_the_test_split_is_never_read(write_config, workdir, monkeypatch):
    class Poison:
        def __getattr__(self, name: str) -> Any:
            raise AssertionError(f"the study read the test split (.{name})")

        def __getitem__(self, key: Any) -> Any:
            raise AssertionError(f"the study read the test split ([{key!r}])")

    real = tuning.prepare
    calls = []

    def poisoned(config, reporter, pre=None):
        calls.append(config.name)
        return dataclasses.replace(real(config, reporter, pre), test=Poison())

    def no_test(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("evaluate_run called during a study")

    monkeypatch.setattr(tuning, "prepare", poisoned)
    monkeypatch.setattr("recstack.experiment.run.evaluate_run", no_test)
    monkeypatch.setattr("recstack.experiment.run.check_against_popularity", no_test)
    result = tuning.tune(tune_config(write_config), quiet(), out=workdir / "study")
    assert calls and [t["state"] for t in result.trials] == ["COMPLETE"] * 3


# -- resuming -----------------------------------------------------------------------------------------
def test_a_rerun_continues_the_study_without_rerunning_finished_trials(write_config, workdir):
    config = tune_config(write_config)
    out = workdir / "study"
    first = tuning.tune(config, quiet(), out=out, trials=2)
    assert first.ran == 2
    again = tuning.tune(config, quiet(), out=out, trials=2)
    assert again.ran == 0 and len(again.trials) == 2
    more = tuning.tune(config, quiet(), out=out, trials=4)
    assert more.ran == 2 and [t["number"] for t in more.trials] == [0, 1, 2, 3]
    for before, after in zip(first.trials, more.trials[:2]):
        assert (after["params"], after["value"], after["state"]) == (before["params"], before["value"],
                                                                      before["state"])
    # the continued sampler does not redraw the first samples
    assert len({t["params"]["model.l2"] for t in more.trials}) == 4


def test_another_config_in_the_same_folder_is_refused(write_config, workdir):
    out = workdir / "study"
    tuning.tune(tune_config(write_config), quiet(), out=out, trials=1)
    other = tune_config(write_config, {"tune": {"space": {"model.l2": {"low": 1.0, "high": 10.0}}}})
    with pytest.raises(ConfigError, match="holds a study of another config, search space or data"):
        tuning.tune(other, quiet(), out=out, trials=2)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
def test_an_interrupted_trial_is_failed_and_the_study_resumes(write_config, workdir, monkeypatch, error):
    config = tune_config(write_config)
    out = workdir / "study"
    real = tuning.fit_for_validation
    calls = {"n": 0}

    def breaks_second(*args: Any, **kwargs: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise error("stopped inside the trial")
        return real(*args, **kwargs)

    monkeypatch.setattr(tuning, "fit_for_validation", breaks_second)
    with pytest.raises(error):
        tuning.tune(config, quiet(), out=out, trials=3)
    summary = study(out)   # written on the way out
    assert [t["state"] for t in summary["trials"]] == ["COMPLETE", "FAIL"]
    assert ("interrupted (Ctrl-C)" if error is KeyboardInterrupt else "RuntimeError: stopped") in \
        summary["trials"][1]["error"]
    monkeypatch.setattr(tuning, "fit_for_validation", real)
    resumed = tuning.tune(config, quiet(), out=out, trials=3)
    assert resumed.ran == 2   # the failed trial does not count: 1 + 2 finished
    assert [t["state"] for t in resumed.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert resumed.trials[0]["value"] == summary["trials"][0]["value"]


def test_a_trial_left_running_by_a_killed_process_is_failed_and_does_not_count(write_config, workdir):
    config = tune_config(write_config)
    out = workdir / "study"
    tuning.tune(config, quiet(), out=out, trials=1)
    storage = tuning._storage(optuna, out / "study.journal")
    left = optuna.load_study(study_name=tuning.STUDY_NAME, storage=storage).ask()   # never told: RUNNING
    assert left.number == 1
    result = tuning.tune(config, quiet(), out=out, trials=2)
    states = [t["state"] for t in result.trials]
    assert states == ["COMPLETE", "FAIL", "COMPLETE"] and result.ran == 1
    assert "the process ended during the trial" in result.trials[1]["error"]


# -- gradient-trained kinds: per-epoch values and pruning ------------------------------------------------
def test_two_tower_trials_report_every_epoch_and_bad_ones_are_pruned(write_config, workdir):
    config = tune_config(write_config, base=TWO_TOWER)
    result = tuning.tune(config, quiet(), out=workdir / "study")
    trials = result.trials
    for t in trials:
        epochs = sorted(int(e) for e in t["epoch_values"])
        assert epochs == ([1, 2] if t["state"] == "COMPLETE" else [1])
        if t["state"] == "COMPLETE":
            assert t["value"] == t["epoch_values"]["2"]   # the last validated epoch's model
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    complete = [t for t in trials if t["state"] == "COMPLETE"]
    assert pruned and complete
    # a learning rate of 1e-7 learns nothing: those trials fall below the median after epoch 1
    assert all(t["params"]["optimizer.learning_rate"] == 1.0e-7 for t in pruned)
    assert result.best["params"]["optimizer.learning_rate"] == 0.5
    run = train(load_config(result.out / "best_config.yaml"), quiet(), run_dir=workdir / "best-run")
    history = json.loads((run.run_dir / "history.json").read_text())["history"]
    assert history["val_factorized_top_k/top_10_categorical_accuracy"][-1] == pytest.approx(
        result.best["value"], rel=1e-12)


def test_next_item_trials_take_the_selected_epochs_value(write_config, workdir):
    """Leave-one-out with model selection: a trial's value is the best epoch's validation metric,
    which is what recstack train of best_config.yaml reports in metrics.json."""
    from tests.cli.conftest import merge

    raw = merge(TWO_TOWER, {"evaluation": {"protocols": ["next-item"], "validation_protocol": "next-item"},
                            "training": {"epochs": 3, "early_stopping": {"metric": "ndcg_at_10"}},
                            "tune": {"metric": "hr_at_5", "trials": 2, "pruner": "none"}})
    raw["split"] = {"method": "leave-one-out"}
    raw["tune"]["space"] = {"optimizer.learning_rate": {"low": 0.05, "high": 0.5, "log": True}}
    result = tuning.tune(load_config(write_config(raw)), quiet(), out=workdir / "study")
    assert [t["state"] for t in result.trials] == ["COMPLETE", "COMPLETE"]
    for t in result.trials:
        assert sorted(t["epoch_values"]) == ["1", "2", "3"]
    run = train(load_config(result.out / "best_config.yaml"), quiet(), run_dir=workdir / "best-run")
    assert run.metrics["validation"]["hr_at_5"] == pytest.approx(result.best["value"], rel=1e-12)
    chosen = result.trials[result.best["number"]]
    assert chosen["epoch_values"][str(run.metrics["best_epoch"])] == pytest.approx(result.best["value"], rel=1e-12)
