"""The fit and evaluate loops behind :class:`recstack.Model`.

Batches come from a :class:`~recstack.core.columns.BatchSource`: for in-memory
:class:`~recstack.Columns`, slices (or index gathers, when shuffled) of column
tensors; nothing per-example happens in Python. Reported losses are means of
the per-batch losses over the epoch (what the TFRS/Keras progress bar shows);
metrics are the tasks' streaming metrics, reset at the start of every epoch
and every evaluation. Every step is checked for non-finite losses and gradients
(:mod:`recstack.training.guards`) with one host synchronisation per step.
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

import torch

from ..core import distributed
from ..core.columns import Batch, BatchSource, as_batch_source, epoch_order  # epoch_order: re-exported
from ..core.errors import ConfigError, DataError, suggest
from .callbacks import Callback
from .guards import StepGuard, explain_lookup_error
from .history import History
from .progress import Progress, ProgressBar, make_progress

if TYPE_CHECKING:  # pragma: no cover
    from .trainable import Trainable

OptimizerLike = torch.optim.Optimizer | Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


class _LossMeans:
    """Running means of loss, regularization_loss and total_loss over batches."""

    def __init__(self) -> None:
        self.sums = {"loss": 0.0, "regularization_loss": 0.0, "total_loss": 0.0}
        self.count = 0

    def add(self, loss: float, reg: float) -> None:
        self.sums["loss"] += loss
        self.sums["regularization_loss"] += reg
        self.sums["total_loss"] += loss + reg
        self.count += 1

    def means(self) -> dict[str, float]:
        return {k: v / self.count if self.count else math.nan for k, v in self.sums.items()}

    def sum_over_ranks(self) -> None:
        """Each batch's loss is the sum of the ranks' shares: add the ranks' sums up."""
        names = list(self.sums)
        for name, total in zip(names, distributed.all_reduce_sum([self.sums[n] for n in names])):
            self.sums[name] = total


def metric_results(model: "Trainable") -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in model.metrics:
        out.update(metric.result())
    return out


def _sync_metrics(model: "Trainable") -> None:
    for metric in model.metrics:
        metric.sync()


def _sharded(data: BatchSource, enabled: bool | None) -> tuple[BatchSource, bool]:
    """``data`` as this rank's shard when training/evaluating across several processes."""
    use = distributed.world_size() > 1 if enabled is None else bool(enabled) and distributed.world_size() > 1
    return (distributed.ShardedSource(data) if use else data), use


def model_device(model: "Trainable") -> torch.device:
    """Where the model's parameters (or buffers) live; CPU for a model without either."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def to_device(batch: Mapping[str, torch.Tensor], device: torch.device) -> Batch:
    """Move a batch to ``device`` if it is elsewhere (streamed batches arrive on the CPU): through
    pinned memory with a non-blocking copy for CUDA, so the copy overlaps with compute. Always a
    :class:`~recstack.core.columns.Batch` (a missing column then raises a clear error)."""
    if all(t.device == device for t in batch.values()):
        return batch if isinstance(batch, Batch) else Batch(batch)
    if device.type == "cuda":
        return Batch({k: v.pin_memory().to(device, non_blocking=True) for k, v in batch.items()})
    return Batch({k: v.to(device) for k, v in batch.items()})


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` to ``dtype`` (e.g. torch.bfloat16) on ``device``, or a no-op for None."""
    if dtype is None or dtype == torch.float32:
        return torch.autocast(device.type, enabled=False)
    return torch.autocast(device.type, dtype=dtype)


def _reset_metrics(model: "Trainable") -> None:
    for metric in model.metrics:
        metric.reset_state()


def _invalidate_candidate_caches(model: "Trainable") -> None:
    for metric in model.metrics:
        invalidate = getattr(metric, "invalidate", None)
        if invalidate is not None:
            invalidate()


def resolve_optimizer(model: "Trainable", optimizer: OptimizerLike | None) -> torch.optim.Optimizer:
    if optimizer is None:
        if getattr(model, "optimizer", None) is None:
            raise ConfigError(
                "fit() needs an optimizer the first time, e.g. "
                "optimizer=recstack.training.optimizers.Adagrad(model.parameters(), lr=0.1).")
        return model.optimizer
    if isinstance(optimizer, torch.optim.Optimizer):
        return optimizer
    if callable(optimizer):
        return optimizer(model.parameters())
    raise ConfigError(f"optimizer must be a torch.optim.Optimizer or a factory; got {type(optimizer).__name__}.")


@dataclass(frozen=True)
class FitOptions:
    """Every option of :meth:`recstack.Model.fit`, defined once: names, order, defaults, checks.

    ``Model.fit(train, *args, **kwargs)`` builds ``FitOptions(*args, **kwargs)`` (so positional
    calls keep working in this order) and its signature is generated from these fields; what each
    option means is documented in :meth:`recstack.Model.fit`. ``verbose``: True/"bar",
    False/"quiet", "jsonl" or a :class:`~recstack.training.progress.Progress`.
    ``distributed_data``: see :mod:`recstack.core.distributed`.
    """

    epochs: int = 1
    batch_size: int = 1024
    optimizer: OptimizerLike | None = None
    validation_data: BatchSource | Mapping[str, Any] | None = None
    validation_freq: int = 1
    validation_batch_size: int | None = None
    shuffle: bool = True
    seed: int | None = None
    verbose: bool | str | Progress = True
    callbacks: Iterable[Callback] = ()
    initial_epoch: int = 0
    drop_remainder: bool = False
    distributed_data: bool | None = None
    autocast_dtype: torch.dtype | None = None
    clip_grad_norm: float | None = None

    def __post_init__(self) -> None:
        if self.initial_epoch < 0:
            raise ConfigError(f"initial_epoch must be >= 0; got {self.initial_epoch}.")
        if self.epochs < 1 or self.batch_size < 1 or self.validation_freq < 1:
            raise ConfigError(f"epochs, batch_size and validation_freq must be >= 1; got {self.epochs}, "
                              f"{self.batch_size}, {self.validation_freq}.")
        if self.clip_grad_norm is not None and not (self.clip_grad_norm > 0 and math.isfinite(self.clip_grad_norm)):
            raise ConfigError(f"clip_grad_norm must be a positive finite number (or None); got {self.clip_grad_norm}.")

    @classmethod
    def from_call(cls, caller: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> "FitOptions":
        """``cls(*args, **kwargs)`` with the TypeErrors of a misspelt or doubled option worded for ``caller``."""
        names = [f.name for f in fields(cls)]
        if len(args) > len(names):
            raise TypeError(f"{caller} takes {len(names)} options after the data; got {len(args)} positional ones.")
        for name in kwargs:
            if name not in names:
                raise TypeError(f"{caller} got an unexpected keyword argument {name!r}{suggest(name, names)}.")
            if name in names[:len(args)]:
                raise TypeError(f"{caller} got multiple values for {name!r}.")
        return cls(*args, **kwargs)


def fit_signature(method: Callable[..., Any]) -> inspect.Signature:
    """``method``'s signature with its ``*args, **kwargs`` replaced by the FitOptions fields (for help())."""
    head = [p for p in inspect.signature(method).parameters.values()
            if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]
    options = [inspect.Parameter(f.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=f.default,
                                 annotation=f.type) for f in fields(FitOptions)]
    return inspect.Signature([*head, *options], return_annotation="History")


def fit(model: "Trainable", train: BatchSource | Mapping[str, Any], options: FitOptions = FitOptions()) -> History:
    """Train ``model`` on ``train`` with ``options`` (see :meth:`recstack.Model.fit`).

    Raises :class:`~recstack.core.errors.DivergedError` as soon as a loss or gradient is not
    finite (before the optimizer applies it) or the parameters are not finite after an epoch;
    ``model.history`` then holds the finite epochs.
    """
    o = options
    data = as_batch_source(train, "fit()")
    if data.num_rows == 0:
        raise DataError("The training data has no rows.")
    val = as_batch_source(o.validation_data, "fit(validation_data=...)") if o.validation_data is not None else None
    data, sharded = _sharded(data, o.distributed_data)
    if sharded and not getattr(model, "distributed_ready", False):
        raise ConfigError(f"{type(model).__name__} does not support data-parallel training yet (its loss is not "
                          "defined over a sharded batch); train it in one process.")
    opt = resolve_optimizer(model, o.optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]
    add_regularization = distributed.rank() == 0 or not sharded   # the penalty once, not once per rank
    device = model_device(model)
    model.optimizer = opt
    model.stop_training = False
    seed = int(torch.randint(0, 2**31 - 1, (1,))) if o.seed is None else o.seed
    callbacks = list(o.callbacks)
    for cb in callbacks:
        cb.set_model(model)
    history = History()
    model.history = history
    guard = StepGuard(model, opt, device, o.clip_grad_norm, check_loss=not sharded)
    guard.history, guard.last_finite_epoch = history, o.initial_epoch
    regularized = model.regularized_modules()
    num_batches = data.num_batches(o.batch_size, o.drop_remainder)
    progress = make_progress(o.verbose)
    progress.train_begin(o.epochs, o.initial_epoch, data.num_rows, o.batch_size)
    for cb in callbacks:
        cb.on_train_begin()

    for epoch in range(o.initial_epoch + 1, o.epochs + 1):
        guard.epoch = epoch
        for cb in callbacks:
            cb.on_epoch_begin(epoch)
        model.train()
        _reset_metrics(model)
        _invalidate_candidate_caches(model)
        losses = _LossMeans()
        progress.epoch_begin(epoch, o.epochs, num_batches)
        start = time.perf_counter()
        rows = 0
        batches = data.epoch_batches(o.batch_size, shuffle=o.shuffle, seed=seed, epoch=epoch,
                                     drop_remainder=o.drop_remainder)
        with distributed.sharding(sharded):
            for step, batch in enumerate(batches):
                batch = to_device(batch, device)
                opt.zero_grad(set_to_none=True)
                with autocast(device, o.autocast_dtype):
                    loss = _compute_loss(model, batch, training=True)
                reg = _regularization(regularized if add_regularization else [], loss)
                total = loss + reg
                total.backward()
                if sharded:
                    distributed.all_reduce_gradients(trainable)
                loss_value, reg_value = guard.check_step(loss, reg, step)   # the step's one host sync
                opt.step()
                _invalidate_candidate_caches(model)
                losses.add(loss_value, reg_value)
                batch_rows = next(iter(batch.values())).shape[0]
                rows += batch_rows
                progress.batch_end(batch_rows, lambda: {**losses.means(), **metric_results(model)})
                for cb in callbacks:
                    cb.on_train_batch_end(step, {"loss": loss_value})
        if sharded:
            losses.sum_over_ranks()
            _sync_metrics(model)
            rows = int(distributed.all_reduce_sum([rows])[0])
        guard.check_epoch(epoch, losses.means(), losses.count)
        logs = {**metric_results(model), **losses.means()}
        logs["epoch_seconds"] = seconds = time.perf_counter() - start
        logs["examples_per_second"] = rows / seconds if seconds > 0 else math.nan
        if val is not None and epoch % o.validation_freq == 0:
            val_logs = evaluate(model, val, batch_size=o.validation_batch_size or o.batch_size, verbose=False,
                                distributed_data=sharded, autocast_dtype=o.autocast_dtype)
            logs.update({f"val_{k}": v for k, v in val_logs.items()})
        progress.epoch_end(epoch, o.epochs, logs)
        history.append(epoch, logs)
        guard.epoch_done(epoch)
        for cb in callbacks:
            cb.on_epoch_end(epoch, logs)
        if model.stop_training:
            break
    for cb in callbacks:
        cb.on_train_end(history.last())
    progress.train_end(history.last())
    return history


def _compute_loss(model: "Trainable", batch: Batch, training: bool) -> torch.Tensor:
    """``model.compute_loss``; a failed embedding lookup is re-raised naming the column and the table."""
    try:
        return model.compute_loss(batch, training=training)
    except (IndexError, RuntimeError, TypeError) as exc:
        clearer = explain_lookup_error(model, batch, exc, training)
        if clearer is None:
            raise
        raise clearer from None


@torch.no_grad()
def evaluate(
    model: "Trainable",
    data: BatchSource | Mapping[str, Any],
    batch_size: int = 4096,
    verbose: bool | str = False,
    distributed_data: bool | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> dict[str, float]:
    """Loss and metrics of ``model`` on ``data`` (see :meth:`recstack.Model.evaluate`).

    Across several ranks (``distributed_data``, as in :func:`fit`) each rank evaluates its
    share of every batch and the losses and metric states are merged: every rank returns
    the single-process result.
    """
    columns = as_batch_source(data, "evaluate()")
    if columns.num_rows == 0:
        raise DataError("The evaluation data has no rows.")
    # Models whose loss cannot be sharded evaluate the whole data on every rank (same result).
    columns, sharded = _sharded(columns, distributed_data if getattr(model, "distributed_ready", False) else False)
    was_training = model.training
    model.eval()
    _reset_metrics(model)  # also drops cached candidates: computed once, below, per evaluation
    regularized = model.regularized_modules()
    losses = _LossMeans()
    bar = ProgressBar(columns.num_batches(batch_size), "Evaluate", enabled=verbose is True or verbose == "bar")
    try:
        with distributed.sharding(sharded):
            device = model_device(model)
            for batch in columns.epoch_batches(batch_size, shuffle=False, seed=0, epoch=0):
                batch = to_device(batch, device)
                with autocast(device, autocast_dtype):
                    loss = _compute_loss(model, batch, training=False)
                reg = _regularization(regularized if distributed.rank() == 0 or not sharded else [], loss)
                losses.add(float(loss), float(reg))
                bar.update(1, losses.means)
        if sharded:
            losses.sum_over_ranks()
            _sync_metrics(model)
        out = {**metric_results(model), **losses.means()}
        bar.close(out)
        return out
    finally:
        if was_training:
            model.train()


def _regularization(modules: list[torch.nn.Module], like: torch.Tensor) -> torch.Tensor:
    total = like.new_zeros(())
    for module in modules:
        total = total + module.regularization_loss()
    return total
