"""Per-epoch training history."""

from __future__ import annotations

import csv
import io
import math
import os
from typing import Any

from ..core.io import atomic_write_json, atomic_write_text


class History:
    """Metrics per epoch, like Keras's ``History``.

    ``history.history["loss"][i]`` is the value after epoch ``history.epochs[i]``;
    validation metrics are prefixed ``val_`` and are NaN on epochs without
    validation (``validation_freq``).
    """

    def __init__(self) -> None:
        self.epochs: list[int] = []
        self.history: dict[str, list[float]] = {}

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record the logs of one epoch (1-based epoch number)."""
        self.epochs.append(epoch)
        n = len(self.epochs)
        for key, value in logs.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue  # e.g. IndexTopK's "{name}/index" label: not a per-epoch number
            self.history.setdefault(key, [math.nan] * (n - 1)).append(float(value))
        for key, values in self.history.items():
            if len(values) < n:
                values.append(math.nan)

    def __len__(self) -> int:
        return len(self.epochs)

    def last(self) -> dict[str, float]:
        """Logs of the last epoch."""
        return {k: v[-1] for k, v in self.history.items()} if self.epochs else {}

    def to_dict(self) -> dict[str, Any]:
        # JSON has no NaN: missing values become null.
        return {"epochs": list(self.epochs),
                "history": {k: [None if math.isnan(x) else x for x in v] for k, v in self.history.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        out = cls()
        out.epochs = [int(e) for e in data["epochs"]]
        out.history = {k: [math.nan if x is None else float(x) for x in v] for k, v in data["history"].items()}
        return out

    def save_json(self, path: str | os.PathLike) -> None:
        atomic_write_json(path, self.to_dict())

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        keys = list(self.history)
        writer.writerow(["epoch", *keys])
        for i, epoch in enumerate(self.epochs):
            writer.writerow([epoch, *("" if math.isnan(self.history[k][i]) else repr(self.history[k][i]) for k in keys)])
        return buffer.getvalue()

    def save_csv(self, path: str | os.PathLike) -> None:
        atomic_write_text(path, self.to_csv())
