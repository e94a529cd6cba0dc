"""The CLI end to end on tiny generated data: train -> evaluate -> recommend / similar."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.experiment.saved_run import load_run
from recstack.cli.main import main

from .conftest import make_items, make_ratings


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_csv_train_evaluate_recommend(workdir, write_config, capsys):
    run = workdir / "run"
    code, out, err = run_cli(["train", write_config(), "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    assert "Test metrics (40 test rows)" in out and "exclude-seen" in out
    for name in ("config.yaml", "environment.json", "data.json", "preprocessing.json", "seen.pt", "test.pt",
                 "history.csv", "history.json", "model.pt", "metrics.json", "status.json",
                 "checkpoints/epoch-0002.pt"):
        assert (run / name).exists(), name
    assert json.loads((run / "status.json").read_text())["state"] == "completed"
    data = json.loads((run / "data.json").read_text())
    assert data["rows"] == {"read": 320, "after_duplicates": 320, "train": 280, "validation": 0, "test": 40}
    assert len(data["files"]) == 1 and len(data["files"][0]["sha256"]) == 64
    history = pd.read_csv(run / "history.csv")
    assert history["epoch"].tolist() == [1, 2] and "examples_per_second" in history
    metrics = json.loads((run / "metrics.json").read_text())

    # evaluate recomputes the stored metrics from the run folder alone.
    code, out, _ = run_cli(["evaluate", run, "--format", "json"], capsys)
    assert code == 0
    for protocol, values in json.loads(out)["protocols"].items():
        assert values == pytest.approx(metrics["protocols"][protocol])

    # The all-items protocol, recomputed by hand from the saved weights (plain numpy):
    # rank = #catalogue items scoring strictly above the test item.
    state = torch.load(run / "model.pt", weights_only=True)
    users_w = state["query_tower.id_embedding.weight"].numpy().astype(np.float64)
    items_w = state["candidate_tower.id_embedding.weight"].numpy().astype(np.float64)
    test = torch.load(run / "test.pt", weights_only=True)
    u, i = test["user"].numpy(), test["item"].numpy()
    scores = users_w[u] @ items_w[1:].T                       # catalogue = ids 1..V-1
    positive = (users_w[u] * items_w[i]).sum(1)
    ranks = (scores > positive[:, None] + 1e-6).sum(1)
    for k in (1, 5, 10):
        assert metrics["protocols"]["all-items"][f"factorized_top_k/top_{k}_categorical_accuracy"] == \
            pytest.approx(float((ranks < k).mean()), abs=1.5 / len(u))

    # recommend: highest dot products, seen items left out (checked against the CSV's training rows).
    loaded = load_run(run)
    code, out, _ = run_cli(["recommend", run, "--user", "u5", "-k", "4", "--exclude-seen", "--format", "json"],
                           capsys)
    assert code == 0
    result = json.loads(out)
    ratings = make_ratings()
    last = ratings.sort_values("timestamp").groupby("userId").tail(1)
    seen = set(ratings[(ratings.userId == "u5")].movieId) - set(last[last.userId == "u5"].movieId)
    vocab = loaded.pre.items.get_vocabulary()
    uid = int(loaded.pre.users(["u5"])[0])
    all_scores = users_w[uid] @ items_w.T
    expected = [vocab[j] for j in np.argsort(-all_scores, kind="stable") if j > 0 and vocab[j] not in seen][:4]
    assert [r["item"] for r in result["items"]] == expected
    assert [r["score"] for r in result["items"]] == pytest.approx(
        [all_scores[vocab.index(x)] for x in expected], rel=1e-5)
    code, out, _ = run_cli(["recommend", run, "--user", "u5", "-k", "3"], capsys)
    assert code == 0 and "Top 3 items for user u5" in out


def test_parquet_with_item_text_features(workdir, write_config, capsys):
    pytest.importorskip("pyarrow")
    make_ratings().to_parquet(workdir / "ratings.parquet")
    make_items().to_parquet(workdir / "items.parquet")
    path = write_config({"data": {"interactions": "ratings.parquet",
                                  "items": {"path": "items.parquet", "id": "movieId", "categorical": ["genre"],
                                            "numeric": ["year"], "text": "title"}},
                         "model": {"layer_sizes": [8]}, "training": {"epochs": 2}})
    run = workdir / "run"
    code, out, err = run_cli(["train", path, "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    pre = json.loads((run / "preprocessing.json").read_text())
    layers = {f["output"]: f["layer"]["class"] for f in pre["item_features"]["features"]}
    assert layers == {"cat:genre": "StringLookup", "num:year": "Normalization", "text": "TextVectorization"}
    state = torch.load(run / "model.pt", weights_only=True)
    # The item feature tables travel with the weights: row of m7 holds its title's tokens.
    loaded = load_run(run)
    m7 = int(loaded.pre.items(["m7"])[0])
    tokens = loaded.pre.item_features["text"](["The crime story part 7"])[0]
    assert torch.equal(state["candidate_tower.text_table"][m7], tokens)
    code, out, _ = run_cli(["similar", run, "--item", "m7", "-k", "3"], capsys)
    assert code == 0 and "Items most similar to m7" in out and "The " in out   # titles shown as labels
    code, out, _ = run_cli(["recommend", run, "--user", "u1", "-k", "5", "--format", "json"], capsys)
    items = json.loads(out)["items"]
    assert len(items) == 5 and all(it["label"].startswith("The ") for it in items)


def test_rating_task_reports_rmse(workdir, write_config, capsys):
    run = workdir / "run"
    code, out, err = run_cli(["train", write_config({"tasks": {"rating": {"weight": 1.0}},
                                                     "output": {"plots": True}}),
                              "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    rmse = metrics["test"]["root_mean_squared_error"]
    assert 0 < rmse < 5 and "rating RMSE" in out
    history = json.loads((run / "history.json").read_text())["history"]
    assert "root_mean_squared_error" in history
    pytest.importorskip("matplotlib")
    assert {p.name for p in (run / "plots").glob("*.png")} == {"loss.png", "rmse.png", "long_tail.png"}


def test_validation_split_and_jsonl_progress(workdir, write_config, capsys):
    run = workdir / "run"
    config = write_config({"split": {"validation_fraction": 0.1},
                           "evaluation": {"validation_protocol": "exclude-seen"}, "training": {"epochs": 3},
                           "output": {"plots": True}})
    code, out, err = run_cli(["train", config, "--run-dir", run, "--progress", "jsonl"], capsys)
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]     # stdout is only JSON lines
    kinds = [e["event"] for e in events]
    assert kinds.count("epoch_end") == 3 and kinds[-1] == "result" and "train_begin" in kinds
    epoch = next(e for e in events if e["event"] == "epoch_end")
    assert epoch["logs"]["examples_per_second"] > 0
    assert "val_factorized_top_k/recall_at_10" in epoch["logs"]
    data = json.loads((run / "data.json").read_text())
    assert data["rows"]["validation"] == 40 and data["rows"]["train"] == 240
    pytest.importorskip("matplotlib")
    names = {p.name for p in (run / "plots").glob("*.png")}
    families = {"loss.png", "top_k_accuracy.png", "ndcg_mrr.png", "long_tail.png"}
    assert families <= names <= families | {"recall.png"}    # recall.png only where recall@k differs from top-k


def test_popularity_recommends_the_most_popular_unseen_items(workdir, write_config, capsys):
    run = workdir / "run"
    code, _, err = run_cli(["train", write_config({"model": {"kind": "popularity"}}), "--run-dir", run,
                            "--progress", "quiet"], capsys)
    assert code == 0, err
    code, out, _ = run_cli(["recommend", run, "--user", "u2", "-k", "5", "--exclude-seen", "--format", "json"],
                           capsys)
    ratings = make_ratings()
    last = ratings.sort_values("timestamp").groupby("userId").tail(1)
    train = ratings.drop(last.index)
    counts = train.movieId.value_counts()
    seen = set(train[train.userId == "u2"].movieId)
    # Ties: the lower item id (vocabulary order = sorted strings) first.
    ranked = sorted(counts.index, key=lambda m: (-counts[m], m))
    expected = [m for m in ranked if m not in seen][:5]
    assert [r["item"] for r in json.loads(out)["items"]] == expected


def test_unknown_user_is_cold_start_and_unknown_item_is_an_error(workdir, write_config, capsys):
    run = workdir / "run"
    assert run_cli(["train", write_config(), "--run-dir", run, "--progress", "quiet"], capsys)[0] == 0
    code, out, _ = run_cli(["recommend", run, "--user", "stranger", "-k", "2"], capsys)
    assert code == 0 and "was not in the training data" in out and "cold start" in out
    code, _, err = run_cli(["similar", run, "--item", "m999"], capsys)
    assert code == 1 and "item 'm999' is not in the catalogue of this run (24 items" in err


def test_run_dir_errors(workdir, write_config, capsys):
    run = workdir / "run"
    assert run_cli(["train", write_config(), "--run-dir", run, "--progress", "quiet"], capsys)[0] == 0
    code, _, err = run_cli(["train", write_config(), "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 2 and "already exists and is not empty" in err and "--resume" in err
    code, _, err = run_cli(["evaluate", workdir / "nothing"], capsys)
    assert code == 1 and "does not exist" in err
    code, _, err = run_cli(["train"], capsys)
    assert code == 2 and "train needs a CONFIG (a shipped config's name" in err
    code, _, err = run_cli(["train", "--resume", run, "--set", "training.epochs=3"], capsys)
    assert code == 2 and "--resume RUN_DIR continues a run with its own config" in err


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["recommend"], ["similar"], ["export"],
                                     ["serve"], ["reproduce"], ["configs"], ["data"], ["data", "fetch"], ["data", "info"]])
def test_every_command_has_help(command, capsys):
    assert main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: recstack")


def test_usage_errors_exit_2(capsys):
    assert main(["frobnicate"]) == 2
    assert main(["recommend", "somewhere"]) == 2          # --user is required
    assert main(["recommend", "somewhere", "--user", "1", "-k", "0"]) == 2
    assert "expected a positive integer" in capsys.readouterr().err
    assert main(["reproduce", "basic-retreival"]) == 2
    assert "no config file and no shipped config named 'basic-retreival' (did you mean 'basic-retrieval'?)" in \
        capsys.readouterr().err
    assert main(["evaluate", "somewhere", "--protocol", "all"]) == 2
    assert ("invalid choice: 'all' (choose from all-items, exclude-seen, next-item, next-item-sampled)"
            in capsys.readouterr().err)


def test_export_and_serve_fail_clearly_without_serving(workdir, write_config, capsys, monkeypatch):
    import sys

    run = workdir / "run"
    assert run_cli(["train", write_config(), "--run-dir", run, "--progress", "quiet"], capsys)[0] == 0
    monkeypatch.setitem(sys.modules, "recstack.serving", None)   # import fails as if absent
    code, _, err = run_cli(["export", run, workdir / "bundle"], capsys)
    assert code == 1 and "recstack export needs recstack.serving" in err
    code, _, err = run_cli(["serve", workdir / "bundle"], capsys)
    assert code == 1 and "recstack serve needs recstack.serving" in err


def test_metrics_are_finite_numbers(workdir, write_config, capsys):
    run = workdir / "run"
    assert run_cli(["train", write_config({"model": {"kind": "ease", "l2": 10.0}}), "--run-dir", run,
                    "--progress", "quiet"], capsys)[0] == 0
    metrics = json.loads((run / "metrics.json").read_text())
    values = [v for p in metrics["protocols"].values() for v in p.values()]
    assert values and all(isinstance(v, float) and math.isfinite(v) and 0 <= v <= 1 for v in values)


def test_logq_correction_uses_training_item_frequencies(workdir, write_config, capsys):
    run = workdir / "run"
    code, _, err = run_cli(["train", write_config({"tasks": {"retrieval": {"logq_correction": True}}}),
                            "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    ratings = make_ratings()
    train = ratings.drop(ratings.sort_values("timestamp").groupby("userId").tail(1).index)
    loaded = load_run(run)
    probability = loaded.model.item_probability
    for movie, count in train.movieId.value_counts().items():
        assert probability[int(loaded.pre.items([movie])[0])].item() == pytest.approx(count / len(train))
    assert probability.sum().item() == pytest.approx(1.0)


def test_tensorboard_is_optional(workdir, write_config, capsys):
    run = workdir / "run"
    code, out, err = run_cli(["train", write_config({"output": {"tensorboard": True}}), "--run-dir", run,
                              "--progress", "bar"], capsys)
    assert code == 0, err
    try:
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except Exception:
        assert "TensorBoard logging skipped" in out and "pip install tensorboard" in out
    else:
        assert any((run / "tensorboard").iterdir())


def test_data_fetch_reports_where_the_data_is(synthetic_ml100k, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    assert main(["data", "fetch", "movielens-100k"]) == 0
    assert f"MovieLens 100K is available at {synthetic_ml100k}" in capsys.readouterr().out


def test_export_bundle_serves_the_same_recommendations(workdir, write_config, capsys):
    serving = pytest.importorskip("recstack.serving")
    if not hasattr(serving, "load_bundle"):
        pytest.skip("recstack.serving has no load_bundle in this checkout")
    run, bundle = workdir / "run", workdir / "bundle"
    assert run_cli(["train", write_config({"tasks": {"rating": {"weight": 0.5}}}), "--run-dir", run,
                    "--progress", "quiet"], capsys)[0] == 0
    code, out, err = run_cli(["export", run, bundle], capsys)
    assert code == 0, err
    loaded = serving.load_bundle(bundle)
    served = loaded.recommend({"userId": "u7"}, k=5, exclude_seen=True)
    code, out, _ = run_cli(["recommend", run, "--user", "u7", "-k", "5", "--exclude-seen", "--format", "json"],
                           capsys)
    ours = json.loads(out)["items"]
    assert served.items == [r["item"] for r in ours]
    assert served.scores == pytest.approx([r["score"] for r in ours], rel=1e-5)
    assert loaded.recommend({"userId": "nobody"}, k=2).cold_start


def test_time_aware_user_tower_scores_each_row_at_its_time(workdir, write_config, capsys):
    """model.timestamp_buckets: the deep-retrieval query tower; test rows use their own timestamps."""
    run = workdir / "run"
    path = write_config({"model": {"timestamp_buckets": 16, "layer_sizes": [8]},
                         "data": {"items": {"path": "items.csv", "id": "movieId", "text": "title"}}})
    code, out, err = run_cli(["train", path, "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    loaded = load_run(run)
    test = loaded.test_columns()
    assert test["timestamp"].dtype == torch.float64
    batch = {k: v[:5] for k, v in test.items()}
    shifted = {**batch, "timestamp": batch["timestamp"] - 30_000}
    with torch.no_grad():
        assert not torch.allclose(loaded.model.query_embeddings(batch), loaded.model.query_embeddings(shifted))
        # recommend() has no time: the latest training timestamp stands for "now".
        now = torch.full_like(batch["timestamp"], float(loaded.model.query_tower.time.reference))
        torch.testing.assert_close(loaded.model.user_embeddings(batch["user"]),
                                   loaded.model.query_embeddings({**batch, "timestamp": now}))
    assert run_cli(["recommend", run, "--user", "u3", "-k", "3"], capsys)[0] == 0


def test_time_aware_tower_without_a_timestamp_column_is_a_clear_error(workdir, write_config, capsys):
    import yaml

    path = write_config({"model": {"timestamp_buckets": 16}, "split": {"method": "random"}})
    config = yaml.safe_load(path.read_text())
    del config["data"]["columns"]["timestamp"]
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_cli(["train", path, "--run-dir", workdir / "run", "--progress", "quiet"], capsys)
    assert code != 0 and "data.columns.timestamp" in err


def test_autorec_kind_trains_on_matrix_rows_and_reloads(workdir, write_config, capsys):
    """model.kind autorec: trained on the rows of the rating matrix, evaluated by test RMSE, and the
    saved run (matrix included) predicts and recommends on its own."""
    run = workdir / "run"
    path = write_config({"model": {"kind": "autorec", "hidden_sizes": [16], "dropout": 0.0},
                         "optimizer": {"name": "adam", "learning_rate": 0.01},
                         "training": {"epochs": 3, "batch_size": 8}, "split": {"method": "random"},
                         "features": {"vocabulary": "all"}})
    code, out, err = run_cli(["train", path, "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    metrics = json.loads((run / "metrics.json").read_text())
    rmse = metrics["test"]["root_mean_squared_error"]
    assert 0 < rmse < 4 and "rating RMSE" in out
    history = json.loads((run / "history.json").read_text())["history"]
    assert len(history["loss"]) == 3 and history["loss"][-1] < history["loss"][0]
    loaded = load_run(run)
    model = loaded.model
    test = loaded.test_columns()
    # The reloaded model reproduces the reported RMSE from its own state_dict.
    assert model.evaluate(test)["root_mean_squared_error"] == pytest.approx(rmse, rel=1e-6)
    # The factorized form: user . item = the unclipped prediction of the identity decoder.
    users, items = test["user"][:6], test["item"][:6]
    dots = (model.user_embeddings(users) * model.item_embeddings(items)).sum(1)
    with torch.no_grad():
        model.eval()
        expected = model(model.inputs[items])[torch.arange(6), users]
    torch.testing.assert_close(dots, expected)
    code, out, _ = run_cli(["recommend", run, "--user", "u2", "-k", "3", "--exclude-seen"], capsys)
    assert code == 0 and "m" in out


def test_autorec_kind_needs_ratings(workdir, write_config, capsys):
    import yaml

    path = write_config({"model": {"kind": "autorec"}, "split": {"method": "random"}})
    config = yaml.safe_load(path.read_text())
    del config["data"]["columns"]["rating"]
    path.write_text(yaml.safe_dump(config))
    code, _, err = run_cli(["train", path, "--run-dir", workdir / "run", "--progress", "quiet"], capsys)
    assert code != 0 and "data.columns.rating" in err


def test_train_with_two_processes_matches_one(workdir, write_config, capsys):
    """`recstack train --nproc 2` (torchrun, gloo): the same metrics as one process, one run folder."""
    import subprocess
    import sys

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    path = write_config({"model": {"layer_sizes": [8]}, "training": {"epochs": 2, "batch_size": 64},
                         "split": {"method": "random"}})
    single = workdir / "single"
    assert run_cli(["train", path, "--run-dir", single, "--progress", "quiet"], capsys)[0] == 0
    double = workdir / "double"
    proc = subprocess.run([sys.executable, "-m", "recstack", "train", str(path), "--run-dir", str(double),
                           "--progress", "quiet", "--nproc", "2"], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    one = json.loads((single / "metrics.json").read_text())
    two = json.loads((double / "metrics.json").read_text())
    assert two["processes"] == 2 and one["processes"] == 1
    for protocol, values in one["protocols"].items():
        assert two["protocols"][protocol] == pytest.approx(values, rel=1e-4, abs=1e-6)
    h1 = json.loads((single / "history.json").read_text())["history"]["loss"]
    h2 = json.loads((double / "history.json").read_text())["history"]["loss"]
    assert h2 == pytest.approx(h1, rel=1e-5)


def test_sparse_gradients_train_like_dense_adagrad(workdir, write_config, capsys):
    """model.sparse_gradients: a step touches only the batch's rows; Adagrad's result is unchanged."""
    runs = {}
    for sparse in (False, True):
        run = workdir / f"run-{sparse}"
        path = write_config({"model": {"sparse_gradients": sparse}, "training": {"epochs": 3}}, name=f"{sparse}.yaml")
        code, _, err = run_cli(["train", path, "--run-dir", run, "--progress", "quiet"], capsys)
        assert code == 0, err
        runs[sparse] = torch.load(run / "model.pt", weights_only=True)
    for name, weight in runs[False].items():
        torch.testing.assert_close(runs[True][name], weight, rtol=1e-5, atol=1e-6)
    code, _, err = run_cli(["train", write_config({"model": {"sparse_gradients": True},
                                                   "optimizer": {"name": "adam"}}, name="adam.yaml"),
                            "--run-dir", workdir / "adam", "--progress", "quiet"], capsys)
    assert code == 2 and "adagrad or sgd" in err


def test_bf16_precision_option_trains(workdir, write_config, capsys):
    run = workdir / "run"
    code, _, err = run_cli(["train", write_config({"model": {"layer_sizes": [8]},
                                                   "training": {"precision": "bf16", "epochs": 2}}),
                            "--run-dir", run, "--progress", "quiet"], capsys)
    assert code == 0, err
    history = json.loads((run / "history.json").read_text())["history"]
    assert all(math.isfinite(x) for x in history["loss"])


def test_training_threads_option_sets_torch_threads(workdir, write_config, capsys):
    """training.threads: the run trains with that many intra-op threads; 0 leaves torch's default."""
    before = torch.get_num_threads()
    target = 1 if before != 1 else 2
    try:
        code, _, err = run_cli(["train", write_config({"training": {"threads": target, "epochs": 1}}),
                                "--run-dir", workdir / "run", "--progress", "quiet"], capsys)
        assert code == 0, err
        assert torch.get_num_threads() == target
    finally:
        torch.set_num_threads(before)
    code, _, err = run_cli(["train", write_config({"training": {"threads": -1}}, name="bad.yaml"),
                            "--run-dir", workdir / "bad", "--progress", "quiet"], capsys)
    assert code == 2 and "training.threads: must be >= 0" in err
