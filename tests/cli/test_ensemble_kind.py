"""The ensemble kind through the CLI on tiny generated data: members named by config files, the
blend against numpy on the members' fitted matrices, reload, fold-in, a gradient-trained member
equal to a run of its own config, member fits reused across trials, and the config errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import yaml

from recstack.cli.main import main
from recstack.experiment import ensemble_kind
from recstack.experiment.saved_run import load_run
from recstack.models.baselines import EASE

SPLIT = {"method": "random", "train_fraction": 0.8, "seed": 1}
EVALUATION = {"protocols": ["all-items", "exclude-seen"], "ks": [1, 5, 10]}


def ensemble(members: dict, **extra) -> dict:  # noqa: ANN003
    return {"model": {"kind": "ensemble", "members": members}, "split": SPLIT, "evaluation": EVALUATION, **extra}


@pytest.fixture
def member_files(write_config):
    """Member config files in the work folder: EASE, item-KNN and a small Mult-VAE."""
    return {"ease": str(write_config({"model": {"kind": "ease", "l2": 10.0}}, name="ease.yaml")),
            "knn": str(write_config({"model": {"kind": "itemknn", "k": 5}}, name="knn.yaml")),
            "vae": str(write_config({"model": {"kind": "multvae", "hidden_sizes": [16], "latent_dim": 4},
                                     "optimizer": {"name": "adam", "learning_rate": 0.01},
                                     "training": {"epochs": 3, "batch_size": 16}, "split": SPLIT,
                                     "evaluation": EVALUATION}, name="vae.yaml"))}


def test_the_blend_is_the_weighted_sum_of_scaled_member_scores_and_reloads(workdir, write_config, member_files,
                                                                           capsys):
    ensemble_kind.MEMBER_CACHE.clear()
    run = workdir / "run"
    path = write_config(ensemble({"ease": {"config": member_files["ease"], "weight": 1.0},
                                  "knn": {"config": member_files["knn"], "weight": 0.5}}))
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    metrics = json.loads((run / "metrics.json").read_text())
    assert main(["evaluate", str(run), "--format", "json"]) == 0          # the reloaded run scores the same
    assert json.loads(capsys.readouterr().out)["protocols"]["exclude-seen"] == \
        pytest.approx(metrics["protocols"]["exclude-seen"])
    loaded = load_run(run)
    model, pre = loaded.model, loaded.pre
    ease, knn = model.members
    X = ease.X.numpy()
    s_ease = X @ ease.B.numpy()                     # EASE: x_u · B[:, j]
    s_knn = knn.X.numpy() @ knn.N.numpy().T         # item-KNN: x_u · N[j]
    catalogue = pre.catalogue().numpy()
    users = np.unique(X.nonzero()[0])               # the training users (the rows EASE saw)
    sigma = [s[np.ix_(users, catalogue)].std(ddof=1) for s in (s_ease, s_knn)]
    np.testing.assert_allclose(model.scales.numpy(), sigma, rtol=1e-6)
    expected = s_ease[:, catalogue] / sigma[0] + 0.5 * s_knn[:, catalogue] / sigma[1]
    np.testing.assert_allclose(model.scores(torch.arange(pre.num_users)).numpy(), expected, rtol=1e-6, atol=1e-9)
    # recommend --history: each member's history query (the history's multi-hot row), blended the same way.
    assert main(["recommend", str(run), "--history", "m1,m5", "-k", "3", "--format", "json"]) == 0
    items = [r["item"] for r in json.loads(capsys.readouterr().out)["items"]]
    ids = np.asarray(pre.items(["m1", "m5"]))
    x = np.zeros(pre.num_items)
    x[ids] = 1.0
    scores = (x @ ease.B.numpy()) / sigma[0] + 0.5 * (x @ knn.N.numpy().T) / sigma[1]
    scores[0] = -np.inf
    scores[ids] = -np.inf
    vocab = pre.items.get_vocabulary()
    assert items == [vocab[j] for j in np.argsort(-scores, kind="stable")[:3]]


def test_a_gradient_trained_member_trains_as_a_run_of_its_own_config(workdir, write_config, member_files, capsys):
    ensemble_kind.MEMBER_CACHE.clear()
    alone, blended = workdir / "alone", workdir / "blended"
    assert main(["train", member_files["vae"], "--run-dir", str(alone), "--progress", "quiet"]) == 0
    path = write_config(ensemble({"ease": {"config": member_files["ease"]}, "vae": {"config": member_files["vae"]}}))
    assert main(["train", str(path), "--run-dir", str(blended), "--progress", "quiet"]) == 0, capsys.readouterr().err
    own, member = load_run(alone).model.state_dict(), load_run(blended).model.members[1].state_dict()
    assert own.keys() == member.keys()
    for key in own:
        torch.testing.assert_close(member[key], own[key], msg=key)


def test_each_member_says_when_it_trains_and_a_neural_one_shows_one_bar(workdir, write_config, member_files,
                                                                           capsys):
    ensemble_kind.MEMBER_CACHE.clear()
    path = write_config(ensemble({"ease": {"config": member_files["ease"]}, "vae": {"config": member_files["vae"]}}))
    assert main(["train", str(path), "--run-dir", str(workdir / "bar"), "--progress", "bar"]) == 0
    out = capsys.readouterr().out
    assert "ensemble member 1/2 ease: training" in out and "ensemble member 2/2 vae: training" in out
    assert "epoch 3/3 (" not in out                 # a member's epochs: one bar on stderr (test_progress.py)
    # jsonl: one info event per member start and end; the member's epochs stay out of the run's stream.
    ensemble_kind.MEMBER_CACHE.clear()
    assert main(["train", str(path), "--run-dir", str(workdir / "jsonl"), "--progress", "jsonl"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    members = [e for e in events if e["event"] == "info" and "member" in e]
    assert [(e["member"], "seconds" in e) for e in members] == [("ease", False), ("ease", True),
                                                                 ("vae", False), ("vae", True)]
    assert not [e for e in events if e["event"] == "epoch_end"]


def test_members_are_fitted_once_per_process_for_the_same_rows(workdir, write_config, member_files, monkeypatch,
                                                              capsys):
    ensemble_kind.MEMBER_CACHE.clear()
    fits = []
    original = EASE._fit
    monkeypatch.setattr(EASE, "_fit", lambda self, users, items: (fits.append(1), original(self, users, items)))
    members = {"ease": {"config": member_files["ease"]}, "knn": {"config": member_files["knn"], "weight": 0.1}}
    for weight, folder in ((0.1, "a"), (3.0, "b")):
        members["knn"]["weight"] = weight
        path = write_config(ensemble(members))
        assert main(["train", str(path), "--run-dir", str(workdir / folder), "--progress", "quiet"]) == 0
    assert len(fits) == 1 and len(ensemble_kind.MEMBER_CACHE) == 2
    a, b = load_run(workdir / "a").model, load_run(workdir / "b").model
    torch.testing.assert_close(a.members[0].B, b.members[0].B)
    path = write_config(ensemble(members, split={**SPLIT, "seed": 2}))      # other training rows: fitted again
    assert main(["train", str(path), "--run-dir", str(workdir / "c"), "--progress", "quiet"]) == 0
    assert len(fits) == 2


def test_the_weights_are_tuned_as_model_members_name_weight(workdir, write_config, member_files, capsys):
    path = write_config(ensemble({"ease": {"config": member_files["ease"]}, "knn": {"config": member_files["knn"]}},
                                 split={**SPLIT, "validation_fraction": 0.15},
                                 evaluation={**EVALUATION, "validation_protocol": "exclude-seen"},
                                 tune={"metric": "ndcg_at_10", "trials": 3, "sampler": "random",
                                       "space": {"model.members.knn.weight": {"low": 0.0, "high": 2.0}}}))
    out = workdir / "study"
    assert main(["tune", str(path), "--out", str(out), "--progress", "quiet"]) == 0, capsys.readouterr().err
    summary = json.loads((out / "study.json").read_text())
    assert len(summary["trials"]) == 3 and all(0 <= t["params"]["model.members.knn.weight"] <= 2
                                                for t in summary["trials"])
    best = yaml.safe_load((out / "best_config.yaml").read_text())
    assert best["model"]["members"]["knn"]["weight"] == summary["best"]["params"]["model.members.knn.weight"]


@pytest.mark.parametrize("members, message", [
    ({}, "model.members: list the members"),
    ({"a": {"weight": 1.0}}, "model.members.a.config: name the member's config"),
    ({"a": {"config": "no-such-config"}}, "model.members.a:"),
    ({"a": {"config": "ease", "weight": 0.0}}, "every weight is 0"),
    ({"a": {"config": "ease", "weight": -1.0}}, "model.members.a.weight: must be finite and >= 0"),
    ({"a": {"config": "ensemble"}}, "is itself an ensemble"),
    ({"a": {"config": "sasrec"}}, "ranks from histories only"),
    ({"a": {"config": "ease", "set": ["model.l2=-1"]}}, "model.members.a"),
])
def test_a_bad_member_exits_2_naming_it(write_config, members, message, capsys):
    assert main(["train", str(write_config(ensemble(members)))]) == 2
    assert message in capsys.readouterr().err
