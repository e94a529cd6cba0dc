"""The shipped configs/ and the demo, on synthetic MovieLens files (real data: marked real_data)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from recstack.cli import demo
from recstack.experiment.config import load_config
from recstack.cli.main import main

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MOVIELENS_CONFIGS = ["basic_retrieval.yaml", "deep_retrieval.yaml", "multitask.yaml", "movielens_best.yaml",
                     "popularity.yaml", "ease.yaml"]


def test_every_shipped_config_is_valid():
    names = sorted(p.name for p in CONFIGS.glob("*.yaml"))
    assert set(MOVIELENS_CONFIGS) <= set(names)
    for name in names:
        load_config(CONFIGS / name)


@pytest.mark.parametrize("name", MOVIELENS_CONFIGS)
def test_recstack_train_runs_each_movielens_config(name, synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    code = main(["train", str(CONFIGS / name), "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "training.batch_size=512", "--set", "output.plots=false"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"seed", "exclude-seen"}
    # 45 synthetic movies < 100: every positive is within the top 100.
    assert metrics["protocols"]["seed"]["factorized_top_k/top_100_categorical_accuracy"] == pytest.approx(1.0)


def test_recstack_train_runs_the_autorec_config(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    code = main(["train", str(CONFIGS / "autorec.yaml"), "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=2", "--set", "model.hidden_sizes=[32]", "--set", "output.plots=false"])
    assert code == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["test"]["root_mean_squared_error"] < 4
    assert set(metrics["protocols"]) == {"exclude-seen"}


def test_demo_quick_prints_the_comparison_and_recommendations(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))  # restored after the test
    assert demo.main(["--data-dir", str(synthetic_ml100k), "--runs-dir", str(tmp_path / "runs"),
                      "--progress", "quiet", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "basic retrieval (seed 002)" in out and "best recstack config" in out and "popularity" in out
    assert "recall@10*" in out and "Top 5 new recommendations for user 42" in out
    runs = sorted(p.name.rsplit("-", 2)[0] for p in (tmp_path / "runs").iterdir())
    assert runs == ["basic-retrieval", "ease", "movielens-best", "popularity"]


@pytest.mark.real_data
def test_train_basic_retrieval_config_matches_the_reproduction_exactly(tmp_path):
    """`recstack train configs/basic_retrieval.yaml` trains the very weights of recstack.reproduce."""
    if not os.environ.get("RECSTACK_DATA_DIR"):
        pytest.skip("set RECSTACK_DATA_DIR to a MovieLens 100K folder")
    from recstack.experiment.run import load_run
    from recstack.datasets import load_movielens_100k
    from recstack.reproduce import basic_retrieval

    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "basic_retrieval.yaml"), "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "evaluation.protocols=[seed]"]) == 0
    reference = basic_retrieval(load_movielens_100k(), seed=0, epochs=1, verbose=False)
    model = load_run(run).model
    assert torch.equal(model.query_tower.id_embedding.weight, reference.model.query_tower.weight)
    assert torch.equal(model.candidate_tower.id_embedding.weight, reference.model.candidate_tower.weight)


def test_multitask_config_reports_rating_rmse(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["train", str(CONFIGS / "multitask.yaml"), "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "training.batch_size=512", "--set", "output.plots=false"]) == 0
    assert "rating RMSE" in capsys.readouterr().out
