"""The next-item pipeline of ``recstack train``: the leave-one-out split, the sequential kinds, and
every other kind on the same protocol, against independent computations."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from recstack.cli.main import main
from recstack.experiment.config import parse_config
from recstack.experiment.interactions import leave_one_out_split
from recstack.experiment.prepare import prepare
from recstack.experiment.reporter import Reporter
from recstack.experiment.saved_run import load_run

from sequential_walks import GRU4REC, SASREC, sequential_config, walks


def train(config: Path, run: Path, *extra: str) -> dict:
    assert main(["train", str(config), "--run-dir", str(run), "--progress", "quiet", *extra]) == 0
    return json.loads((run / "metrics.json").read_text())


# -- the split ---------------------------------------------------------------------------------------
HAND_MADE = pd.DataFrame({          # file order matters for equal timestamps
    "user": ["a", "a", "b", "a", "a", "b", "c", "c", "b"],
    "item": ["x", "y", "x", "z", "w", "y", "x", "y", "z"],
    "time": [5, 1, 3, 5, 9, 3, 1, 2, 7],
})


def test_leave_one_out_holds_out_the_last_two_by_time_ties_in_file_order():
    splits = leave_one_out_split(HAND_MADE.rename(columns={"time": "timestamp"}))
    # a: y(1) x(5, row 0) z(5, row 3) w(9) -> test w, validation z; b: x(3, row 2) y(3, row 5) z(7);
    # c has two interactions: training only.
    rows = lambda frame: sorted(map(tuple, frame[["user", "item"]].to_numpy()))   # noqa: E731
    assert rows(splits.test) == [("a", "w"), ("b", "z")]
    assert rows(splits.validation) == [("a", "z"), ("b", "y")]
    assert rows(splits.train) == [("a", "x"), ("a", "y"), ("b", "x"), ("c", "x"), ("c", "y")]
    assert splits.train["item"].tolist() == ["x", "y", "x", "x", "y"]       # file order kept


def test_the_pipeline_keeps_each_users_history_in_time_order(tmp_path):
    HAND_MADE.to_csv(tmp_path / "hand.csv", index=False)
    config = parse_config({"data": {"interactions": str(tmp_path / "hand.csv"),
                                    "columns": {"user": "user", "item": "item", "timestamp": "time"}},
                           "split": {"method": "leave-one-out"}, "model": {"kind": "transitions"},
                           "features": {"vocabulary": "all"}})     # w and z are never training items
    assert config.evaluation.protocols == ["next-item"] and config.evaluation.validation_protocol == "next-item"
    prepared = prepare(config, Reporter("quiet"))
    pre = prepared.pre

    def raw(lists, user):
        return pre.items.lookup_inverse(lists.row(int(pre.users([user])[0]))).tolist()

    assert [raw(prepared.histories_train, u) for u in "abc"] == [["y", "x"], ["x"], ["x", "y"]]
    assert [raw(prepared.histories_before_test, u) for u in "abc"] == [["y", "x", "z"], ["x", "y"], ["x", "y"]]
    assert prepared.info["rows"]["validation"] == 2 and prepared.info["rows"]["test"] == 2


def test_leave_one_out_needs_a_user_with_three_interactions():
    from recstack.core.errors import DataError

    with pytest.raises(DataError, match="no user of the 4 rows has 3"):
        leave_one_out_split(HAND_MADE.rename(columns={"time": "timestamp"}).iloc[[0, 1, 2, 5]])


# -- every kind on the next-item protocol ------------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """popularity, transitions, sasrec and gru4rec trained on the walks by recstack train."""
    folder = tmp_path_factory.mktemp("walks")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    out = {}
    early = {"early_stopping": {"metric": "mrr", "patience": 4}}
    for name, model, training in (("popularity", {"kind": "popularity"}, {}),
                                  ("transitions", {"kind": "transitions"}, {}),
                                  ("sasrec", SASREC, early), ("gru4rec", GRU4REC, early)):
        run = folder / name
        out[name] = (run, train(sequential_config(folder, model, training=training), run))
    torch.set_num_threads(threads)
    return out


def test_sequential_kinds_beat_popularity_and_transitions(runs):
    mrr = {name: metrics["protocols"]["next-item"]["mrr"] for name, (_, metrics) in runs.items()}
    assert mrr["popularity"] < 0.3
    assert mrr["transitions"] > mrr["popularity"] + 0.2          # the last item halves the choice
    for name in ("sasrec", "gru4rec"):
        metrics = runs[name][1]
        assert metrics["protocols"]["next-item"]["hr_at_1"] > 0.8, metrics
        assert mrr[name] > mrr["transitions"] + 0.15              # the step needs two items
        assert metrics["protocols"]["next-item"]["rows"] == 120   # one held-out item per user
        assert metrics["validation"]["protocol"] == "next-item"


def test_model_selection_keeps_the_best_validation_epoch(runs):
    run, metrics = runs["sasrec"]
    history = json.loads((run / "history.json").read_text())
    values = history["history"]["val_next_item/mrr"]
    best = history["epochs"][int(np.nanargmax(np.array(values, dtype=float)))]
    assert metrics["best_epoch"] == best
    assert metrics["validation"]["mrr"] == pytest.approx(max(values))
    assert metrics["epochs"] <= min(best + 4, 25)                 # patience 4
    weights = torch.load(run / "model.pt", weights_only=True)
    chosen = torch.load(run / "best.pt", weights_only=True)
    assert chosen["epoch"] == best
    assert all(torch.equal(weights[k], chosen["model"][k]) for k in weights)
    if best < metrics["epochs"]:                                  # the last epoch's weights were replaced
        last = torch.load(run / "checkpoints" / f"epoch-{metrics['epochs']:04d}.pt", weights_only=True)["model"]
        assert not all(torch.equal(weights[k], last[k]) for k in weights)


def test_evaluate_after_reload_reproduces_the_run(runs, capsys):
    for name in ("sasrec", "transitions"):
        run, metrics = runs[name]
        assert main(["evaluate", str(run), "--format", "json"]) == 0
        again = json.loads(capsys.readouterr().out)
        assert again["protocols"]["next-item"] == pytest.approx(metrics["protocols"]["next-item"])


def _ranks(scores: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Rank of each row's target among columns 1.. (ties against the target), in numpy."""
    own = scores[np.arange(len(targets)), targets]
    ahead = scores[:, 1:] >= own[:, None]
    return ahead.sum(axis=1) - 1                                  # the target itself is >= itself


def _reference_metrics(ranks: np.ndarray) -> dict[str, float]:
    return {"hr_at_5": float(np.mean(ranks < 5)), "ndcg_at_10": float(np.mean((ranks < 10) / np.log2(ranks + 2))),
            "mrr": float(np.mean(1 / (ranks + 1)))}


def test_ease_ranks_from_the_whole_history_before_the_test_item(tmp_path):
    """EASE's query on the next-item protocol is the multi-hot row of every earlier item (training
    and validation), scored by B fitted on the training rows: checked against numpy."""
    data = walks(60, seed=3)
    data.to_csv(tmp_path / "walks.csv", index=False)
    run = tmp_path / "ease"
    metrics = train(sequential_config(tmp_path, {"kind": "ease", "l2": 5.0}), run)["protocols"]["next-item"]
    splits = leave_one_out_split(data.rename(columns={"time": "timestamp"}))
    items = sorted(splits.train["item"].unique())
    column = {item: j + 1 for j, item in enumerate(items)}        # column 0: nothing (the pad id)
    users = sorted(data["user"].unique())
    row = {u: r for r, u in enumerate(users)}
    X = np.zeros((len(users), len(items) + 1))
    X[splits.train["user"].map(row), splits.train["item"].map(column)] = 1
    G = X[:, 1:].T @ X[:, 1:] + 5.0 * np.eye(len(items))
    P = np.linalg.inv(G)
    B = np.zeros((len(items) + 1, len(items) + 1))
    B[1:, 1:] = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    before = pd.concat([splits.train, splits.validation])
    before = before[before["item"].isin(column)]                 # items unknown to training are dropped
    test = splits.test[splits.test["item"].isin(column)]
    H = np.zeros((len(test), len(items) + 1))
    for r, user in enumerate(test["user"]):
        H[r, before.loc[before["user"] == user, "item"].map(column)] = 1
    ranks = _ranks(H @ B, test["item"].map(column).to_numpy())
    assert metrics["rows"] == len(test)
    for key, value in _reference_metrics(ranks).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_two_tower_is_scored_by_its_user_and_item_embeddings(tmp_path):
    run = tmp_path / "tt"
    metrics = train(sequential_config(tmp_path, {"kind": "two_tower", "embedding_dim": 8},
                                      optimizer={"name": "adagrad", "learning_rate": 0.1},
                                      training={"epochs": 3}), run)["protocols"]["next-item"]
    loaded = load_run(run)
    test = loaded.test_columns()
    with torch.no_grad():
        scores = (loaded.model.user_embeddings(test["user"]) @
                  loaded.model.item_embeddings(torch.arange(loaded.pre.num_items)).T).double().numpy()
    for key, value in _reference_metrics(_ranks(scores, test["item"].numpy())).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key


def test_popularity_counts_the_training_rows(tmp_path, capsys):
    data = walks(60, seed=4)
    data.to_csv(tmp_path / "walks.csv", index=False)
    run = tmp_path / "pop"
    metrics = train(sequential_config(tmp_path, {"kind": "popularity"}), run)["protocols"]["next-item"]
    pre = load_run(run).pre
    V = pre.num_items
    counts = leave_one_out_split(data.rename(columns={"time": "timestamp"})).train["item"].value_counts()
    ids = pre.items(list(counts.index)).numpy()
    score = np.zeros(V)
    score[ids] = counts.to_numpy()
    score = score + 0.5 * (1 - np.arange(V) / V)                 # equal counts: lower id first
    loaded = load_run(run)
    test = loaded.test_columns()
    scores = np.tile(score, (test.num_rows, 1))
    ranks = _ranks(scores, test["item"].numpy())
    for key, value in _reference_metrics(ranks).items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
    # --exclude-history: the user's earlier items (training and validation) leave the ranking
    capsys.readouterr()
    assert main(["evaluate", str(run), "--protocol", "next-item", "--exclude-history", "--format", "json"]) == 0
    excluded = json.loads(capsys.readouterr().out)["protocols"]["next-item"]
    for row, user in enumerate(test["user"].tolist()):
        earlier = loaded.histories.row(user)
        scores[row, earlier[earlier != int(test["item"][row])]] = -np.inf
    reference = _reference_metrics(_ranks(scores, test["item"].numpy()))
    assert reference["mrr"] > _reference_metrics(ranks)["mrr"] + 0.05     # popular earlier items were ahead
    for key, value in reference.items():
        assert excluded[key] == pytest.approx(value, abs=1e-9), key


def test_a_resumed_sequential_run_ends_like_an_uninterrupted_one(tmp_path, one_thread):
    """Stopped right after its best epoch (later checkpoints and the final files gone), ``train
    --resume`` continues with the validation history, the best weights so far (best.pt: no later
    epoch beats them) and the optimizer state."""
    import shutil

    config = sequential_config(tmp_path, SASREC, training={
        "epochs": 12, "checkpoint_every": 1, "keep_checkpoints": 20,
        "early_stopping": {"metric": "mrr", "patience": 0}})
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    expected = train(config, straight)
    best = expected["best_epoch"]
    assert best < 12, "the walks should be learnt before the last epoch"
    shutil.copytree(straight, cut)
    for path in (cut / "checkpoints").glob("epoch-*.pt"):
        if int(path.stem.split("-")[1]) > best:
            path.unlink()
    for name in ("model.pt", "metrics.json"):
        (cut / name).unlink()
    (cut / "status.json").write_text(json.dumps({"state": "running", "epoch": best}))
    assert main(["train", "--resume", str(cut), "--progress", "quiet"]) == 0
    resumed = json.loads((cut / "metrics.json").read_text())
    assert resumed["best_epoch"] == best and resumed["epochs"] == 12
    assert resumed["protocols"]["next-item"] == pytest.approx(expected["protocols"]["next-item"])
    weights, chosen = (torch.load(r / "model.pt", weights_only=True) for r in (cut, straight))
    assert all(torch.equal(weights[k], chosen[k]) for k in weights)
