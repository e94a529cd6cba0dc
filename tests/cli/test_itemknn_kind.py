"""The itemknn kind through the CLI on tiny generated data: train, evaluate the saved run, reload,
recommend --history (the history's multi-hot row times the neighbour weights) and next-item."""

from __future__ import annotations

import json

import pytest
import torch

from recstack.cli.main import main
from recstack.experiment.saved_run import load_run
from recstack.models.itemknn import itemknn_neighbours


def test_itemknn_trains_evaluates_reloads_and_recommends_from_a_history(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"kind": "itemknn", "k": 5, "shrink": 2.0}, "split": {"method": "random"},
                         "evaluation": {"protocols": ["all-items", "exclude-seen"], "ks": [1, 5, 10]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert 0 < metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"] <= 1
    assert main(["evaluate", str(run), "--format", "json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)["protocols"]
    for protocol in ("all-items", "exclude-seen"):
        assert recomputed[protocol] == pytest.approx(metrics["protocols"][protocol])
    # The reloaded weights are the formula's on the saved training rows, k kept per item.
    model, pre = load_run(run).model, load_run(run).pre
    torch.testing.assert_close(model.N, itemknn_neighbours(model.X, k=5, shrink=2.0))
    assert int((model.N != 0).sum(dim=1).max()) <= 5
    # recommend --history: x_history · N[j], the history and the OOV id left out, ties by catalogue order.
    assert main(["recommend", str(run), "--history", "m1,m5", "-k", "3", "--format", "json"]) == 0
    items = [r["item"] for r in json.loads(capsys.readouterr().out)["items"]]
    ids = torch.as_tensor(pre.items(["m1", "m5"]))
    x = torch.zeros(model.num_items, dtype=torch.float64)
    x[ids] = 1.0
    scores = model.N @ x
    scores[0] = -float("inf")
    scores[ids] = -float("inf")
    vocab = pre.items.get_vocabulary()
    assert items == [vocab[j] for j in torch.argsort(scores, descending=True, stable=True)[:3].tolist()]
    # recommend --user: the user's training row.
    assert main(["recommend", str(run), "--user", "u2", "-k", "3", "--exclude-seen", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 3


def test_itemknn_is_evaluated_from_histories_on_the_next_item_protocol(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"kind": "itemknn", "k": 3}, "split": {"method": "leave-one-out"},
                         "evaluation": {"protocols": ["next-item"], "ks": [1, 5, 10]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())["protocols"]
    assert metrics["next-item"]["rows"] == 40 and 0 < metrics["next-item"]["hr_at_10"] <= 1


def test_a_bad_itemknn_param_exits_2_naming_the_key(write_config, capsys):
    assert main(["train", str(write_config({"model": {"kind": "itemknn", "k": 0}}))]) == 2
    assert "model.k: must be >= 1" in capsys.readouterr().err


def test_the_shipped_config_trains_on_movielens_format_files(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["train", "itemknn", "--run-dir", str(run), "--progress", "quiet", "--set", "output.plots=false"]) == 0, \
        capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"all-items", "exclude-seen"}
    assert 0 < metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"] <= 1
