"""benchmarks/general.py ``--only``: a rerun's rows replace only their own entries of general.json,
in the benchmark's row order, with a ``reruns`` record; a rerun on other seeds is refused."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def general(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import general as module

    monkeypatch.setattr(module, "RESULTS", tmp_path)
    yield module
    sys.modules.pop("general", None)


def _payload(labels: list[str], tag: str, seeds=(2020, 2021, 2022)) -> dict:
    return {"seeds": list(seeds), "recstack": {label: {"tag": tag} for label in labels},
            "recbole": {"models": {"EASE": {"tag": tag}}, "summary": {"EASE": {"tag": tag}}},
            "ease_l2_validation_ndcg_at_10": {"500.0": 0.25}, "seconds": 1.0, "environment": {"cpu": tag}}


def test_a_rerun_replaces_its_rows_only_in_the_benchmarks_order(general, tmp_path):
    labels = list(general.MODELS)
    (tmp_path / "general.json").write_text(json.dumps(_payload(labels, "old")))
    rerun = _payload([labels[3]], "new")
    rerun["recbole"]["models"]["LightGCN"] = rerun["recbole"]["summary"]["LightGCN"] = {"tag": "new"}
    merged = general.merged_rerun(rerun, ["lightgcn"], ["LightGCN"])
    assert list(merged["recstack"]) == labels
    assert [merged["recstack"][label]["tag"] for label in labels] == ["new" if i == 3 else "old"
                                                                      for i in range(len(labels))]
    assert merged["recbole"]["models"]["LightGCN"] == {"tag": "new"} and merged["recbole"]["models"]["EASE"]["tag"] == "new"
    assert merged["reruns"][0]["recstack"] == [labels[3]] and merged["reruns"][0]["recbole"] == ["EASE", "LightGCN"]


def test_a_rerun_on_other_seeds_or_without_a_full_run_is_refused(general, tmp_path):
    with pytest.raises(SystemExit, match="run the full benchmark first"):
        general.merged_rerun(_payload([], "new"), ["lightgcn"], [])
    (tmp_path / "general.json").write_text(json.dumps(_payload([], "old")))
    with pytest.raises(SystemExit, match="rerun everything"):
        general.merged_rerun(_payload([], "new", seeds=(2020,)), ["lightgcn"], [])
