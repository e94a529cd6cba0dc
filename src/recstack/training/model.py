"""The Model base class: write ``compute_loss``, get ``fit`` and ``evaluate``."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..core.io import atomic_write_bytes, load_tensors
from ..core.columns import Batch, BatchSource, Columns
from ..metrics.base import Metric
from ..tasks.base import Task
from . import loop
from .history import History


class Model(nn.Module):
    """Base class for recstack models, the counterpart of ``tfrs.Model``.

    Subclasses build towers and tasks in ``__init__`` and implement
    :meth:`compute_loss`; the base class supplies the training loop, evaluation,
    metric collection (every :class:`~recstack.tasks.Task`'s metrics) and
    regularisation (every submodule's ``regularization_loss()``, like Keras's
    ``self.losses``).

    Example:
        >>> class TwoTower(recstack.Model):
        ...     def __init__(self, users, items, candidates):
        ...         super().__init__()
        ...         self.users, self.items = users, items
        ...         self.task = recstack.tasks.Retrieval(
        ...             metrics=recstack.metrics.FactorizedTopK(candidates))
        ...     def compute_loss(self, batch, training=False):
        ...         return self.task(self.users(batch["user"]), self.items(batch["item"]),
        ...                          candidate_ids=batch["item"])
    """

    #: Whether ``compute_loss`` gives the single-process loss when batches are sharded across
    #: ranks (see :mod:`recstack.core.distributed`); fit refuses to shard models that do not.
    distributed_ready: bool = False

    def __init__(self) -> None:
        super().__init__()
        self.optimizer: torch.optim.Optimizer | None = None
        self.history: History | None = None
        self.stop_training = False

    def compute_loss(self, batch: Batch, training: bool = False) -> torch.Tensor:
        """Scalar loss of one batch (a dict of column name -> tensor slice)."""
        raise NotImplementedError("Subclasses of recstack.Model implement compute_loss(batch, training).")

    # Collected state -----------------------------------------------------------
    @property
    def metrics(self) -> list[Metric]:
        """Metrics of every task in the model (each listed once)."""
        seen: list[Metric] = []
        for module in self.modules():
            if isinstance(module, Task):
                seen.extend(m for m in module.metrics if all(m is not s for s in seen))
        return seen

    def regularized_modules(self) -> list[nn.Module]:
        """Submodules that contribute a ``regularization_loss()``."""
        return [m for m in self.modules() if m is not self and callable(getattr(m, "regularization_loss", None))]

    def regularization_loss(self) -> torch.Tensor:
        """Sum of the submodules' regularisation losses (0 when there are none)."""
        total = torch.zeros(())
        for module in self.regularized_modules():
            total = total + module.regularization_loss()
        return total

    # Training ---------------------------------------------------------------
    def fit(self, train: BatchSource | Mapping[str, Any], *args: Any, **kwargs: Any) -> History:
        """Train for ``epochs`` passes over ``train``.

        The options (after ``train``, positionally in this order or by keyword) are the fields of
        :class:`~recstack.training.loop.FitOptions`, defined there once with their defaults
        (``help(Model.fit)`` shows the full signature).

        Args:
            train: encoded columns (a :class:`~recstack.Columns` or mapping of tensors; a pandas
                DataFrame must be encoded first, e.g. ``recstack.Columns(feature_set.transform(df))``).
            epochs: last epoch to run (with ``initial_epoch``, runs epochs
                initial_epoch+1 .. epochs, like Keras). Default 1.
            batch_size: rows per step; the last batch of an epoch may be smaller. Default 1024.
            optimizer: a ``torch.optim.Optimizer`` or a factory ``params -> optimizer``;
                may be omitted after the first call (the previous one is reused).
            validation_data: evaluated every ``validation_freq`` epochs; its
                results are logged with a ``val_`` prefix.
            validation_batch_size: batch size of the validation (default ``batch_size``).
            shuffle: reshuffle the rows every epoch (``False`` keeps their order,
                like a TFRS ``shuffle().batch().cache()`` pipeline).
            seed: seeds the shuffles (each epoch's order depends only on seed and epoch).
            verbose: True or "bar" (progress bar and a summary line per epoch), False or
                "quiet", "jsonl" (one JSON object per epoch on stdout), or a Progress object.
            callbacks: :class:`~recstack.training.Callback` objects.
            initial_epoch: epochs already done (resuming); see ``epochs``.
            drop_remainder: drop the last partial batch.
            distributed_data: inside an initialised torch.distributed group, shard every global
                batch of ``batch_size`` rows across the ranks (default: when there are several);
                losses and metrics equal a single process's (see :mod:`recstack.core.distributed`).
            autocast_dtype: e.g. ``torch.bfloat16``: towers under ``torch.autocast`` (GPU mixed
                precision); the retrieval softmax stays in float32. Batches on another device than
                the model (e.g. streamed from disk) are moved to it (pinned memory on CUDA).
            clip_grad_norm: rescale each step's gradients so that their global L2 norm is at most
                this (like ``torch.nn.utils.clip_grad_norm_``; sparse gradients included).

        Returns:
            History with per-epoch ``loss``, ``regularization_loss``, ``total_loss``
            (means over batches), training metrics, ``epoch_seconds`` and ``val_*``.

        Raises:
            DivergedError: a loss or gradient became NaN/inf (checked every step, before the
                optimizer applies it) or the parameters did after an epoch; it says where and
                what to try, and ``model.history`` keeps the finite epochs.
        """
        return loop.fit(self, train, loop.FitOptions.from_call(f"{type(self).__name__}.fit()", args, kwargs))

    fit.__signature__ = loop.fit_signature(fit)  # type: ignore[attr-defined]

    def evaluate(self, data: BatchSource | Mapping[str, Any], batch_size: int = 4096,
                 verbose: bool = False, distributed_data: bool | None = None) -> dict[str, float]:
        """Metrics on ``data`` with TFRS's names, plus ``loss`` (mean per-batch loss),
        ``regularization_loss`` and ``total_loss``. Runs in eval mode without gradients;
        candidate embeddings are computed once for the whole evaluation."""
        return loop.evaluate(self, data, batch_size=batch_size, verbose=verbose, distributed_data=distributed_data)

    # Persistence ---------------------------------------------------------------
    def save_weights(self, path: str | os.PathLike) -> None:
        """Write the ``state_dict`` atomically (a tensor-only file, loadable with weights_only)."""
        buffer = io.BytesIO()
        torch.save(self.state_dict(), buffer)
        atomic_write_bytes(path, buffer.getvalue())

    def load_weights(self, path: str | os.PathLike, strict: bool = True) -> None:
        """Load weights saved by :meth:`save_weights`; never unpickles arbitrary objects."""
        self.load_state_dict(load_tensors(path), strict=strict)
