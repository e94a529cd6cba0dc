"""Experiment tracking with MLflow (the optional ``tracking`` extra): ``tracking: {mlflow: true}``.

One MLflow run per recstack run (``train --resume`` continues it: its id is kept in the run
folder's mlflow.json): the flattened config as params (``training.epochs``,
``model.embedding_dim``, ...; plus ``run_dir``), every epoch's finite logs as metrics with
``step = epoch`` (the names recstack's history uses: ``loss``, ``val_next_item/ndcg_at_10``),
the test metrics as ``test/PROTOCOL/METRIC`` (step = the last epoch), and report.html as an
artifact. Without ``uri`` the store is the file store ``mlruns/`` in the working directory
(``mlflow ui`` there shows it); any MLflow tracking URI (``http://...``, ``sqlite:///...``,
``file:///...``) is used as given.

mlflow is imported only when tracking is on, through the client API (``MlflowClient``), so
nothing global (``mlflow.active_run()``) is touched. MLflow 3 keeps the file store in
maintenance mode and refuses it unless ``MLFLOW_ALLOW_FILE_STORE`` is set; recstack sets it
(if unset) for a ``file:`` store, since the local store is the point of the default.
TensorBoard logging (``output.tensorboard``) is independent of this and works beside it.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.io import atomic_write_json
from ..training.callbacks import Callback
from .config import ExperimentConfig

#: The run folder's note of its MLflow run (so ``train --resume`` continues the same one).
RECORD = "mlflow.json"
#: MLflow keeps param values up to this many characters in every store; longer ones are cut.
MAX_PARAM = 500
#: Entries per log_batch call (MLflow's limit is 1000 metrics / 100 params per call).
BATCH = 100


def _mlflow_client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise ConfigError("tracking.mlflow: true needs MLflow: pip install 'recstack[tracking]' (mlflow-skinny), or "
                          "set tracking.mlflow: false.") from None
    return MlflowClient(tracking_uri=uri)


def default_uri() -> str:
    return (Path.cwd() / "mlruns").resolve().as_uri()


def flatten(node: Any, prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": "1"}``; lists as their text, values cut to MAX_PARAM characters."""
    out: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
    elif prefix:
        out[prefix[:-1]] = str(node)[:MAX_PARAM]
    return out


def _read_record(path: Path) -> dict[str, str]:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class MlflowTracker(Callback):
    """The MLflow run of one recstack run; as a callback it logs each epoch's metrics."""

    def __init__(self, config: ExperimentConfig, run_dir: Path):
        t = config.tracking
        self.uri = t.uri or default_uri()
        if self.uri.startswith("file:") or "://" not in self.uri:   # a file store (a URI or a plain path)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        self.client = _mlflow_client(self.uri)
        self.record = Path(run_dir) / RECORD
        previous = _read_record(self.record)
        if previous.get("uri") == self.uri and previous.get("run_id"):   # train --resume: the same MLflow run
            self.run_id, self.experiment_id = previous["run_id"], previous.get("experiment_id", "")
            self.client.update_run(self.run_id, "RUNNING")
            return
        name = t.experiment or config.name
        experiment = self.client.get_experiment_by_name(name)
        self.experiment_id = experiment.experiment_id if experiment is not None else self.client.create_experiment(name)
        self.run_id = self.client.create_run(self.experiment_id, run_name=Path(run_dir).name,
                                             tags={"recstack.run_dir": str(Path(run_dir).resolve()),
                                                   "recstack.model_kind": config.model.kind}).info.run_id
        atomic_write_json(self.record, {"uri": self.uri, "run_id": self.run_id, "experiment_id": self.experiment_id})
        params = {**flatten({k: v for k, v in config.to_dict().items() if k != "reference"}),
                  "run_dir": str(run_dir)}
        self._log(params=params)

    def _log(self, metrics: dict[str, float] | None = None, step: int = 0, params: dict[str, str] | None = None) -> None:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        entries = [Metric(k, float(v), now, int(step)) for k, v in (metrics or {}).items() if _finite(v)]
        pars = [Param(k, v) for k, v in (params or {}).items()]
        for i in range(0, max(len(entries), len(pars)), BATCH):
            self.client.log_batch(self.run_id, metrics=entries[i:i + BATCH], params=pars[i:i + BATCH])

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._log(dict(logs or {}), step=epoch)

    def finish(self, metrics: dict[str, Any], report: Path | None, plots: list[Path] = ()) -> None:
        """The test metrics (``test/PROTOCOL/METRIC``, ``test/loss``...), the report and plots as
        artifacts, and the run marked FINISHED."""
        step = int(metrics.get("epochs") or 0)
        final: dict[str, float] = {}
        for protocol, values in (metrics.get("protocols") or {}).items():
            for name, value in (values or {}).items():
                final[f"test/{protocol}/{name}"] = value
        for name, value in (metrics.get("test") or {}).items():
            final[f"test/{name}"] = value
        for key in ("train_seconds", "best_epoch"):
            if key in metrics:
                final[key] = metrics[key]
        self._log(final, step=step)
        if report is not None and report.exists():
            self.client.log_artifact(self.run_id, str(report))
        for path in plots:
            self.client.log_artifact(self.run_id, str(path), artifact_path="plots")
        self.client.set_terminated(self.run_id, "FINISHED")

    def fail(self) -> None:
        self.client.set_terminated(self.run_id, "FAILED")


def start_tracking(config: ExperimentConfig, run_dir: Path) -> MlflowTracker | None:
    """The tracker of ``config`` (None when ``tracking.mlflow`` is off)."""
    return MlflowTracker(config, run_dir) if config.tracking.mlflow else None


__all__ = ["MlflowTracker", "default_uri", "flatten", "start_tracking"]
