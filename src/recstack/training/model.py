"""The Model base class: write ``compute_loss``, get ``fit`` and ``evaluate``."""

from __future__ import annotations

import io
import os
from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from ..core.io import atomic_write_bytes
from ..core.columns import Batch, BatchSource, Columns
from ..metrics.base import Metric
from ..tasks.base import Task
from . import loop
from .callbacks import Callback
from .history import History
from .progress import Progress


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
    def fit(
        self,
        train: BatchSource | Mapping[str, Any],
        epochs: int = 1,
        batch_size: int = 1024,
        optimizer: loop.OptimizerLike | None = None,
        validation_data: BatchSource | Mapping[str, Any] | None = None,
        validation_freq: int = 1,
        validation_batch_size: int | None = None,
        shuffle: bool = True,
        seed: int | None = None,
        verbose: bool | str | Progress = True,
        callbacks: Iterable[Callback] = (),
        initial_epoch: int = 0,
        drop_remainder: bool = False,
        distributed_data: bool | None = None,
        autocast_dtype: torch.dtype | None = None,
    ) -> History:
        """Train for ``epochs`` passes over ``train``.

        Args:
            train: encoded columns (a :class:`~recstack.Columns` or mapping of tensors).
            epochs: last epoch to run (with ``initial_epoch``, runs epochs
                initial_epoch+1 .. epochs, like Keras).
            batch_size: rows per step; the last batch of an epoch may be smaller.
            optimizer: a ``torch.optim.Optimizer`` or a factory ``params -> optimizer``;
                may be omitted after the first call (the previous one is reused).
            validation_data: evaluated every ``validation_freq`` epochs; its
                results are logged with a ``val_`` prefix.
            shuffle: reshuffle the rows every epoch (``False`` keeps their order,
                like a TFRS ``shuffle().batch().cache()`` pipeline).
            seed: seeds the shuffles (each epoch's order depends only on seed and epoch).
            verbose: True or "bar" (progress bar and a summary line per epoch), False or
                "quiet", "jsonl" (one JSON object per epoch on stdout), or a Progress object.
            callbacks: :class:`~recstack.training.Callback` objects.
            drop_remainder: drop the last partial batch.
            distributed_data: inside an initialised torch.distributed group, shard every global
                batch of ``batch_size`` rows across the ranks (default: when there are several);
                losses and metrics equal a single process's (see :mod:`recstack.core.distributed`).
            autocast_dtype: e.g. ``torch.bfloat16``: towers under ``torch.autocast`` (GPU mixed
                precision); the retrieval softmax stays in float32. Batches on another device than
                the model (e.g. streamed from disk) are moved to it (pinned memory on CUDA).

        Returns:
            History with per-epoch ``loss``, ``regularization_loss``, ``total_loss``
            (means over batches), training metrics, ``epoch_seconds`` and ``val_*``.
        """
        return loop.fit(self, train, epochs=epochs, batch_size=batch_size, optimizer=optimizer,
                        validation_data=validation_data, validation_freq=validation_freq,
                        validation_batch_size=validation_batch_size, shuffle=shuffle, seed=seed,
                        verbose=verbose, callbacks=callbacks, initial_epoch=initial_epoch,
                        drop_remainder=drop_remainder, distributed_data=distributed_data,
                        autocast_dtype=autocast_dtype)

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
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.load_state_dict(state, strict=strict)
