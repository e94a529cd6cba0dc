"""``recstack export`` of a sequential run: the bundle answers users and histories as ``recstack
recommend`` does from the run folder (same items, same scores), and its HTTP endpoint serves them."""

from __future__ import annotations

import json

import pytest

from recstack.cli.main import main
from recstack.serving import load_bundle
from recstack.serving.history import recommend_history

from sequential_walks import SASREC, sequential_config


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("seqbundle")
    run = folder / "sasrec"
    assert main(["train", str(sequential_config(folder, SASREC)), "--run-dir", str(run), "--progress", "quiet"]) == 0
    assert main(["export", str(run), str(folder / "bundle")]) == 0
    torch.set_num_threads(threads)
    return run, folder / "bundle"


def _cli(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["recommend", *args, "--format", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_bundle_answers_like_recommend(exported, capsys):
    run, path = exported
    bundle = load_bundle(path)
    assert bundle.manifest["model_kind"] == "sasrec" and bundle.history is not None
    for user in ("u0", "u3"):
        ref = _cli(capsys, str(run), "--user", user, "-k", "5")
        got = recommend_history(bundle, [None], users=[user], k=5)[0]
        assert got.items == [i["item"] for i in ref["items"]]
        assert got.scores == pytest.approx([i["score"] for i in ref["items"]], rel=1e-4, abs=1e-5)
    history = ["i3", "i4", "unknown-item", "i5"]
    ref = _cli(capsys, str(run), "--history", ",".join(history), "-k", "5")
    got = recommend_history(bundle, [history], k=5)[0]
    assert got.items == [i["item"] for i in ref["items"]] and got.dropped == ["unknown-item"] == ref["unknown"]
    # an unknown user: the popularity ranking, as recommend gives it
    ref = _cli(capsys, str(run), "--history", "nothing-known", "-k", "4")
    assert recommend_history(bundle, [None], users=["nobody"], k=4)[0].items == [i["item"] for i in ref["items"]]


def test_served_bundle_answers_a_user_and_a_history(exported, capsys):
    pytest.importorskip("fastapi")
    pytest.importorskip("httpx")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from recstack.serving.server import create_app

    run, path = exported
    ref = _cli(capsys, str(run), "--user", "u5", "-k", "3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TestClient(create_app(load_bundle(path))) as client:
            body = client.post("/v1/recommend", json={"query": {"user": "u5"}, "k": 3}).json()
            assert body.get("results", [{}])[0].get("items") == [i["item"] for i in ref["items"]], body
            body = client.post("/v1/recommend", json={"query": {"history": ["i1", "bogus"]}, "k": 3}).json()
            assert body["results"][0]["dropped"] == ["bogus"]


def test_a_transitions_run_is_refused_with_the_kinds_that_export(tmp_path, capsys):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = tmp_path / "t"
    assert main(["train", str(sequential_config(tmp_path, {"kind": "transitions"})), "--run-dir", str(run),
                 "--progress", "quiet"]) == 0
    torch.set_num_threads(threads)
    capsys.readouterr()
    assert main(["export", str(run), str(tmp_path / "bundle")]) == 1
    assert "sasrec, gru4rec" in capsys.readouterr().err
