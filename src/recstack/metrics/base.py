"""Streaming metrics: accumulate over batches, report at the end.

A metric is not an ``nn.Module``: it owns no parameters, so it never shows up
in a model's ``state_dict`` and can reference towers without duplicating them.
"""

from __future__ import annotations

import abc

import torch


class Metric(abc.ABC):
    """Base class: ``reset_state`` -> ``update_state`` per batch -> ``result``.

    ``result()`` returns a dict of name -> float so one metric may report
    several values (e.g. FactorizedTopK's one value per k).

    Distributed training: ``sync()`` merges the states of all ranks (sums of the
    attributes named in ``summed_state``, concatenation of the tensor lists named (with
    their dtype) in ``gathered_state``), after which every rank's ``result()`` is the single-process one.
    """

    summed_state: tuple[str, ...] = ()
    gathered_state: tuple[tuple[str, torch.dtype], ...] = ()

    def __init__(self, name: str):
        self.name = name

    def sync(self) -> None:
        """Merge this metric's state over all ranks (no-op in a single process)."""
        from ..core import distributed

        if distributed.world_size() == 1:
            return
        if self.summed_state:
            totals = distributed.all_reduce_sum([float(getattr(self, a)) for a in self.summed_state])
            for attr, total in zip(self.summed_state, totals):
                setattr(self, attr, total)
        for attr, dtype in self.gathered_state:
            parts = getattr(self, attr)
            local = torch.cat(parts).to(dtype) if parts else torch.empty(0, dtype=dtype)
            merged = distributed.gather_tensor(local)
            setattr(self, attr, [merged] if merged.numel() else [])

    @abc.abstractmethod
    def reset_state(self) -> None:
        """Forget everything accumulated so far."""

    @abc.abstractmethod
    def update_state(self, *args, **kwargs) -> None:
        """Accumulate one batch."""

    @abc.abstractmethod
    def result(self) -> dict[str, float]:
        """Values over everything accumulated since the last reset; {} if nothing was."""


class Mean(Metric):
    """Weighted mean of values: sum(w * x) / sum(w)."""

    summed_state = ("_total", "_weight")

    def __init__(self, name: str = "mean"):
        super().__init__(name)
        self.reset_state()

    def reset_state(self) -> None:
        self._total = 0.0
        self._weight = 0.0

    @torch.no_grad()
    def update_state(self, values: torch.Tensor, sample_weight: torch.Tensor | None = None) -> None:
        values = values.detach().reshape(-1).double()
        if sample_weight is None:
            self._total += float(values.sum())
            self._weight += values.numel()
        else:
            weight = sample_weight.detach().reshape(-1).double()
            self._total += float((values * weight).sum())
            self._weight += float(weight.sum())

    def result(self) -> dict[str, float]:
        return {self.name: self._total / self._weight} if self._weight else {}


class RootMeanSquaredError(Metric):
    """sqrt(sum(w * (y - y_hat)^2) / sum(w)), named like Keras's RootMeanSquaredError."""

    summed_state = ("_sse", "_weight")

    def __init__(self, name: str = "root_mean_squared_error"):
        super().__init__(name)
        self.reset_state()

    def reset_state(self) -> None:
        self._sse = 0.0
        self._weight = 0.0

    @torch.no_grad()
    def update_state(
        self,
        y_true: torch.Tensor,
        y_pred: torch.Tensor,
        sample_weight: torch.Tensor | None = None,
    ) -> None:
        err = (y_true.detach().reshape(-1).double() - y_pred.detach().reshape(-1).double()) ** 2
        if sample_weight is None:
            self._sse += float(err.sum())
            self._weight += err.numel()
        else:
            weight = sample_weight.detach().reshape(-1).double()
            self._sse += float((err * weight).sum())
            self._weight += float(weight.sum())

    def result(self) -> dict[str, float]:
        return {self.name: (self._sse / self._weight) ** 0.5} if self._weight else {}
