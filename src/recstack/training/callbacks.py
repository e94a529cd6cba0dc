"""Training callbacks: hooks the fit loop calls; subclass and override what you need."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from .trainable import Trainable


class Callback:
    """Base class; every hook is a no-op. ``self.model`` is set by ``fit``."""

    model: "Trainable"

    def set_model(self, model: "Trainable") -> None:
        self.model = model

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_train_end(self, logs: dict[str, Any] | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None: ...
    def on_train_batch_end(self, step: int, logs: dict[str, Any] | None = None) -> None: ...


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` evaluated epochs.

    Epochs where the monitored value is missing (e.g. no validation that epoch)
    are ignored.
    """

    def __init__(self, monitor: str = "val_loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}.")
        self.monitor, self.mode, self.patience, self.min_delta = monitor, mode, patience, min_delta
        self.best: float | None = None
        self.wait = 0
        self.stopped_epoch: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            return
        better = (self.best is None
                  or (self.mode == "min" and value < self.best - self.min_delta)
                  or (self.mode == "max" and value > self.best + self.min_delta))
        if better:
            self.best, self.wait = float(value), 0
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.model.stop_training = True
                self.stopped_epoch = epoch
