"""One experiment, end to end: data -> preprocessing -> model -> training -> evaluation -> run folder.

``recstack train`` and the demo both call :func:`train`; ``train --resume``
calls :func:`resume`, which rebuilds the same data and model, loads the last
checkpoint (model, optimizer, history, torch RNG state) and continues with
``fit(initial_epoch=...)``. Because every epoch's shuffle order is a pure
function of (seed, epoch) (:func:`recstack.training.loop.epoch_order`), a
resumed run ends with the same weights and metrics as an uninterrupted one.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..core import distributed
from ..core.columns import Columns
from ..core.errors import ConfigError, DataError, DivergedError
from ..training.callbacks import Callback
from ..training.history import History
from ..training.model import Model
from ..training.progress import Progress
from .baseline_check import check_against_popularity
from .building import build_model, fit_options, make_optimizer, model_context, resolve_device, training_source
from .config import NEXT_ITEM_PROTOCOLS, ExperimentConfig, dump_config, wants_test_loss
from .config_files import load_config
from .evaluation import evaluate_run
from .model_kinds import MODEL_KINDS
from .next_item import HistoryScorer, NextItemValidation, evaluate_next_item
from .prepare import Prepared, prepare
from .report.run_report import write_run_outputs
from .reporter import Reporter, clean_json
from .run_dir import RunDir, default_run_dir, environment_info, write_json, write_text
from .saved_run import load_preprocessing, load_run
from .tracking import MlflowTracker, start_tracking

#: Test hook: stall (sleep) inside this epoch, after its first batch, so a test can kill the run mid-epoch.
STALL_ENV = "RECSTACK_DEBUG_STALL_EPOCH"


# -- callbacks ------------------------------------------------------------------------------------------
class _HistoryRecorder(Callback):
    """Appends every epoch's logs (with what earlier callbacks added, e.g. next-item validation) to ``history``."""

    def __init__(self, history: History):
        self.history = history

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.history.append(epoch, dict(logs or {}))


class RunRecorder(Callback):
    """After every epoch: extend the full history, rewrite history.csv/json, checkpoint every N epochs."""

    def __init__(self, run: RunDir, history: History, optimizer: torch.optim.Optimizer, every: int, keep: int,
                 epochs: int, tensorboard: Any = None):
        self.run, self.history, self.optimizer = run, history, optimizer
        self.every, self.keep, self.epochs, self.tensorboard = every, keep, epochs, tensorboard

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.history.append(epoch, dict(logs or {}))
        self.run.save_history(self.history)
        if epoch % self.every == 0 or epoch == self.epochs:
            self.run.save_checkpoint(epoch, self.model, self.optimizer, self.history, self.keep)
        self.run.write_status("running", epoch=epoch, epochs=self.epochs)
        if self.tensorboard is not None:
            for key, value in (logs or {}).items():
                if isinstance(value, float) and math.isfinite(value):
                    self.tensorboard.add_scalar(key, value, epoch)
            self.tensorboard.flush()


class _Stall(Callback):
    """Sleeps forever after the first batch of ``epoch`` (only with $RECSTACK_DEBUG_STALL_EPOCH)."""

    def __init__(self, epoch: int):
        self.epoch, self.current = epoch, 0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.current = epoch

    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None:
        if self.current == self.epoch:
            while True:
                time.sleep(1)


def _tensorboard(run: RunDir, enabled: bool, reporter: Reporter) -> Any:
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception as exc:  # ImportError when the tensorboard package is missing
        reporter.note(f"TensorBoard logging skipped: torch.utils.tensorboard is unavailable ({exc}); "
                      "pip install tensorboard to enable it.")
        return None
    return SummaryWriter(log_dir=str(run.tensorboard))


# -- train / resume ---------------------------------------------------------------------------------
@dataclass
class TrainResult:
    run_dir: Path
    metrics: dict[str, Any]
    history: History
    model: Model
    config: ExperimentConfig
    prepared: Prepared | None = None


def train(config: ExperimentConfig, reporter: Reporter, run_dir: str | os.PathLike | None = None,
          argv: list[str] | None = None) -> TrainResult:
    """A new run of ``config`` in ``run_dir`` (default ``output.runs_dir/<name>-<time>``).

    Under torchrun (several ranks) every rank prepares the data and trains its shard of each
    batch; only rank 0 writes the run folder, checkpoints and evaluates.
    """
    device = resolve_device(config.device)
    if not distributed.is_main_process():
        return _fit_and_finish(config, None, prepare(config, reporter), reporter, device, checkpoint=None)
    run = RunDir.create(Path(run_dir) if run_dir else default_run_dir(config.output.runs_dir, config.name))
    reporter.info(f"run folder: {run.root}", run_dir=str(run.root))
    with _failure_recorded(run):
        write_text(run.config, dump_config(config))
        write_json(run.environment, environment_info(str(device), argv))
        run.write_status("preparing")
        prepared = prepare(config, reporter)
        write_json(run.data, prepared.info)
        write_json(run.preprocessing, prepared.pre.to_dict())
        if prepared.labels is not None:
            write_json(run.item_labels, prepared.labels)
        run.save_seen(prepared.seen_before_test)
        run.save_histories(prepared.histories_before_test)
        run.save_tensors(run.test, dict(prepared.test))
        _describe_data(prepared, reporter)
        return _fit_and_finish(config, run, prepared, reporter, device, checkpoint=None)


def resume(run_dir: str | os.PathLike, reporter: Reporter) -> TrainResult:
    """Continue an interrupted run from its last checkpoint (same data, same config).

    The data is compared with the run's fingerprint by content (SHA-256 of each input file, in
    order), not by path: the same bytes at a new path resume; a changed file is refused.
    """
    run = RunDir.open(Path(run_dir), need=("config", "data", "preprocessing"))
    config = load_config(run.config)
    status = run.read_status()
    if status.get("state") == "completed" and run.metrics.exists():
        reporter.note(f"{run.root} is already complete; nothing to resume.")
        loaded = load_run(run.root)
        history = History.from_dict(run.read_json(run.history_json)) if run.history_json.exists() else History()
        return TrainResult(run.root, run.read_json(run.metrics), history, loaded.model, config)
    if status.get("state") == "failed" and status.get("diverged"):
        raise ConfigError(f"{run.root} diverged ({status.get('error', 'non-finite loss or gradient')}); resuming "
                          "would diverge again with the same config. Start a new run with a lower "
                          "optimizer.learning_rate or training.clip_grad_norm set.")
    main = distributed.is_main_process()
    with _failure_recorded(run if main else None):
        recorded = _recorded_files(run)
        pre = load_preprocessing(run)
        prepared = prepare(config, reporter, pre=pre)
        _check_same_data(run, recorded, prepared.info["files"], reporter)
        checkpoint = run.latest_checkpoint()
        if checkpoint is None:
            reporter.note("no readable checkpoint found; training starts again from epoch 1.")
        else:
            reporter.info(f"resuming {run.root} after epoch {checkpoint['epoch']}", epoch=checkpoint["epoch"])
        return _fit_and_finish(config, run if main else None, prepared, reporter, resolve_device(config.device),
                               checkpoint)


@contextmanager
def _failure_recorded(run: RunDir | None) -> Iterator[None]:
    """Whatever goes wrong inside (bad data, a model that cannot be built, Ctrl-C), the run folder's
    status.json says "failed" with the reason before the error travels on: no run is left
    "preparing" or "running" by a failure (only a killed process can leave one "running")."""
    try:
        yield
    except BaseException as exc:
        if run is not None:
            reason = "interrupted (Ctrl-C)" if isinstance(exc, KeyboardInterrupt) else f"{type(exc).__name__}: {exc}"
            extra: dict[str, Any] = {}
            if isinstance(exc, DivergedError):
                extra = {"diverged": exc.to_dict(), "last_checkpoint": getattr(exc, "last_checkpoint", None)}
            try:
                run.write_status("failed", error=reason, **extra)
            except OSError:  # the folder itself is gone or read-only: the original error matters more
                pass
        raise


def _recorded_files(run: RunDir) -> list[dict[str, Any]]:
    """The input-file fingerprint of data.json (a DataError when it is missing or malformed)."""
    info = run.read_json(run.data)
    files = info.get("files") if isinstance(info, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, dict) and isinstance(f.get("sha256"), str)
                                              and isinstance(f.get("path"), str) for f in files):
        raise DataError(f"{run.data} has no valid input-file fingerprint (files: [{{path, sha256}}]); the run folder "
                        "is damaged, so resuming cannot check the data: start a new run.")
    return files


def _check_same_data(run: RunDir, recorded: list[dict[str, Any]], current: list[dict[str, Any]],
                     reporter: Reporter) -> None:
    """Refuse to resume unless the input files have the recorded contents (SHA-256, in order)."""
    if [f["sha256"] for f in recorded] == [f["sha256"] for f in current]:
        moved = [(old["path"], new["path"]) for old, new in zip(recorded, current) if old["path"] != new["path"]]
        for old, new in moved:
            reporter.note(f"the data moved: {new} has the contents recorded for {old} (same SHA-256).")
        return
    changes = []
    for i in range(max(len(recorded), len(current))):
        old = recorded[i] if i < len(recorded) else None
        new = current[i] if i < len(current) else None
        if old is None:
            changes.append(f"{new['path']} is new")
        elif new is None:
            changes.append(f"{old['path']} is no longer read")
        elif old["sha256"] != new["sha256"]:
            where = new["path"] if old["path"] == new["path"] else f"{new['path']} (recorded: {old['path']})"
            changes.append(f"{where} has SHA-256 {new['sha256'][:12]}..., recorded {old['sha256'][:12]}...")
    raise DataError(f"the input data changed since {run.root} started: {'; '.join(changes)}. Resuming would not "
                    "reproduce the run: restore the original files (their contents are compared, not their paths) "
                    "or start a new run.")


def _fit_and_finish(config: ExperimentConfig, run: RunDir | None, prepared: Prepared, reporter: Reporter,
                    device: torch.device, checkpoint: dict[str, Any] | None) -> TrainResult:
    """Train, then (``run`` given: rank 0) save, evaluate and write the results.

    ``run`` is None on the other ranks of a distributed run: they train their shards and stop.
    The callers record a failure in the run's status (:func:`_failure_recorded`).
    """
    kind, model, train_cols, val_cols = _build(config, prepared, device)
    if run is None:  # another rank of a distributed run: train the shards, write nothing
        history = _fit(config, None, model, train_cols, val_cols, reporter, checkpoint) \
            if kind.gradient_trained else History()
        return TrainResult(Path("."), {}, history, model, config, prepared)
    validation = _next_item_validation(config, run.best, model, kind, prepared, reporter, checkpoint)
    tracker = start_tracking(config, run.root)
    history, train_seconds, selected = _train_and_select(
        config, run, model, kind, train_cols, val_cols, validation, reporter, checkpoint,
        [tracker] if tracker is not None else [])
    model.save_weights(run.model)
    metrics = evaluate_run(config, model, prepared.test.to(device), prepared.pre, prepared.seen_before_test,
                           config.evaluation.protocols, with_loss=wants_test_loss(config),
                           histories=prepared.histories_before_test)
    metrics["train_seconds"] = train_seconds
    metrics["epochs"] = history.epochs[-1] if history.epochs else 0
    metrics["processes"] = distributed.world_size()
    if validation is not None:
        metrics["validation"] = {"protocol": config.evaluation.validation_protocol,
                                 **(validation.best_metrics if selected else validation.last_metrics)}
        if selected and kind.gradient_trained:
            metrics["best_epoch"] = validation.best_epoch
    # Popularity on the same split and protocols (milliseconds), recorded and warned about.
    check_against_popularity(config, prepared, metrics, reporter.note)
    write_json(run.metrics, clean_json(metrics))
    run.write_status("completed", epoch=metrics["epochs"])
    _write_report(config, run, metrics, tracker, reporter)
    reporter.info(f"saved {run.root}", run_dir=str(run.root))
    return TrainResult(run.root, metrics, history, model, config, prepared)


@dataclass
class ValidationFit:
    """A model trained by :func:`fit_for_validation`: its per-epoch logs (``history``, with the
    ``val_*`` metrics), training seconds, and the next-item validation's selection (None for
    other protocols) whose weights the model holds when ``selected``."""

    model: Model
    history: History
    train_seconds: float
    validation: NextItemValidation | None
    selected: bool


def fit_for_validation(config: ExperimentConfig, prepared: Prepared, reporter: Reporter,
                       callbacks: list[Callback] | None = None) -> ValidationFit:
    """Train ``config``'s model on ``prepared.train`` exactly as :func:`train` does (same model
    building, seeds, ``fit`` options, per-epoch validation and model selection), with no run
    folder and no test evaluation: ``prepared.test`` is never read. ``recstack tune`` scores its
    trials with this.

    ``callbacks`` see every epoch's logs after the validation metrics joined them (a gradient-
    trained kind), or are called once with epoch 1 (a closed form). A closed form validates once.
    """
    device = resolve_device(config.device)
    kind, model, train_cols, val_cols = _build(config, prepared, device)
    validation = _next_item_validation(config, None, model, kind, prepared, reporter, None)
    history, seconds, selected = _train_and_select(config, None, model, kind, train_cols, val_cols, validation,
                                                   reporter, None, list(callbacks or []))
    return ValidationFit(model, history, seconds, validation, selected)


def _build(config: ExperimentConfig, prepared: Prepared, device: torch.device) -> tuple[Any, Model, Columns,
                                                                                          Columns | None]:
    """(kind, model, training columns, what ``fit`` validates on) of ``config`` on ``prepared``."""
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    kind = MODEL_KINDS.get(config.model.kind)
    ctx = model_context(config, prepared.pre, prepared, "rating" in prepared.train, "weight" in prepared.train)
    model = build_model(config, ctx).to(device)
    return kind, model, prepared.train.to(device), _validation_data(config, model, kind, prepared, device)


def _train_and_select(config: ExperimentConfig, run: RunDir | None, model: Model, kind: Any, train_cols: Columns,
                      val_cols: Columns | None, validation: NextItemValidation | None, reporter: Reporter,
                      checkpoint: dict[str, Any] | None, callbacks: list[Callback]) -> tuple[History, float, bool]:
    """Fit (gradient-trained: ``model.fit`` with ``validation`` before ``callbacks``; closed form: one
    ``fit`` and one validation), then load the selected weights. Returns (history, training
    seconds, whether a next-item selection chose the weights)."""
    start = time.perf_counter()
    if kind.gradient_trained:
        history = _fit(config, run, model, train_cols, val_cols, reporter, checkpoint,
                       [c for c in (validation, *callbacks) if c is not None])
    else:
        if run is not None:
            run.write_status("running", epoch=0, epochs=1)
        history = model.fit(train_cols, reporter=reporter) if kind.fit_reports_progress else model.fit(train_cols)
        logs = history.last()
        if validation is not None:
            validation.set_model(model)
            validation.on_epoch_end(validation.freq, logs)   # the closed form's one validation
        elif val_cols is not None:   # the Task metrics on the validation rows, as fit() logs them per epoch
            val_logs = model.evaluate(val_cols, batch_size=config.evaluation.batch_size, distributed_data=False)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        history = History()
        history.append(1, logs)
        for callback in callbacks:
            callback.set_model(model)
            callback.on_epoch_end(1, dict(logs))
        if run is not None:
            run.save_history(history)
    train_seconds = time.perf_counter() - start
    selected = validation is not None and validation.metric is not None and validation.best_state is not None
    if selected and config.training.early_stopping.restore_best:
        model.load_state_dict(validation.best_state)
        reporter.info(f"model selection: the weights of epoch {validation.best_epoch} (best validation "
                      f"{validation.metric} {validation.best:.4f})", best_epoch=validation.best_epoch)
    return history, train_seconds, selected


def _write_report(config: ExperimentConfig, run: RunDir, metrics: dict[str, Any], tracker: MlflowTracker | None,
                  reporter: Reporter) -> None:
    """plots/ and report.html (experiment.report), then the tracker's final metrics and artifacts.

    The run is complete by now (metrics.json, status.json): a report that cannot be built is a
    note, never a failed run."""
    try:
        written, report, notes = write_run_outputs(run.root, config.output.plots, config.output.report)
    except Exception as exc:  # noqa: BLE001 (the run's results are saved; the report can be rebuilt)
        written, report = [], None
        notes = [f"report.html not written ({type(exc).__name__}: {exc}); the run is complete: try "
                 f"recstack report {run.root}"]
    for note in notes:
        reporter.note(note)
    if report is not None:
        reporter.info(f"report: {report}", report=str(report))
    if tracker is not None:
        tracker.finish(clean_json(metrics), report, written)
        reporter.info(f"MLflow: run {tracker.run_id} in {tracker.uri}", mlflow_run_id=tracker.run_id)


def _validation_data(config: ExperimentConfig, model: Model, kind: Any, prepared: Prepared,
                     device: torch.device) -> Columns | None:
    """What ``model.fit`` validates on (its val_loss and Task metrics): the validation rows, or for
    sequential kinds each validation item with the training history before it."""
    if prepared.validation is None:
        return None
    if not kind.sequential:
        return prepared.validation.to(device)
    scorer = HistoryScorer(model, kind, prepared.pre.num_items)
    rows = scorer.sequences(prepared.histories_train, prepared.validation["user"].numpy(),
                            prepared.validation["item"].numpy())
    return rows.columns().to(device)


def _next_item_validation(config: ExperimentConfig, best_path: Path | None, model: Model, kind: Any,
                          prepared: Prepared, reporter: Reporter,
                          checkpoint: dict[str, Any] | None) -> NextItemValidation | None:
    """The per-epoch next-item validation (and model selection) of ``config``, or None; the best
    weights are also written to ``best_path`` (None: kept in memory only)."""
    e = config.evaluation
    if e.validation_protocol not in NEXT_ITEM_PROTOCOLS or prepared.validation is None:
        return None
    stop = config.training.early_stopping
    if stop is not None and stop.patience and distributed.world_size() > 1:
        raise ConfigError("training.early_stopping.patience stops rank 0 alone; with --nproc > 1 set it to 0 (model "
                          "selection with restore_best still works).")
    rows = prepared.validation

    def evaluate() -> dict[str, float]:
        return evaluate_next_item(model, kind, rows, prepared.histories_train, e.validation_protocol, e.next_item,
                                  e.ks, prepared.pre.num_items, e.batch_size)

    prior = History.from_dict(checkpoint["history"]) if checkpoint is not None else None
    select = stop is not None and kind.gradient_trained   # a closed form has one state: nothing to select
    return NextItemValidation(evaluate, config.training.validation_freq, reporter.info,
                              metric=stop.metric if select else None,
                              patience=stop.patience if stop is not None else 0, best_path=best_path, prior=prior)


def _fit(config: ExperimentConfig, run: RunDir | None, model: Model, train_cols: Columns,
         val_cols: Columns | None, reporter: Reporter, checkpoint: dict[str, Any] | None,
         extra_callbacks: list[Callback] | None = None, progress: Progress | None = None) -> History:
    """``model.fit`` with checkpoints and history files (``run`` given), from ``checkpoint`` if any;
    ``extra_callbacks`` run before the recorder (their additions to the logs are recorded).
    Progress: ``progress`` if given (an ensemble member's), else the reporter's display when there
    is a run folder (none on a distributed run's other ranks)."""
    t = config.training
    optimizer = make_optimizer(config, model)
    history = History()
    initial_epoch = 0
    if checkpoint is not None:
        try:
            model.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            torch.set_rng_state(checkpoint["torch_rng_state"])
            history = History.from_dict(checkpoint["history"])
        except (RuntimeError, TypeError, ValueError, KeyError, AttributeError) as exc:
            reason = " ".join(str(exc).split())[:300]
            raise DataError(f"{checkpoint.get('path', 'the last checkpoint')} does not match the run's model and "
                            f"optimizer ({type(exc).__name__}: {reason}); delete it to resume from an older "
                            "checkpoint, or start a new run.") from None
        initial_epoch = int(checkpoint["epoch"])
    tensorboard = None
    callbacks: list[Callback] = list(extra_callbacks or [])
    if run is not None:
        tensorboard = _tensorboard(run, config.output.tensorboard, reporter)
        callbacks.append(RunRecorder(run, history, optimizer, t.checkpoint_every, t.keep_checkpoints, t.epochs,
                                     tensorboard))
        if os.environ.get(STALL_ENV):
            callbacks.append(_Stall(int(os.environ[STALL_ENV])))
        run.write_status("running", epoch=initial_epoch, epochs=t.epochs)
    else:
        callbacks.append(_HistoryRecorder(history))
    try:
        if initial_epoch < t.epochs:
            model.fit(training_source(model, train_cols), optimizer=optimizer, validation_data=val_cols,
                      verbose=progress or (reporter.progress() if run is not None else False), callbacks=callbacks,
                      initial_epoch=initial_epoch, **fit_options(config))
    except DivergedError as exc:
        raise _diverged_run(exc, config, run) from None
    finally:
        if tensorboard is not None:
            tensorboard.close()
    if run is not None:
        run.save_history(history)
    return history


def fit_without_run(config: ExperimentConfig, model: Model, train_cols: Columns, reporter: Reporter,
                    progress: Progress | None = None) -> History:
    """``config``'s training loop (its optimizer, epochs and fit options) on ``train_cols``, with no
    run folder, checkpoints or validation: how an ensemble trains its gradient-trained members
    (``progress``: their display, none by default)."""
    return _fit(config, None, model, train_cols, None, reporter, None, progress=progress)


def _diverged_run(exc: DivergedError, config: ExperimentConfig, run: RunDir | None) -> DivergedError:
    """``exc`` reworded for the command line: --set hints instead of fit() arguments, and where the
    last good checkpoint is (it can be older than the last finite epoch with checkpoint_every > 1)."""
    checkpoint = run.latest_checkpoint() if run is not None else None
    what = str(exc).split(" Try ")[0].rstrip(".")
    lr = config.optimizer.learning_rate
    clip = (f"--set training.clip_grad_norm={config.training.clip_grad_norm / 10:g}" if config.training.clip_grad_norm
            else "--set training.clip_grad_norm=1.0")
    kept = (f"the last good checkpoint is {checkpoint['path']} (epoch {checkpoint['epoch']})" if checkpoint
            else "no checkpoint was written before it")
    error = DivergedError(f"{what}; the run is marked failed and {kept}. Try --set optimizer.learning_rate={lr / 10:g} "
                          f"or {clip}, and check the data for NaN/inf values.", epoch=exc.epoch, step=exc.step,
                          global_step=exc.global_step, quantity=exc.quantity, names=exc.names, value=exc.value,
                          last_finite_epoch=exc.last_finite_epoch, history=exc.history)
    error.last_checkpoint = {"path": checkpoint["path"], "epoch": checkpoint["epoch"]} if checkpoint else None
    return error


def _describe_data(p: Prepared, reporter: Reporter) -> None:
    rows = p.info["rows"]
    interactions = rows.get("after_filters", rows["after_duplicates"])
    reporter.info(f"data: {interactions:,} interactions, {p.info['users']:,} users, {p.info['items']:,} items; split train {rows['train']:,} / validation {rows['validation']:,} "
                  f"/ test {rows['test']:,}", **p.info["rows"])


__all__ = ["STALL_ENV", "TrainResult", "ValidationFit", "fit_for_validation", "fit_without_run", "resume", "train"]
