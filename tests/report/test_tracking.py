"""MLflow tracking (tracking: {mlflow: true}) against a temporary local file store."""

from __future__ import annotations

import json
import sys

import pytest

from recstack.cli.main import main
from synthetic_movielens import write_synthetic_ml100k


@pytest.fixture
def data(tmp_path, monkeypatch):
    monkeypatch.setenv("RECSTACK_DATA_DIR", str(write_synthetic_ml100k(tmp_path / "ml-100k")))
    monkeypatch.chdir(tmp_path)


def test_mlflow_logs_params_metrics_per_epoch_and_the_report(data, tmp_path, capsys):
    mlflow = pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    store = (tmp_path / "store").as_uri()
    run = tmp_path / "run"
    assert main(["train", "basic-retrieval", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=3", "--set", "training.batch_size=256",
                 "--set", "tracking.mlflow=true", "--set", f"tracking.uri={store}",
                 "--set", "tracking.experiment=tests"]) == 0, capsys.readouterr().err
    client = MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("tests")
    (found,) = client.search_runs([experiment.experiment_id])
    assert found.info.status == "FINISHED" and found.info.run_name == "run"
    assert found.data.params["training.epochs"] == "3" and found.data.params["model.kind"] == "two_tower"
    history = json.loads((run / "history.json").read_text())
    logged = client.get_metric_history(found.info.run_id, "loss")
    assert [m.step for m in logged] == [1, 2, 3]
    assert [m.value for m in logged] == pytest.approx(history["history"]["loss"])
    metrics = json.loads((run / "metrics.json").read_text())
    key = "factorized_top_k/top_10_categorical_accuracy"
    assert found.data.metrics[f"test/all-items/{key}"] == pytest.approx(metrics["protocols"]["all-items"][key])
    artifacts = {a.path for a in client.list_artifacts(found.info.run_id)}
    assert "report.html" in artifacts and "plots" in artifacts
    assert json.loads((run / "mlflow.json").read_text())["run_id"] == found.info.run_id
    del mlflow


def test_default_store_is_mlruns_in_the_working_directory(data, tmp_path):
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    assert main(["train", "popularity", "--run-dir", str(tmp_path / "run"), "--progress", "quiet",
                 "--set", "tracking.mlflow=true"]) == 0
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    (found,) = client.search_runs([client.get_experiment_by_name("popularity").experiment_id])
    assert "test/exclude-seen/factorized_top_k/ndcg_at_10" in found.data.metrics


def test_tracking_without_mlflow_is_a_clear_error(data, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "mlflow", None)           # import mlflow now raises ImportError
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    code = main(["train", "popularity", "--run-dir", str(tmp_path / "run"), "--progress", "quiet",
                 "--set", "tracking.mlflow=true"])
    assert code == 2
    assert "pip install 'recstack[tracking]'" in capsys.readouterr().err


def test_tensorboard_keeps_working_beside_mlflow(data, tmp_path):
    pytest.importorskip("mlflow")
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    assert main(["train", "basic-retrieval", "--run-dir", str(run), "--progress", "quiet",
                 "--set", "training.epochs=1", "--set", "output.tensorboard=true", "--set", "tracking.mlflow=true"]) == 0
    assert any((run / "tensorboard").iterdir())
