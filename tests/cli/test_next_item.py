"""``recstack recommend`` for sequential runs (--user reads the stored history, --history an ad-hoc
one) after a reload from the run folder alone, and the config errors of the next-item settings."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml

from recstack.cli.main import main
from recstack.core.errors import ConfigError
from recstack.experiment.config import parse_config

from sequential_walks import SASREC, sequential_config, walks


@pytest.fixture(scope="module")
def moved_runs(tmp_path_factory):
    """A sasrec and a transitions run on the walks, moved to a folder without the data."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("train")
    runs = {}
    for name, model in (("sasrec", SASREC), ("transitions", {"kind": "transitions"})):
        assert main(["train", str(sequential_config(folder, model)), "--run-dir", str(folder / name),
                     "--progress", "quiet"]) == 0
    elsewhere = tmp_path_factory.mktemp("moved")
    for name in ("sasrec", "transitions"):
        runs[name] = shutil.move(str(folder / name), str(elsewhere / name))
    shutil.rmtree(folder)                                         # the data and configs are gone
    torch.set_num_threads(threads)
    return runs


def recommend(capsys, *args: str) -> tuple[dict, str]:
    assert main(["recommend", *args, "--format", "json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def stored_history(user: str) -> list[str]:
    """The walk of ``user`` without its test item (the last): what the run stored."""
    return walks().query("user == @user")["item"].tolist()[:-1]


def step_of(history: list[str]) -> int:
    a, b = (int(x[1:]) for x in history[-2:])
    return (b - a) % 20


def test_recommend_user_continues_the_stored_history(moved_runs, capsys):
    for user in ("u0", "u1", "u2"):
        history = stored_history(user)
        result, _ = recommend(capsys, moved_runs["sasrec"], "--user", user, "-k", "5")
        assert result["known"] and result["history_length"] == len(history)
        expected = f"i{(int(history[-1][1:]) + step_of(history)) % 20}"   # the walk's held-out item
        assert result["items"][0]["item"] == expected
        assert not {i["item"] for i in result["items"]} & set(history)     # the history is left out


def test_recommend_history_drops_unknown_ids_and_says_which(moved_runs, capsys):
    result, err = recommend(capsys, moved_runs["sasrec"], "--history", "i3,nope,i5,i7,i9", "-k", "3")
    assert result["history"] == ["i3", "i5", "i7", "i9"] and result["unknown"] == ["nope"]
    assert "1 of the 5 history item(s)" in err and "'nope'" in err
    assert result["items"][0]["item"] == "i11"                    # step 2 after i9
    assert not {i["item"] for i in result["items"]} & {"i3", "i5", "i7", "i9"}
    kept, _ = recommend(capsys, moved_runs["sasrec"], "--history", "i9,i10,i11", "-k", "20", "--keep-history")
    assert {"i9", "i10", "i11"} <= {i["item"] for i in kept["items"]}   # all 20 items: the history included


def test_recommend_history_of_only_unknown_ids_is_popularity(moved_runs, capsys):
    result, err = recommend(capsys, moved_runs["sasrec"], "--history", "nope,nada", "-k", "3")
    assert not result["known"] and result["unknown"] == ["nope", "nada"] and len(result["items"]) == 3
    assert "the history is empty" in err
    counts = walks()["item"].value_counts()                       # training counts are close: the top is popular
    assert counts[result["items"][0]["item"]] >= counts.median()


def test_transitions_recommend_the_most_frequent_next_item(moved_runs, capsys):
    data = walks()
    data["next"] = data.groupby("user")["item"].shift(-1)
    history = stored_history("u4")
    # training transitions only: each user's last two items are held out
    train = data.groupby("user", group_keys=False).apply(lambda f: f.iloc[:-3])
    followers = train.loc[train["item"] == history[-1], "next"].value_counts()
    result, _ = recommend(capsys, moved_runs["transitions"], "--user", "u4", "-k", "2", "--keep-history")
    assert result["items"][0]["item"] == followers.index[0]
    assert result["items"][0]["score"] == pytest.approx(followers.iloc[0], abs=0.5)


def test_recommend_usage_errors(moved_runs, capsys):
    assert main(["recommend", moved_runs["sasrec"], "--user", "u0", "--history", "i1"]) == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["recommend", moved_runs["sasrec"], "--history", " , "]) == 2
    assert "--history lists no item ids" in capsys.readouterr().err
    assert main(["evaluate", moved_runs["sasrec"], "--protocol", "exclude-seen"]) == 2
    assert "evaluate it with --protocol next-item" in capsys.readouterr().err
    assert main(["similar", moved_runs["transitions"], "--item", "i1"]) == 2
    assert "has no item embeddings" in capsys.readouterr().err



def test_recommend_history_needs_a_kind_that_reads_histories(workdir, write_config, capsys):
    path = write_config({"training": {"epochs": 1}})
    assert main(["train", str(path), "--run-dir", str(workdir / "run"), "--progress", "quiet"]) == 0
    capsys.readouterr()
    assert main(["recommend", str(workdir / "run"), "--history", "m1,m2"]) == 2
    assert "scores users, not histories" in capsys.readouterr().err


# -- config errors ------------------------------------------------------------------------------------
BASE = {"data": {"interactions": "walks.csv", "columns": {"user": "user", "item": "item", "timestamp": "time"}},
        "split": {"method": "leave-one-out"}}


def errors(raw: dict) -> str:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "cfg.yaml")
    return str(info.value)


@pytest.mark.parametrize("model, message", [
    ({"num_heads": 3, "embedding_dim": 64}, "model.num_heads: model.embedding_dim (64) must be divisible by it, got 3"),
    ({"loss": "sampled", "num_negatives": 0}, "model.num_negatives: must be >= 1, got 0"),
    ({"dropout": 1.0}, "model.dropout: must be in [0, 1), got 1.0"),
    ({"max_length": 0}, "model.max_length: must be >= 1, got 0"),
    ({"max_length": 10**6}, "model.max_length: must be at most 4,096"),
    ({"norm": "middle"}, "model.norm: must be one of 'pre', 'post'; got 'middle'"),
    ({"loss": "bpr"}, "model.loss: must be one of 'softmax', 'sampled', 'bce'; got 'bpr'"),
    ({"activation": "wobbly"}, "model.activation:"),
    ({"training_windows": 0}, "model.training_windows: must be >= 1 (or null"),
    ({"num_block": 2}, "model.num_block: unknown key for model kind 'sasrec' (did you mean 'num_blocks'?)"),
])
def test_sasrec_hyperparameter_errors(model, message):
    assert message in errors({**BASE, "model": {"kind": "sasrec", **model}})


def test_gru4rec_hyperparameter_errors():
    message = errors({**BASE, "model": {"kind": "gru4rec", "num_layers": 0, "hidden_size": 0, "temperature": 0}})
    assert "model.num_layers: must be >= 1, got 0" in message
    assert "model.hidden_size: must be >= 1, got 0" in message
    assert "model.temperature: must be > 0" in message


def test_sequential_kinds_need_leave_one_out_and_the_next_item_protocols():
    message = errors({**BASE, "split": {"method": "random"}, "model": {"kind": "sasrec"}})
    assert "model kind 'sasrec' trains on each user's interactions in time order" in message
    message = errors({**BASE, "model": {"kind": "gru4rec"}, "evaluation": {"protocols": ["next-item", "all-items"]}})
    assert "evaluated with next-item or next-item-sampled, not all-items" in message
    message = errors({**BASE, "model": {"kind": "transitions"}, "evaluation": {"validation_protocol": "all-items"}})
    assert "model kind 'transitions' is validated with next-item" in message
    message = errors({**BASE, "model": {"kind": "sasrec"}, "tasks": {"rating": {"weight": 1.0}}})
    assert "has no rating head" in message


def test_next_item_protocols_and_selection_errors():
    message = errors({**BASE, "split": {"method": "temporal"}, "evaluation": {"protocols": ["next-item"]}})
    assert "the protocols next-item rank each user's held-out next item" in message
    message = errors({**BASE, "split": {"method": "leave-one-out", "validation_fraction": 0.1}})
    assert "leave-one-out always holds out each user's second-to-last interaction" in message
    message = errors({**BASE, "model": {"kind": "sasrec"},
                      "training": {"early_stopping": {"metric": "ndcg_at_7", "patience": -1}},
                      "evaluation": {"next_item": {"sampled_negatives": 0, "sampled_distribution": "zipf"}}})
    assert "training.early_stopping.metric: K = 7 is not in evaluation.ks" in message
    assert "training.early_stopping.patience: must be >= 0" in message
    assert "evaluation.next_item.sampled_negatives: must be >= 1, got 0" in message
    assert "evaluation.next_item.sampled_distribution: must be one of 'uniform', 'popularity'" in message
    message = errors({**BASE, "split": {"method": "random"}, "training": {"early_stopping": {"metric": "recall"}}})
    assert "training.early_stopping selects on the next-item validation metrics" in message
    assert "training.early_stopping.metric: one of hr_at_K" in message


def test_reference_metrics_of_the_next_item_protocols():
    ok = parse_config({**BASE, "model": {"kind": "sasrec"},
                       "reference": {"source": "x", "metrics": {"next-item/hr_at_10": 0.3, "next-item/mrr": 0.1}}})
    assert ok.reference.metrics["next-item/hr_at_10"] == 0.3
    message = errors({**BASE, "reference": {"source": "x", "metrics": {"next-item/top_10_categorical_accuracy": 0.1}}})
    assert "is not a metric the next-item protocol reports (hr_at_K, ndcg_at_K, mrr_at_K or mrr)" in message


def test_a_leave_one_out_config_written_out_keeps_its_protocols(tmp_path):
    """The run folder's config.yaml says next-item explicitly (defaults resolved once)."""
    walks().head(30).to_csv(tmp_path / "walks.csv", index=False)
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**BASE, "model": {"kind": "transitions"},
                                                     "output": {"plots": False}}))
    assert main(["train", str(tmp_path / "c.yaml"), "--run-dir", str(tmp_path / "run"), "--progress", "quiet"]) == 0
    written = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert written["evaluation"]["protocols"] == ["next-item"]
    assert written["evaluation"]["validation_protocol"] == "next-item"
    assert pd.read_csv(tmp_path / "walks.csv").shape[0] == 30
