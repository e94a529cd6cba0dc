"""``recstack export`` of an EASE, item-KNN or iALS run: a history bundle whose query tower folds in
a history (the multi-hot row; iALS's user solve). A new user's history is ranked as ``recstack
recommend RUN --history`` ranks it and as numpy computes it from the run's own weights (x · B; the
iALS normal equations), the history's items excluded; a stored user as ``recommend --user
--exclude-seen``; and the bundle reloads through the sandbox. Ensembles of those export too; an
ensemble with a LightGCN member, and a LightGCN run, are refused naming the kinds that export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from recstack.cli.main import main
from recstack.experiment.saved_run import load_run
from recstack.models.history_tower import MultiHotQuery
from recstack.models.tower_codec import tower_config, tower_from_config
from recstack.serving import load_bundle
from recstack.serving.history import recommend_history

SPLIT = {"method": "random", "train_fraction": 0.8, "seed": 1}
MODELS = {"ease": {"kind": "ease", "l2": 10.0}, "itemknn": {"kind": "itemknn", "k": 5},
          "ials": {"kind": "ials", "embedding_dim": 8, "regularization": 0.05, "unobserved_weight": 0.5},
          "multvae": {"kind": "multvae", "hidden_sizes": [16], "latent_dim": 4},
          "recvae": {"kind": "multvae", "hidden_sizes": [16, 16], "latent_dim": 4, "encoder": "recvae"}}
TRAINING = {"ials": {"epochs": 4}, "multvae": {"epochs": 3, "batch_size": 16}, "recvae": {"epochs": 3, "batch_size": 16}}
#: Kinds whose stored users are folded in from their stored history, which is the query their own
#: user_embeddings give (Mult-VAE encodes the training row, EASE / item-KNN use it as is); iALS's
#: trained w_u predates the last item solve, so its stored users are compared with --history.
FOLDED_USERS = {"ials"}


def _recommend(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["recommend", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_multi_hot_query_by_hand_and_through_the_codec():
    items = torch.tensor([[0, 0, 3, 1], [2, 2, 2, 7], [0, 0, 0, 0]])   # left-padded; 7 >= V is ignored
    expected = np.zeros((3, 5), dtype=np.float32)
    expected[0, [1, 3]] = 1.0
    expected[1, 2] = 1.0                                                   # a repeat counts once
    np.testing.assert_array_equal(MultiHotQuery(5)(items).numpy(), expected)
    rebuilt = tower_from_config(json.loads(json.dumps(tower_config(MultiHotQuery(5)))))
    np.testing.assert_array_equal(rebuilt(items).numpy(), expected)


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_fold_in_bundle_ranks_histories_as_recommend_and_numpy_do(kind, workdir, write_config, capsys):
    run, bundle_dir = workdir / "run", workdir / "bundle"
    path = write_config({"model": MODELS[kind], "split": SPLIT, "evaluation": {"protocols": ["exclude-seen"]},
                         **({"training": TRAINING[kind]} if kind in TRAINING else {})})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0
    assert main(["export", str(run), str(bundle_dir)]) == 0, capsys.readouterr().err
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest["model_kind"] == MODELS[kind]["kind"] and bundle.history is not None

    history = ["m3", "m7", "no-such-item", "m11"]
    ref = _recommend(capsys, str(run), "--history", ",".join(history), "-k", "5")
    got = recommend_history(bundle, [history], k=5)[0]
    assert got.items == [i["item"] for i in ref["items"]] and got.dropped == ["no-such-item"]
    assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-5, abs=1e-6)

    # numpy from the run's weights, the history's items excluded
    loaded = load_run(run)
    pre, model = loaded.pre, loaded.model
    ids = np.asarray(pre.items(["m3", "m7", "m11"]))
    if kind in ("multvae", "recvae"):   # the decoder's logits of the encoded, L2-normalised row
        x = np.zeros((1, pre.num_items), dtype=np.float32)
        x[0, ids] = 1.0
        with torch.no_grad():
            mu = model.encoder(torch.from_numpy(x / np.linalg.norm(x)))[:, :model.latent_dim]
            scores = model.decoder_out(model.decoder_hidden(mu))[0].double().numpy()
    elif kind == "ials":   # (α0 HᵀH + H_hᵀ H_h + λ (n + α0 (V - 1))^ν I) w = H_hᵀ 1, then s_j = w · h_j
        H = model.item_factors.detach().double().numpy()
        p = MODELS[kind]
        lam = p["regularization"] * (len(ids) + p["unobserved_weight"] * (pre.num_items - 1)) ** 1.0
        A = p["unobserved_weight"] * H.T @ H + H[ids].T @ H[ids] + lam * np.eye(H.shape[1])
        scores = H @ np.linalg.solve(A, H[ids].sum(0))
    else:                # s_j = Σ_{i in history} W[i, j]
        weights = (model.B if kind == "ease" else model.N.T).numpy()    # [V, V]: query row i -> item j
        scores = weights[ids].sum(0)
    scores[0] = -np.inf
    scores[ids] = -np.inf
    vocab = pre.items.get_vocabulary()
    top = np.argsort(-scores, kind="stable")[:5]
    assert got.items == [vocab[j] for j in top]
    np.testing.assert_allclose(got.scores, scores[top], rtol=1e-5, atol=1e-6)

    for user in ("u0", "u7"):            # a stored user: the items before the test split, excluded
        if kind in FOLDED_USERS:   # folded in from the stored history (FOLDED_USERS)
            seen = loaded.seen.take(np.asarray(pre.users([user])))
            ref = _recommend(capsys, str(run), "--history", ",".join(vocab[j] for j in seen.ids), "-k", "5")
        else:                # x_u is the user's own multi-hot row: exactly recommend --user
            ref = _recommend(capsys, str(run), "--user", user, "-k", "5", "--exclude-seen")
        got = recommend_history(bundle, [None], users=[user], k=5)[0]
        assert got.items == [i["item"] for i in ref["items"]], user
        assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-5, abs=1e-6)


def test_served_fold_in_bundle_answers_a_history(workdir, write_config, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from recstack.serving.server import create_app

    run, bundle_dir = workdir / "run", workdir / "bundle"
    path = write_config({"model": MODELS["ease"], "split": SPLIT, "evaluation": {"protocols": ["exclude-seen"]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0
    assert main(["export", str(run), str(bundle_dir)]) == 0
    ref = _recommend(capsys, str(run), "--history", "m2,m5", "-k", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(create_app(load_bundle(bundle_dir))) as client:
            body = client.post("/v1/recommend", json={"query": {"history": ["m2", "m5"]}, "k": 3}).json()
    assert body["results"][0]["items"] == [i["item"] for i in ref["items"]], body


def test_ensemble_bundle_blends_its_members_fold_in_queries(workdir, write_config, capsys):
    members = {}
    for name in ("ease", "ials", "multvae"):
        members[name] = {"config": str(write_config({"model": MODELS[name], "split": SPLIT,
                                                     **({"training": TRAINING[name]} if name in TRAINING else {})},
                                                    name=f"{name}.yaml")), "weight": {"ease": 1.0, "ials": 0.5,
                                                                                       "multvae": 2.0}[name]}
    run, bundle_dir = workdir / "run", workdir / "bundle"
    path = write_config({"model": {"kind": "ensemble", "members": members}, "split": SPLIT,
                         "evaluation": {"protocols": ["exclude-seen"]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0
    assert main(["export", str(run), str(bundle_dir)]) == 0, capsys.readouterr().err
    bundle = load_bundle(bundle_dir)
    history = ["m1", "m6", "m9", "m13"]
    ref = _recommend(capsys, str(run), "--history", ",".join(history), "-k", "6")
    got = recommend_history(bundle, [history], k=6)[0]
    assert got.items == [i["item"] for i in ref["items"]]
    assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-4, abs=1e-5)


def test_an_ensemble_with_a_member_that_cannot_fold_in_is_refused_naming_it(workdir, write_config, capsys):
    lightgcn = write_config({"model": {"kind": "lightgcn", "embedding_dim": 4}, "training": {"epochs": 1},
                             "split": SPLIT}, name="lightgcn.yaml")
    ease = write_config({"model": MODELS["ease"], "split": SPLIT}, name="ease.yaml")
    run = workdir / "run"
    path = write_config({"model": {"kind": "ensemble", "members": {"ease": {"config": str(ease)},
                                                                   "graph": {"config": str(lightgcn)}}},
                         "split": SPLIT, "evaluation": {"protocols": ["exclude-seen"]}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), str(workdir / "bundle")]) == 1
    err = capsys.readouterr().err
    assert "lightgcn" in err and "do not fold in histories" in err and not (workdir / "bundle").exists()


def test_export_of_a_lightgcn_run_is_refused_with_the_kinds_that_export(workdir, write_config, capsys):
    """LightGCN has no fold-in query (its users are graph nodes): its export names the kinds that do."""
    run = workdir / "run"
    config = {"model": {"kind": "lightgcn", "embedding_dim": 4}, "training": {"epochs": 1}}
    assert main(["train", str(write_config(config)), "--run-dir", str(run), "--progress", "quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(run), str(workdir / "bundle")]) == 1
    err = capsys.readouterr().err
    assert "model kind 'lightgcn' has no user tower to export" in err and "ease, itemknn, ials, multvae" in err


@pytest.mark.parametrize("use_id", [False, True])
def test_a_history_two_tower_exports_a_history_bundle_on_request(use_id, workdir, write_config, capsys):
    run, bundle_dir = workdir / "run", workdir / "bundle"
    history_options = {"pooling": "attention", "max_length": 3, "use_id": use_id}
    path = write_config({"model": {"user_history": history_options}, "split": SPLIT,
                         "evaluation": {"protocols": ["exclude-seen"]}, "training": {"epochs": 2}})
    assert main(["train", str(path), "--run-dir", str(run), "--progress", "quiet"]) == 0
    assert main(["export", str(run), str(bundle_dir), "--queries", "histories"]) == 0, capsys.readouterr().err
    bundle = load_bundle(bundle_dir)
    assert bundle.manifest["model_kind"] == "two_tower" and bundle.history is not None
    for history in (["m3", "m7", "nope", "m11"], ["m2", "m4", "m6", "m8", "m10"]):   # the latest 3 are read
        ref = _recommend(capsys, str(run), "--history", ",".join(history), "-k", "5")
        got = recommend_history(bundle, [history], k=5)[0]
        assert got.items == [i["item"] for i in ref["items"]], history
        assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-5, abs=1e-6)
    if not use_id:   # a history-only tower: a stored user's query is their stored history's, as --user
        for user in ("u0", "u7"):
            ref = _recommend(capsys, str(run), "--user", user, "-k", "5", "--exclude-seen")
            got = recommend_history(bundle, [None], users=[user], k=5)[0]
            assert got.items == [i["item"] for i in ref["items"]], user
            assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-5, abs=1e-6)
    assert main(["export", str(run), str(workdir / "users")]) == 0          # default: the user bundle
    assert load_bundle(workdir / "users").history is None


def test_export_queries_that_a_kind_cannot_answer_are_refused(workdir, write_config, capsys):
    plain = workdir / "plain"
    assert main(["train", str(write_config({"training": {"epochs": 1}})), "--run-dir", str(plain),
                 "--progress", "quiet"]) == 0
    ease = workdir / "ease"
    assert main(["train", str(write_config({"model": MODELS["ease"]}, name="ease.yaml")), "--run-dir", str(ease),
                 "--progress", "quiet"]) == 0
    capsys.readouterr()
    assert main(["export", str(plain), str(workdir / "b1"), "--queries", "histories"]) == 1
    assert "model.user_history" in capsys.readouterr().err
    assert main(["export", str(ease), str(workdir / "b2"), "--queries", "users"]) == 1
    assert "stored histories" in capsys.readouterr().err
    assert not (workdir / "b1").exists() and not (workdir / "b2").exists()
