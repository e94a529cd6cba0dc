"""The ``ials`` kind through the CLI on tiny generated data: one sweep per epoch (per-sweep
validation in history.json), reload from the run folder, evaluate, recommend by user and by a
folded-in history, resume; the shipped config on MovieLens-format files (export: test_fold_in_bundle.py)."""

from __future__ import annotations

import json

import pytest
import torch

from recstack.cli.main import main
from recstack.core.id_lists import IdLists
from recstack.experiment.saved_run import load_run
from recstack.models.ials import IALS

IALS_RUN = {"model": {"kind": "ials", "embedding_dim": 4, "regularization": 0.01, "unobserved_weight": 0.1},
            "optimizer": {"name": "sgd", "learning_rate": 0.1},
            "training": {"epochs": 4}, "split": {"method": "random"},
            "evaluation": {"protocols": ["exclude-seen"], "validation_protocol": "exclude-seen", "ks": [1, 5, 10]}}


def test_ials_kind_trains_a_sweep_per_epoch_reloads_and_folds_in(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({**IALS_RUN, "split": {"method": "random", "validation_fraction": 0.2}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())["history"]
    assert len(history["loss"]) == 4 and all(b <= a for a, b in zip(history["loss"], history["loss"][1:]))
    assert len(history["val_factorized_top_k/recall_at_10"]) == 4          # validated after every sweep
    # The saved run scores from its factors alone: evaluate reproduces the test metrics.
    assert main(["evaluate", str(run), "--format", "json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)["protocols"]["exclude-seen"]
    assert recomputed == pytest.approx(metrics["protocols"]["exclude-seen"])
    loaded = load_run(run)
    model, pre = loaded.model, loaded.pre
    assert isinstance(model, IALS) and model.num_observed == 0           # no interactions in model.pt
    assert main(["recommend", str(run), "--user", "u2", "-k", "3", "--exclude-seen", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 3
    # recommend --history: the history's user solve against the item factors, history left out.
    assert main(["recommend", str(run), "--history", "m1,m5", "-k", "3", "--format", "json"]) == 0
    items = [r["item"] for r in json.loads(capsys.readouterr().out)["items"]]
    ids = pre.items(["m1", "m5"])
    query = model.fold_in(IdLists.from_lists([list(ids)]))
    scores = (query @ model.item_embeddings(torch.arange(model.num_items)).T)[0]
    scores[0] = -float("inf")
    scores[torch.as_tensor(ids)] = -float("inf")
    vocab = pre.items.get_vocabulary()
    assert items == [vocab[j] for j in torch.argsort(scores, descending=True, stable=True)[:3].tolist()]


def test_a_resumed_ials_run_ends_with_the_same_factors(workdir, write_config, capsys):
    """Drop the last checkpoint and outputs (the run stopped after sweep 2), resume: the same factors."""
    run = workdir / "run"
    path = write_config({**IALS_RUN, "training": {"epochs": 4, "checkpoint_every": 2}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    original = torch.load(run / "model.pt", weights_only=True)
    for name in ("model.pt", "metrics.json", "checkpoints/epoch-0004.pt"):
        (run / name).unlink()
    (run / "status.json").write_text(json.dumps({"state": "running"}))
    assert main(["train", "--resume", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    again = torch.load(run / "model.pt", weights_only=True)
    torch.testing.assert_close(again["item_factors"], original["item_factors"])
    torch.testing.assert_close(again["user_factors"], original["user_factors"])


def test_the_shipped_ials_config_trains_on_movielens_format_files(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["train", "ials", "--run-dir", str(run), "--progress", "quiet", "--set", "training.epochs=2",
                 "--set", "model.embedding_dim=8", "--set", "output.plots=false"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"all-items", "exclude-seen"}
    assert 0 < metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"] <= 1
