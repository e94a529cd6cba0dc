"""Published figures beside the result: reference blocks, `recstack reproduce NAME`, deprecations."""

import json

import pytest

from recstack.cli.main import main
from recstack.experiment.config_files import load_config
from recstack.experiment.reference import applicable_reference, compare

QUICK = ["--set", "training.epochs=1", "--set", "training.batch_size=512", "--set", "output.plots=false"]


def test_reproduce_prints_the_published_figures_beside_the_result(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    run = tmp_path / "run"
    assert main(["reproduce", "multitask", "--run-dir", str(run), "--progress", "quiet", *QUICK,
                 "--set", "tasks.rating.weight=1", "--set", "tasks.retrieval.weight=0"]) == 0
    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    rmse = metrics["test"]["root_mean_squared_error"]
    # The rating-only variant's figures (the config's reference block), each beside the run's value.
    variant = next(v for v in load_config("multitask").reference.variants if v.when["tasks.retrieval.weight"] == 0)
    published = variant.metrics["test/root_mean_squared_error"]
    assert f"Published ({variant.label}): TFRS tutorial \"Multi-task recommenders\"" in out
    row = next(line for line in out.splitlines() if line.startswith("test/root_mean_squared_error"))
    assert row.split() == ["test/root_mean_squared_error", f"{rmse:.4f}", repr(published), f"{rmse - published:.4f}"]
    # Only training.* differs from the variant's published setting (the weights are the variant's).
    assert "note: this run changes training.epochs, training.batch_size (--set)" in out


def test_reproduce_needs_a_shipped_config_with_a_reference(capsys):
    assert main(["reproduce", "ease"]) == 2
    assert "'ease' has no reference block" in capsys.readouterr().err


def test_train_by_path_prints_the_reference_in_jsonl(synthetic_ml100k, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(synthetic_ml100k))
    path = tmp_path / "basic.yaml"
    assert main(["configs", "basic-retrieval"]) == 0
    path.write_text(capsys.readouterr().out)
    assert main(["train", str(path), "--run-dir", str(tmp_path / "run"), "--progress", "jsonl", *QUICK]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    result = next(e for e in events if e["event"] == "result")["data"]
    published = result["reference"]["metrics"]["all-items/top_1_categorical_accuracy"]["published"]
    assert published == load_config("basic-retrieval").reference.metrics["all-items/top_1_categorical_accuracy"]
    assert result["reference"]["differs_in"] == ["training.epochs", "training.batch_size"]


def test_the_applicable_figures_follow_the_variants():
    deep = load_config("deep-retrieval")
    assert applicable_reference(deep).metrics == deep.reference.metrics
    small = load_config("deep-retrieval", ["model.layer_sizes=[32]"])
    applied = applicable_reference(small, written=deep)
    assert applied.label == "layer_sizes [32]" and applied.metrics == deep.reference.variants[0].metrics
    assert applied.metrics != deep.reference.metrics and applied.differs_in == []   # the variant accounts for it
    other = applicable_reference(load_config("deep-retrieval", ["model.layer_sizes=[16]"]), written=deep)
    assert other.label == "layer_sizes [64, 32]" and other.differs_in == ["model.layer_sizes"]
    assert applicable_reference(load_config("ease")) is None


def test_compare_reads_metrics_json_and_marks_missing_values():
    applied = applicable_reference(load_config("multitask"))
    rows = compare({"protocols": {"all-items": {"factorized_top_k/top_100_categorical_accuracy": 0.25}},
                    "test": {}}, applied)
    top, rmse = applied.metrics["all-items/top_100_categorical_accuracy"], applied.metrics["test/root_mean_squared_error"]
    assert [(r.metric, r.result, r.reference) for r in rows] == [
        ("all-items/top_100_categorical_accuracy", 0.25, top), ("test/root_mean_squared_error", None, rmse)]
    assert rows[0].difference == pytest.approx(0.25 - top) and rows[1].difference is None
