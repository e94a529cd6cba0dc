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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..core import distributed
from ..core.columns import Columns
from ..core.errors import ConfigError, DataError
from ..core.exclusions import Exclusions
from ..metrics import FactorizedTopK
from ..training.model import Model
from ..training.callbacks import Callback
from ..training.history import History
from .config import ExperimentConfig, dump_config, load_config
from .data import (
    InteractionData,
    Preprocessing,
    Splits,
    encode,
    feature_tables,
    fit_preprocessing,
    item_labels,
    load_data,
    prepare_evaluation_split,
    seen_items,
    split_data,
)
from .model_kinds import ModelContext, get_model_kind
from .reporter import Reporter, clean_json
from .run_dir import RunDir, default_run_dir, environment_info, fingerprint, write_plots

#: Test hook: stall (sleep) inside this epoch, after its first batch, so a test can kill the run mid-epoch.
STALL_ENV = "RECSTACK_DEBUG_STALL_EPOCH"


# -- data -----------------------------------------------------------------------------------------
@dataclass
class Prepared:
    """Encoded splits and everything derived from the data."""

    data: InteractionData
    splits: Splits
    pre: Preprocessing
    train: Columns
    validation: Columns | None
    test: Columns
    seen_train: Exclusions        # training rows per user (validation protocol)
    seen_before_test: Exclusions  # training + validation rows per user (test protocol, recommend)
    tables: dict[str, dict[str, torch.Tensor]]
    labels: list[str] | None
    info: dict[str, Any] = field(default_factory=dict)
    timestamps: torch.Tensor | None = None  # what time features are fitted on (see ModelContext)


def prepare(config: ExperimentConfig, reporter: Reporter, pre: Preprocessing | None = None) -> Prepared:
    """Read, validate, split, fit (or reuse ``pre``) and encode the data of ``config``."""
    data = load_data(config.data, reporter.note)
    splits = split_data(data.frame, config.split)
    if pre is None:
        pre = fit_preprocessing(data, splits, config.features)
    test_frame = prepare_evaluation_split(splits.test, pre, "test", reporter.note)
    val_frame = (prepare_evaluation_split(splits.validation, pre, "validation", reporter.note)
                 if splits.validation is not None else None)
    train = encode(splits.train, pre)
    validation = encode(val_frame, pre) if val_frame is not None else None
    test = encode(test_frame, pre)
    seen_train = seen_items([train], pre.num_users)
    seen_before_test = seen_items([train] + ([validation] if validation is not None else []), pre.num_users)
    frame = data.frame
    info = {
        "files": fingerprint(data.files),
        "rows": {"read": data.stats["rows_read"], "after_duplicates": data.stats["rows"],
                 "train": len(splits.train), "validation": 0 if val_frame is None else len(val_frame),
                 "test": len(test_frame)},
        "duplicates": {"rows": data.stats.get("duplicate_rows", 0),
                       "removed": data.stats.get("duplicate_rows_removed", 0), "policy": config.data.duplicates},
        "users": int(frame["user"].nunique()), "items": int(frame["item"].nunique()),
        "vocabulary": {"users": pre.num_users - 1, "items": pre.num_items - 1, "fitted_on": config.features.vocabulary},
        "cold_start": {"test_rows_unknown_user": int((test.get("user") == 0).sum()),
                       "test_rows_dropped_unknown_item": len(splits.test) - len(test_frame)},
    }
    fit_rows = frame if config.features.vocabulary == "all" else splits.train
    timestamps = (torch.from_numpy(fit_rows["timestamp"].to_numpy(np.float64, copy=True))
                  if "timestamp" in fit_rows else None)
    return Prepared(data, splits, pre, train, validation, test, seen_train, seen_before_test,
                    feature_tables(pre, data), item_labels(pre, data), info, timestamps)


# -- model ----------------------------------------------------------------------------------------
def model_context(config: ExperimentConfig, pre: Preprocessing, prepared: Prepared | None,
                  has_rating: bool, has_weight: bool) -> ModelContext:
    exclude = None
    if prepared is not None and config.evaluation.validation_protocol == "exclude-seen":
        exclude = prepared.seen_train
    return ModelContext(
        num_users=pre.num_users, num_items=pre.num_items, catalogue=pre.catalogue(), tasks=config.tasks,
        user_features=pre.feature_spec("user"), item_features=pre.feature_spec("item"),
        feature_tables=prepared.tables if prepared is not None else None, ks=tuple(config.evaluation.ks),
        validation_protocol=config.evaluation.validation_protocol, exclude=exclude, has_rating=has_rating,
        has_weight=has_weight, train_metrics=config.training.train_metrics,
        train=prepared.train if prepared is not None else None,
        timestamps=prepared.timestamps if prepared is not None else None)


def build_model(config: ExperimentConfig, ctx: ModelContext) -> Model:
    """Seed torch with ``config.seed`` and call the kind's builder."""
    kind = get_model_kind(config.model.kind)
    torch.manual_seed(config.seed)
    model = kind.builder(ctx, config.model.params)
    if not isinstance(model, Model):
        raise ConfigError(f"the builder of model kind {kind.name!r} returned {type(model).__name__}, "
                          "not a recstack.Model.")
    for name in ("user_embeddings", "item_embeddings"):
        if not callable(getattr(model, name, None)):
            raise ConfigError(f"model kind {kind.name!r}: {type(model).__name__} lacks {name}(ids) "
                              "(see the builder contract in recstack.experiment.model_kinds).")
    return model


def make_optimizer(config: ExperimentConfig, model: Model) -> torch.optim.Optimizer:
    o = config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError(f"model kind {config.model.kind!r} has no trainable parameters.")
    sparse = any(getattr(m, "sparse", False) for m in model.modules() if isinstance(m, torch.nn.Embedding))
    if sparse and (o.name in ("adam", "adamw") or o.weight_decay or o.momentum):
        raise ConfigError("sparse embedding gradients (model.sparse_gradients) need optimizer adagrad or sgd "
                          "without weight_decay or momentum (those would touch every row each step).")
    if o.name == "adagrad":
        from ..training.optimizers import Adagrad

        return Adagrad(params, lr=o.learning_rate, weight_decay=o.weight_decay, fused=not sparse)
    if o.name == "adam":
        return torch.optim.Adam(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    if o.name == "adamw":
        return torch.optim.AdamW(params, lr=o.learning_rate, weight_decay=o.weight_decay)
    return torch.optim.SGD(params, lr=o.learning_rate, momentum=o.momentum, weight_decay=o.weight_decay)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda was requested but torch sees no CUDA device; use device: cpu or auto.")
    return torch.device(name)


# -- callbacks ------------------------------------------------------------------------------------------
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
    from .run_dir import write_json, write_text

    write_text(run.config, dump_config(config))
    write_json(run.environment, environment_info(str(device), argv))
    run.write_status("preparing")
    try:
        prepared = prepare(config, reporter)
    except BaseException as exc:
        run.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    write_json(run.data, prepared.info)
    write_json(run.preprocessing, prepared.pre.to_dict())
    if prepared.labels is not None:
        write_json(run.item_labels, prepared.labels)
    run.save_seen(prepared.seen_before_test)
    run.save_tensors(run.test, dict(prepared.test))
    _describe_data(prepared, reporter)
    return _fit_and_finish(config, run, prepared, reporter, device, checkpoint=None)


def resume(run_dir: str | os.PathLike, reporter: Reporter) -> TrainResult:
    """Continue an interrupted run from its last checkpoint (same data, same config)."""
    run = RunDir.open(Path(run_dir), need=("config", "data", "preprocessing"))
    config = load_config(run.config)
    status = run.read_json(run.status) if run.status.exists() else {}
    if status.get("state") == "completed" and run.metrics.exists():
        reporter.note(f"{run.root} is already complete; nothing to resume.")
        loaded = load_run(run.root)
        history = History.from_dict(run.read_json(run.history_json)) if run.history_json.exists() else History()
        return TrainResult(run.root, run.read_json(run.metrics), history, loaded.model)
    pre = Preprocessing.from_dict(run.read_json(run.preprocessing))
    prepared = prepare(config, reporter, pre=pre)
    recorded = {f["path"]: f["sha256"] for f in run.read_json(run.data)["files"]}
    current = {f["path"]: f["sha256"] for f in prepared.info["files"]}
    if recorded != current:
        changed = sorted(set(recorded.items()) ^ set(current.items()))
        raise DataError(f"the input data changed since {run.root} started ({', '.join(sorted({p for p, _ in changed}))}); "
                        "resuming would not reproduce the run. Start a new run instead.")
    checkpoint = run.latest_checkpoint()
    if checkpoint is None:
        reporter.note("no readable checkpoint found; training starts again from epoch 1.")
    else:
        reporter.info(f"resuming {run.root} after epoch {checkpoint['epoch']}", epoch=checkpoint["epoch"])
    writer = run if distributed.is_main_process() else None
    return _fit_and_finish(config, writer, prepared, reporter, resolve_device(config.device), checkpoint)


def _fit_and_finish(config: ExperimentConfig, run: RunDir | None, prepared: Prepared, reporter: Reporter,
                    device: torch.device, checkpoint: dict[str, Any] | None) -> TrainResult:
    """Train, then (``run`` given: rank 0) save, evaluate and write the results.

    ``run`` is None on the other ranks of a distributed run: they train their shards and stop.
    """
    if config.training.threads:
        torch.set_num_threads(config.training.threads)
    kind = get_model_kind(config.model.kind)
    has_rating = "rating" in prepared.train
    ctx = model_context(config, prepared.pre, prepared, has_rating, "weight" in prepared.train)
    model = build_model(config, ctx).to(device)
    train_cols = prepared.train.to(device)
    val_cols = prepared.validation.to(device) if prepared.validation is not None else None
    if run is None:  # another rank of a distributed run: train the shards, write nothing
        history = _fit(config, None, model, train_cols, val_cols, reporter, checkpoint) \
            if kind.gradient_trained else History()
        return TrainResult(Path("."), {}, history, model, prepared)
    start = time.perf_counter()
    try:
        if kind.gradient_trained:
            history = _fit(config, run, model, train_cols, val_cols, reporter, checkpoint)
        else:
            run.write_status("running", epoch=0, epochs=1)
            history = model.fit(train_cols)
            run.save_history(history)
        train_seconds = time.perf_counter() - start
        model.save_weights(run.model)
        metrics = evaluate_run(config, model, prepared.test.to(device), prepared.pre, prepared.seen_before_test,
                               config.evaluation.protocols, with_loss=wants_test_loss(config))
        metrics["train_seconds"] = train_seconds
        metrics["epochs"] = history.epochs[-1] if history.epochs else 0
        metrics["processes"] = distributed.world_size()
        from .run_dir import write_json

        write_json(run.metrics, clean_json(metrics))
        if config.output.plots:
            _, note = write_plots(history, run.plots)
            if note:
                reporter.note(note)
        run.write_status("completed", epoch=metrics["epochs"])
    except BaseException as exc:
        run.write_status("failed", error=f"{type(exc).__name__}: {exc}")
        raise
    reporter.info(f"saved {run.root}", run_dir=str(run.root))
    return TrainResult(run.root, metrics, history, model, prepared)


def _fit(config: ExperimentConfig, run: RunDir | None, model: Model, train_cols: Columns,
         val_cols: Columns | None, reporter: Reporter, checkpoint: dict[str, Any] | None) -> History:
    """``model.fit`` with checkpoints and history files (``run`` given), from ``checkpoint`` if any."""
    t = config.training
    optimizer = make_optimizer(config, model)
    training_data = getattr(model, "training_data", None)
    train_source = training_data(train_cols) if callable(training_data) else train_cols
    history = History()
    initial_epoch = 0
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        torch.set_rng_state(checkpoint["torch_rng_state"])
        history = History.from_dict(checkpoint["history"])
        initial_epoch = int(checkpoint["epoch"])
    tensorboard = None
    callbacks: list[Callback] = []
    if run is not None:
        tensorboard = _tensorboard(run, config.output.tensorboard, reporter)
        callbacks.append(RunRecorder(run, history, optimizer, t.checkpoint_every, t.keep_checkpoints, t.epochs,
                                     tensorboard))
        if os.environ.get(STALL_ENV):
            callbacks.append(_Stall(int(os.environ[STALL_ENV])))
        run.write_status("running", epoch=initial_epoch, epochs=t.epochs)
    try:
        if initial_epoch < t.epochs:
            model.fit(train_source, epochs=t.epochs, batch_size=t.batch_size, optimizer=optimizer,
                      validation_data=val_cols, validation_freq=t.validation_freq,
                      validation_batch_size=config.evaluation.batch_size, shuffle=t.shuffle, seed=config.seed,
                      verbose=reporter.progress() if run is not None else False, callbacks=callbacks,
                      initial_epoch=initial_epoch,
                      autocast_dtype=torch.bfloat16 if t.precision == "bf16" else None)
    finally:
        if tensorboard is not None:
            tensorboard.close()
    if run is not None:
        run.save_history(history)
    return history


def _describe_data(p: Prepared, reporter: Reporter) -> None:
    rows = p.info["rows"]
    reporter.info(f"data: {rows['after_duplicates']:,} interactions, {p.info['users']:,} users, "
                  f"{p.info['items']:,} items; split train {rows['train']:,} / validation {rows['validation']:,} "
                  f"/ test {rows['test']:,}", **p.info["rows"])


# -- evaluation -------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate_protocol(model: Model, test: Columns, catalogue: torch.Tensor, protocol: str,
                      seen: Exclusions | None, ks: tuple[int, ...] | list[int], batch_size: int = 4096) -> dict[str, float]:
    """FactorizedTopK of ``model`` on ``test`` under one protocol.

    "seed": every test row ranks its item among the whole catalogue (TFRS's top-k
    accuracy; recall@k equals it). "exclude-seen": rows are grouped per user
    (``query_key``) for recall/NDCG/MRR, and each user's ``seen`` items are removed
    from the ranking (the positive itself never is).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(iter(test.values())).device
        candidates = torch.cat([model.item_embeddings(catalogue[i:i + 8192].to(device))
                                for i in range(0, catalogue.shape[0], 8192)])
        per_user = protocol == "exclude-seen"
        metric = FactorizedTopK(candidates, catalogue.to(device), ks=ks, exclude=seen if per_user else None)
        contextual = callable(getattr(model, "query_embeddings", None))
        for batch in test.batches(batch_size):
            queries = model.query_embeddings(batch) if contextual else model.user_embeddings(batch["user"])
            metric.update_state(queries, model.item_embeddings(batch["item"]),
                                true_candidate_ids=batch["item"],
                                query_keys=batch["query_key"] if per_user else None)
        return metric.result()
    finally:
        if was_training:
            model.train()


def wants_test_loss(config: ExperimentConfig) -> bool:
    """Test loss/RMSE via ``model.evaluate`` for rating models and gradient-trained kinds with a rating task:
    the retrieval loss over the test split costs as much as an epoch and ranks nothing."""
    kind = get_model_kind(config.model.kind)
    return kind.predicts_ratings or (kind.gradient_trained and config.tasks.rating.weight > 0)


def evaluate_run(config: ExperimentConfig, model: Model, test: Columns, pre: Preprocessing, seen: Exclusions,
                 protocols: list[str], with_loss: bool = True) -> dict[str, Any]:
    """{"protocols": {name: metrics}, "test": {loss, rmse, ...} (with_loss), "test_rows": n}."""
    out: dict[str, Any] = {"test_rows": test.num_rows, "protocols": {}}
    for protocol in protocols:
        out["protocols"][protocol] = evaluate_protocol(model, test, pre.catalogue(), protocol, seen,
                                                       config.evaluation.ks, config.evaluation.batch_size)
    if with_loss:
        losses = model.evaluate(test, batch_size=config.evaluation.batch_size, distributed_data=False)
        out["test"] = {k: v for k, v in losses.items() if not k.startswith("factorized_top_k/")}
    return out


# -- loading a finished run ----------------------------------------------------------------------------
@dataclass
class LoadedRun:
    run: RunDir
    config: ExperimentConfig
    pre: Preprocessing
    model: Model
    seen: Exclusions
    labels: list[str] | None

    def test_columns(self) -> Columns:
        return Columns(self.run.load_tensors(self.run.test))


def load_run(path: str | os.PathLike) -> LoadedRun:
    """Rebuild the model of a finished run from its folder (no data files needed)."""
    run = RunDir.open(Path(path), need=("config", "preprocessing", "model", "seen"))
    config = load_config(run.config)
    pre = Preprocessing.from_dict(run.read_json(run.preprocessing))
    test = run.load_tensors(run.test) if run.test.exists() else {}
    ctx = model_context(config, pre, None, "rating" in test, "weight" in test)
    model = build_model(config, ctx)
    state = run.load_tensors(run.model)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(f"{run.model} does not match the model its config describes: {exc}") from None
    model.eval()
    labels = run.read_json(run.item_labels) if run.item_labels.exists() else None
    return LoadedRun(run, config, pre, model, run.load_seen(), labels)


@torch.no_grad()
def recommend(loaded: LoadedRun, user: str, k: int = 10, exclude_seen: bool = False) -> dict[str, Any]:
    """Top-``k`` items for a raw user id: {"user", "known", "items": [{"item", "score", "label"?}]}.

    An unknown user gets the unknown-user (cold start) embedding. Ties keep item-id order.
    """
    pre, model = loaded.pre, loaded.model
    index = pre.users([str(user)])
    known = bool(index[0] > 0)
    catalogue = pre.catalogue()
    scores = (model.user_embeddings(index) @ model.item_embeddings(catalogue).T)[0].double()
    if exclude_seen and known:
        u = int(index[0])
        if u < loaded.seen.num_keys:
            seen = loaded.seen.indices[loaded.seen.indptr[u]:loaded.seen.indptr[u + 1]]
            scores[seen - 1] = -math.inf  # catalogue position = item id - 1
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return {"user": str(user), "known": known, "items": _items(loaded, catalogue[order], scores[order])}


@torch.no_grad()
def similar(loaded: LoadedRun, item: str, k: int = 10) -> dict[str, Any]:
    """The ``k`` items whose embeddings have the highest cosine similarity to ``item``'s."""
    pre, model = loaded.pre, loaded.model
    index = int(pre.items([str(item)])[0])
    if index == 0:
        vocab = pre.items.get_vocabulary()[1:]
        raise DataError(f"item {item!r} is not in the catalogue of this run ({len(vocab)} items, e.g. "
                        f"{', '.join(map(repr, vocab[:5]))}).")
    catalogue = pre.catalogue()
    emb = torch.nn.functional.normalize(model.item_embeddings(catalogue).double(), dim=1)
    scores = emb @ emb[index - 1]
    scores[index - 1] = -math.inf
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.isfinite(scores[order])][:k]
    return {"item": str(item), "items": _items(loaded, catalogue[order], scores[order])}


def _items(loaded: LoadedRun, ids: torch.Tensor, scores: torch.Tensor) -> list[dict[str, Any]]:
    names = loaded.pre.items.lookup_inverse(ids)
    out = []
    for i, name, score in zip(ids.tolist(), names.tolist(), scores.tolist()):
        entry: dict[str, Any] = {"item": str(name), "score": float(score)}
        if loaded.labels is not None and loaded.labels[i] and loaded.labels[i] != name:
            entry["label"] = loaded.labels[i]
        out.append(entry)
    return out


__all__ = ["LoadedRun", "Prepared", "TrainResult", "build_model", "evaluate_protocol", "evaluate_run", "load_run",
           "make_optimizer", "model_context", "prepare", "recommend", "resume", "similar", "train"]
