"""two_tower with ``model.user_history`` through the CLI on tiny generated data: train, reload from the
run folder alone, evaluate, recommend for a stored user and for an ad-hoc history (a new user), the
next-item protocol from histories, and config errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from recstack.cli.main import main
from recstack.experiment.config_files import load_config
from recstack.experiment.reporter import Reporter
from recstack.experiment.run import train
from recstack.experiment.saved_run import load_run
from recstack.models.user_history import latest_items_table

HISTORY = {"pooling": "attention", "max_length": 5}


def test_history_two_tower_trains_reloads_evaluates_and_recommends(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"user_history": HISTORY}, "split": {"method": "random"},
                         "training": {"epochs": 3},
                         "evaluation": {"protocols": ["exclude-seen"], "validation_protocol": "exclude-seen"}})
    result = train(load_config(path), Reporter("quiet"), run_dir=run)
    capsys.readouterr()
    assert result.history.history["loss"][-1] < result.history.history["loss"][0]
    # The stored histories are each user's latest training items (timestamps), in model.pt.
    prepared = result.prepared
    expected = latest_items_table(prepared.train["user"], prepared.train["item"], prepared.train["timestamp"],
                                  result.model.query_tower.history_table.shape[0], 5)
    state = torch.load(run / "model.pt", weights_only=True)
    torch.testing.assert_close(state["query_tower.history_table"], expected)
    # Moved elsewhere, the folder alone reproduces the test metrics (no data files read).
    moved = workdir / "moved"
    shutil.move(str(run), moved)
    (workdir / "ratings.csv").unlink()
    metrics = json.loads((moved / "metrics.json").read_text())["protocols"]["exclude-seen"]
    assert main(["evaluate", str(moved), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocols"]["exclude-seen"] == pytest.approx(metrics)
    loaded = load_run(moved)
    model, pre = loaded.model, loaded.pre
    users = torch.arange(model.query_tower.history_table.shape[0])
    torch.testing.assert_close(model.user_embeddings(users), result.model.cpu().eval().user_embeddings(users))
    # recommend --history: a user unseen in training, queried from the items alone; the history is left out.
    assert main(["recommend", str(moved), "--history", "m1,m5,zz", "-k", "3", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["history"] == ["m1", "m5"] and out["unknown"] == ["zz"]
    ids = pre.items(["m1", "m5"])
    query = model.history_query_embeddings(torch.as_tensor(ids).view(1, -1))
    scores = (query @ model.item_embeddings(torch.arange(1, pre.num_items)).T)[0]
    scores[torch.as_tensor(ids) - 1] = -float("inf")
    vocab = pre.items.get_vocabulary()
    top = torch.sort(scores, descending=True, stable=True).indices[:3] + 1
    assert [r["item"] for r in out["items"]] == [vocab[j] for j in top.tolist()]
    assert [r["score"] for r in out["items"]] == pytest.approx(scores[top - 1].tolist(), rel=1e-5)
    # recommend --user reads the stored history; so does an exported bundle's query tower.
    assert main(["recommend", str(moved), "--user", "u3", "-k", "3", "--exclude-seen", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 3
    assert main(["export", str(moved), str(workdir / "bundle")]) == 0
    from recstack.serving import load_bundle

    emb, _ = load_bundle(workdir / "bundle").query_embeddings([{"userId": "u3"}])
    torch.testing.assert_close(torch.as_tensor(emb).float(), model.user_embeddings(pre.users(["u3"])))


def test_history_two_tower_is_evaluated_from_histories_on_the_next_item_protocol(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"user_history": {"pooling": "mean", "use_id": False}},
                         "split": {"method": "leave-one-out"}, "training": {"epochs": 2},
                         "evaluation": {"protocols": ["next-item"]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())["protocols"]["next-item"]
    assert metrics["rows"] == 40 and 0 <= metrics["hr_at_10"] <= 1
    capsys.readouterr()
    assert main(["evaluate", str(run), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["protocols"]["next-item"] == pytest.approx(metrics)


def test_history_option_errors_through_the_cli(workdir, write_config, capsys):
    path = write_config({"model": {"user_history": {"pooling": "sum", "max_length": 0}}})
    assert main(["train", str(path), "--run-dir", str(workdir / "run"), "--progress", "quiet"]) == 2
    err = capsys.readouterr().err
    assert "model.user_history.pooling: must be one of 'mean', 'attention'; got 'sum'" in err
    assert "model.user_history.max_length: must be >= 1, got 0" in err
