"""The collaborative-filtering kinds (multvae, lightgcn) through the CLI on tiny generated data:
train, reload from the run folder, evaluate, recommend (and fold-in histories for multvae)."""

from __future__ import annotations

import json

import pytest
import torch

from recstack.cli.main import main
from recstack.experiment.config_files import load_config
from recstack.experiment.reporter import Reporter
from recstack.experiment.run import train
from recstack.experiment.saved_run import load_run
from recstack.models.lightgcn import normalized_adjacency, propagate


def test_multvae_kind_trains_reloads_and_folds_in(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"kind": "multvae", "hidden_sizes": [16], "latent_dim": 4,
                                   "total_anneal_steps": 10},
                         "optimizer": {"name": "adam", "learning_rate": 0.01},
                         "training": {"epochs": 5, "batch_size": 16}, "split": {"method": "random"},
                         "evaluation": {"protocols": ["exclude-seen"], "validation_protocol": "exclude-seen",
                                        "ks": [1, 5, 10]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())["history"]
    assert history["loss"][-1] < history["loss"][0]
    # The saved run scores on its own (its training rows are in model.pt): evaluate reproduces the metrics.
    assert main(["evaluate", str(run), "--format", "json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)["protocols"]["exclude-seen"]
    assert recomputed == pytest.approx(metrics["protocols"]["exclude-seen"])
    loaded = load_run(run)
    model, pre = loaded.model, loaded.pre
    assert int(model.anneal_step) == 5 * 3                       # 40 users / 16 per batch, 5 epochs
    # recommend --history: the decoder's logits of the history's fold-in, history left out.
    assert main(["recommend", str(run), "--history", "m1,m5", "-k", "3", "--format", "json"]) == 0
    items = [r["item"] for r in json.loads(capsys.readouterr().out)["items"]]
    ids = pre.items(["m1", "m5"])
    x = torch.zeros(1, model.num_items)
    x[0, torch.as_tensor(ids)] = 1
    scores = (model.fold_in(x) @ model.item_embeddings(torch.arange(model.num_items)).T)[0]
    scores[0] = -float("inf")
    scores[torch.as_tensor(ids)] = -float("inf")
    vocab = pre.items.get_vocabulary()
    assert items == [vocab[j] for j in torch.argsort(scores, descending=True, stable=True)[:3].tolist()]


def test_lightgcn_kind_trains_and_the_saved_run_scores_without_its_graph(workdir, write_config, capsys):
    run = workdir / "run"
    path = write_config({"model": {"kind": "lightgcn", "embedding_dim": 8, "num_layers": 2},
                         "optimizer": {"name": "adam", "learning_rate": 0.05},
                         "training": {"epochs": 4, "batch_size": 64}, "split": {"method": "random"},
                         "evaluation": {"protocols": ["exclude-seen"], "validation_protocol": "exclude-seen",
                                        "ks": [1, 5, 10]}})
    result = train(load_config(path), Reporter("quiet"), run_dir=run)
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    history = json.loads((run / "history.json").read_text())["history"]
    assert history["loss"][-1] < history["loss"][0]
    # model.pt holds the propagated embeddings of the ego weights saved with it (propagated here anew).
    state = torch.load(run / "model.pt", weights_only=True)
    num_users = result.model.num_users
    adjacency = normalized_adjacency(result.prepared.train["user"], result.prepared.train["item"], num_users,
                                     result.model.num_items)
    final = propagate(torch.cat([state["user_embedding.weight"], state["item_embedding.weight"]]), adjacency, 2)
    torch.testing.assert_close(state["user_final"], final[:num_users])
    torch.testing.assert_close(state["item_final"], final[num_users:])
    # The reloaded run (no graph) reproduces the test metrics and recommends.
    assert main(["evaluate", str(run), "--format", "json"]) == 0
    recomputed = json.loads(capsys.readouterr().out)["protocols"]["exclude-seen"]
    assert recomputed == pytest.approx(metrics["protocols"]["exclude-seen"])
    assert not load_run(run).model.has_graph
    assert main(["recommend", str(run), "--user", "u2", "-k", "3", "--exclude-seen", "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 3


@pytest.mark.parametrize("name", ["multvae", "lightgcn"])
def test_the_shipped_configs_train_on_movielens_format_files(name, synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["train", name, "--run-dir", str(run), "--progress", "quiet", "--set", "training.epochs=2",
                 "--set", "output.plots=false"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["protocols"]) == {"all-items", "exclude-seen"}
    assert 0 < metrics["protocols"]["exclude-seen"]["factorized_top_k/recall_at_10"] <= 1


def test_multvae_is_evaluated_from_histories_on_the_next_item_protocol(workdir, write_config, capsys):
    """Leave-last-out: the held-out item is ranked after the fold-in of the user's earlier items."""
    run = workdir / "run"
    path = write_config({"model": {"kind": "multvae", "hidden_sizes": [16], "latent_dim": 4},
                         "optimizer": {"name": "adam", "learning_rate": 0.01},
                         "training": {"epochs": 3, "batch_size": 16}, "split": {"method": "leave-one-out"},
                         "evaluation": {"protocols": ["next-item"], "ks": [1, 5, 10]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    metrics = json.loads((run / "metrics.json").read_text())["protocols"]
    assert metrics["next-item"]["rows"] == 40 and 0 <= metrics["next-item"]["hr_at_10"] <= 1
    # The reloaded model (its rows come from model.pt): a user's fold-in is its user embedding.
    loaded = load_run(run)
    model = loaded.model
    users = torch.arange(1, model.num_users)
    torch.testing.assert_close(model.fold_in(model.seen[users]), model.user_embeddings(users))
